//! Command line and environment. Parsed once at start; `--help` documents every option.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use url::Url;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "server",
    version,
    about = "Member History: payer data in the chart (SMART on FHIR app server)"
)]
pub struct Cli {
    /// TOML configuration file (see config/member-history.sample.toml). The demo's is
    /// written by the sandbox (`sandbox --app server`, which `scripts/demo` runs).
    #[arg(long, env = "MH_CONFIG")]
    pub config: PathBuf,

    /// Without one, serves the app.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on.
    #[arg(long, env = "MH_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Overrides `public_url` of the file.
    #[arg(long, env = "MH_PUBLIC_URL")]
    pub public_url: Option<Url>,

    /// Overrides `data_dir` of the file (where the generated signing key is kept).
    #[arg(long, env = "MH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Overrides `signing_key` of the file: a PKCS#8 PEM private key.
    #[arg(long, env = "MH_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,

    /// The Trunk-built browser app (index.html, WASM, CSS).
    #[arg(long, env = "MH_DIST_DIR", default_value = "dist")]
    pub dist_dir: PathBuf,

    /// The application log's format: `text` (colours only on a terminal) or `json` (one
    /// object per line, for log shippers).
    #[arg(long, env = "MH_LOG_FORMAT", value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Writes the audit log (reads of plan data, writes into EHRs, refused member matches)
    /// to standard output as FHIR R4 AuditEvent resources, oldest first.
    Audit {
        /// From this time on: RFC 3339 (`2026-12-01T08:00:00Z`) or a UTC date (`2026-12-01`).
        #[arg(long, value_parser = parse_since)]
        since: time::OffsetDateTime,
        /// `ndjson`: one AuditEvent per line (Bulk Data style); `bundle`: one FHIR
        /// `collection` Bundle.
        #[arg(long, value_enum, default_value_t = AuditFormat::Ndjson)]
        format: AuditFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditFormat {
    Ndjson,
    Bundle,
}

fn parse_since(text: &str) -> Result<time::OffsetDateTime, String> {
    use time::format_description::well_known::Rfc3339;
    let text = text.trim();
    if let Ok(at) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(at);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format).map(|d| d.midnight().assume_utc()).map_err(|_| {
        format!(
            "{text:?} is neither an RFC 3339 time (2026-12-01T08:00:00Z) nor a date (2026-12-01)"
        )
    })
}

impl Cli {
    /// Defaults for a test: the given configuration file, any free port, a given data and
    /// dist directory.
    pub fn for_tests(config: PathBuf, data_dir: PathBuf, dist_dir: PathBuf) -> Self {
        Cli {
            config,
            command: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: None,
            data_dir: Some(data_dir),
            signing_key: None,
            dist_dir,
            log_format: crate::logging::LogFormat::Text,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_log_format_is_text_unless_json_is_asked_for() {
        let cli = Cli::try_parse_from(["server", "--config", "c.toml"]).unwrap();
        assert_eq!(cli.log_format, crate::logging::LogFormat::Text);
        let cli =
            Cli::try_parse_from(["server", "--config", "c.toml", "--log-format", "json"]).unwrap();
        assert_eq!(cli.log_format, crate::logging::LogFormat::Json);
        assert!(
            Cli::try_parse_from(["server", "--config", "c.toml", "--log-format", "xml"]).is_err()
        );
        // The app never starts without a configuration (the sandbox writes the demo's).
        assert!(Cli::try_parse_from(["server"]).is_err());
    }

    #[test]
    fn the_audit_export_takes_a_time_or_a_date() {
        let cli =
            Cli::try_parse_from(["server", "--config", "c.toml", "audit", "--since", "2026-12-01"])
                .unwrap();
        let Some(Command::Audit { since, format }) = cli.command else { panic!("not audit") };
        assert_eq!(since.unix_timestamp(), 1_796_083_200);
        assert_eq!(format, AuditFormat::Ndjson);
        let at = ["server", "--config", "c", "audit", "--since", "2026-12-01T08:00:00+01:00"];
        assert!(Cli::try_parse_from(at).is_ok());
        let bad = ["server", "--config", "c", "audit", "--since", "yesterday"];
        assert!(Cli::try_parse_from(bad).is_err());
    }
}
