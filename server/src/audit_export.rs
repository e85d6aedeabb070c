//! `server audit`: the audit log as FHIR R4 AuditEvent resources, for a SIEM or a privacy
//! officer. Read from the store directly; nothing of it goes to the application log.

use std::io::Write;

use crate::cli::{AuditFormat, Cli};
use crate::startup::{configuration, open_store, StartError};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("writing the export: {0}")]
    Write(#[from] std::io::Error),
}

/// Writes every entry recorded at or after `since` to `out`; how many.
pub async fn export(
    cli: &Cli,
    since: time::OffsetDateTime,
    format: AuditFormat,
    mut out: impl Write,
) -> Result<usize, ExportError> {
    let config = configuration(cli)?;
    let store = open_store(&config).await?;
    let since_ms = i64::try_from(since.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let entries = store.audit_since(since_ms).await?;
    // Stable ids: the time and the order within the millisecond.
    let events = entries.iter().enumerate().map(|(n, e)| e.to_fhir(&format!("mh-{}-{n}", e.at_ms)));
    match format {
        AuditFormat::Ndjson => {
            for event in events {
                serde_json::to_writer(&mut out, &event).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
            }
        }
        AuditFormat::Bundle => {
            let entry: Vec<_> =
                events.map(|resource| serde_json::json!({ "resource": resource })).collect();
            let bundle = serde_json::json!({
                "resourceType": "Bundle",
                "type": "collection",
                "timestamp": time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                "entry": entry,
            });
            serde_json::to_writer_pretty(&mut out, &bundle).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(entries.len())
}
