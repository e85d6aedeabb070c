//! The completion manifest, read as real servers write it.

use serde_json::Value;
use url::Url;

use crate::BulkError;

/// One output (or error) file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    /// The resource type in the file (`OperationOutcome` for error files).
    pub resource_type: String,
    pub url: Url,
    pub count: Option<u64>,
}

/// What a finished export made.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub transaction_time: Option<String>,
    pub request: Option<String>,
    /// Whether the files need the bearer token (then they must be on the server's origin).
    pub requires_access_token: bool,
    pub output: Vec<OutputFile>,
    /// OperationOutcome files: what went wrong for part of the request.
    pub error: Vec<OutputFile>,
    /// Deleted resources (`_since` exports): Bundles of `DELETE` requests.
    pub deleted: Vec<OutputFile>,
    /// The manifest's extensions (PDex puts the match results' Groups here on some servers).
    pub extension: Option<Value>,
    /// The next page of a paged manifest (Bulk Data 2.0 `link` with `relation` `next`).
    pub next: Option<Url>,
    /// Entries that could not be read (a missing or unparsable `url`).
    pub skipped: usize,
}

impl Manifest {
    /// Reads a manifest; `base` resolves relative URLs (`request` URL of the status call).
    /// Tolerates: `error` or `outcome` for the error files, `requiresAccessToken` as a boolean
    /// or a string, missing arrays, `count` as a number or a string.
    pub fn parse(body: &Value, base: &Url) -> Result<Self, BulkError> {
        let Some(object) = body.as_object() else {
            return Err(BulkError::Decode("the manifest is not a JSON object".into()));
        };
        if object.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome") {
            return Err(BulkError::Failed {
                status: 200,
                outcome: fhir::client::outcome_text(body.to_string().as_bytes()),
                transient: false,
            });
        }
        let mut skipped = 0;
        let mut files = |key: &str| -> Vec<OutputFile> {
            let entries = object.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
            entries
                .iter()
                .filter_map(|entry| {
                    let file = file(entry, base);
                    if file.is_none() {
                        skipped += 1;
                    }
                    file
                })
                .collect()
        };
        let output = files("output");
        let mut error = files("error");
        error.extend(files("outcome"));
        let deleted = files("deleted");
        let requires_access_token = match object.get("requiresAccessToken") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
            // Absent: send the token (to our server's origin only), the safer reading.
            _ => true,
        };
        let next = object
            .get("link")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))
            .and_then(|l| l.get("url").and_then(Value::as_str))
            .and_then(|u| base.join(u).ok());
        Ok(Manifest {
            transaction_time: string(object.get("transactionTime")),
            request: string(object.get("request")),
            requires_access_token,
            output,
            error,
            deleted,
            extension: object.get("extension").cloned(),
            next,
            skipped,
        })
    }

    /// Adds the files of the manifest's next page; its own `next` becomes this one's.
    pub fn append(&mut self, page: Manifest) {
        self.output.extend(page.output);
        self.error.extend(page.error);
        self.deleted.extend(page.deleted);
        self.skipped += page.skipped;
        self.next = page.next;
    }

    /// Resources the output files say they hold (when every file gives a count).
    pub fn total(&self) -> Option<u64> {
        self.output.iter().map(|f| f.count).sum()
    }
}

fn string(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_owned)
}

fn file(entry: &Value, base: &Url) -> Option<OutputFile> {
    let url = base.join(entry.get("url")?.as_str()?).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let count = match entry.get("count") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    Some(OutputFile {
        resource_type: entry.get("type").and_then(Value::as_str).unwrap_or_default().to_owned(),
        url,
        count,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn base() -> Url {
        Url::parse("https://plan.example/fhir/bulkstatus/1").unwrap()
    }

    #[test]
    fn reads_the_spec_manifest() {
        let manifest = Manifest::parse(
            &json!({
                "transactionTime": "2026-12-04T10:00:00Z",
                "request": "https://plan.example/fhir/Group/g1/$davinci-data-export",
                "requiresAccessToken": true,
                "output": [
                    {"type": "Patient", "url": "https://plan.example/files/p.ndjson", "count": 1},
                    {"type": "Encounter", "url": "https://plan.example/files/e1.ndjson", "count": 2000},
                    {"type": "Encounter", "url": "https://plan.example/files/e2.ndjson", "count": 7}
                ],
                "error": [{"type": "OperationOutcome", "url": "https://plan.example/files/err.ndjson"}]
            }),
            &base(),
        )
        .unwrap();
        assert!(manifest.requires_access_token);
        assert_eq!(manifest.output.len(), 3);
        assert_eq!(manifest.error.len(), 1);
        assert_eq!(manifest.total(), Some(2008));
        assert_eq!(manifest.skipped, 0);
    }

    #[test]
    fn reads_the_variants_servers_send() {
        let manifest = Manifest::parse(
            &json!({
                "requiresAccessToken": "false",
                "output": [
                    {"type": "Condition", "url": "../files/c.ndjson", "count": "12"},
                    {"type": "Condition"},
                    {"type": "Condition", "url": "file:///etc/passwd"}
                ],
                "outcome": [{"type": "OperationOutcome", "url": "/files/o.ndjson"}],
                "link": [{"relation": "next", "url": "https://plan.example/fhir/bulkstatus/1?page=2"}]
            }),
            &base(),
        )
        .unwrap();
        assert!(!manifest.requires_access_token);
        assert_eq!(manifest.output[0].url.as_str(), "https://plan.example/fhir/files/c.ndjson");
        assert_eq!(manifest.output[0].count, Some(12));
        assert_eq!(manifest.skipped, 2, "no url, and a non-HTTP url");
        assert_eq!(manifest.error[0].url.as_str(), "https://plan.example/files/o.ndjson");
        assert!(manifest.next.is_some());
        assert_eq!(manifest.total(), Some(12));
    }

    #[test]
    fn an_empty_manifest_is_an_empty_export_and_a_missing_flag_means_token() {
        let manifest = Manifest::parse(&json!({"transactionTime": "x"}), &base()).unwrap();
        assert!(manifest.output.is_empty());
        assert!(manifest.requires_access_token);
    }

    #[test]
    fn an_operation_outcome_or_a_non_object_is_an_error() {
        let outcome = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception", "diagnostics": "export failed"}]});
        let e = Manifest::parse(&outcome, &base()).unwrap_err();
        assert_eq!(e.outcome_text(), Some("export failed"));
        assert!(Manifest::parse(&json!([1, 2]), &base()).is_err());
    }
}
