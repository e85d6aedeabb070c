//! Why a Bulk Data call failed. The `Display` text never carries tokens or response bodies
//! (it reaches logs); an OperationOutcome's text is kept apart for the user who asked.

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("the server refused the access token (401)")]
    Unauthorized { outcome: Option<String> },
    #[error("the server answered {status}")]
    Failed {
        status: u16,
        /// The OperationOutcome's text, for the clinician (never logged).
        outcome: Option<String>,
        /// Asking again later may work (5xx, or an OperationOutcome saying `transient`).
        transient: bool,
    },
    #[error("the server accepted the request but gave no status URL (Content-Location)")]
    NoStatusUrl,
    #[error("the server pointed {what} outside its own address")]
    ForeignUrl { what: &'static str },
    #[error("the server could not be reached: {0}")]
    Transport(String),
    #[error("the server did not answer in time")]
    Timeout,
    #[error("the server's answer was too large (over {limit} bytes)")]
    TooLarge { limit: usize },
    #[error("the server's answer was not what Bulk Data describes: {0}")]
    Decode(String),
    #[error("line {line} of an output file is longer than {limit} bytes")]
    LineTooLong { line: u64, limit: usize },
    #[error("line {line} of an output file is not a FHIR resource")]
    BadLine { line: u64 },
}

impl BulkError {
    /// True when the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            BulkError::Failed { transient, .. } => *transient,
            BulkError::Transport(_) | BulkError::Timeout => true,
            _ => false,
        }
    }

    /// The server's own words about the failure, for the user who made the request.
    pub fn outcome_text(&self) -> Option<&str> {
        match self {
            BulkError::Unauthorized { outcome } | BulkError::Failed { outcome, .. } => {
                outcome.as_deref()
            }
            _ => None,
        }
    }
}

impl From<fhir::http::BodyError> for BulkError {
    fn from(e: fhir::http::BodyError) -> Self {
        match e {
            fhir::http::BodyError::TooLarge { limit } => BulkError::TooLarge { limit },
            fhir::http::BodyError::Timeout => BulkError::Timeout,
            fhir::http::BodyError::Transport(m) => BulkError::Transport(m),
        }
    }
}

pub(crate) fn transport(e: reqwest::Error) -> BulkError {
    if e.is_timeout() {
        BulkError::Timeout
    } else {
        BulkError::Transport(e.without_url().to_string())
    }
}

/// The error for a non-success answer with `body`.
pub(crate) fn status_error(status: u16, body: &[u8]) -> BulkError {
    let outcome = fhir::client::outcome_text(body);
    if status == 401 {
        return BulkError::Unauthorized { outcome };
    }
    let issues = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .filter(|v| v.get("resourceType").and_then(|t| t.as_str()) == Some("OperationOutcome"))
        .and_then(|v| v.get("issue").and_then(|i| i.as_array()).cloned());
    // Bulk Data: a failed request answers 5xx with an OperationOutcome, whose `transient`
    // code alone says a retry may work; a bare 5xx (a proxy, a restart) is worth a retry.
    let says_transient = issues.iter().flatten().any(|issue| {
        matches!(issue.get("code").and_then(|c| c.as_str()), Some("transient" | "throttled"))
    });
    let bare_server_error = status >= 500 && issues.is_none();
    BulkError::Failed {
        status,
        outcome,
        transient: status == 429 || says_transient || bare_server_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_outcome_decides_whether_a_server_error_is_worth_a_retry() {
        let outcome = |code: &str| {
            format!(
                r#"{{"resourceType":"OperationOutcome","issue":[{{"severity":"error","code":"{code}","diagnostics":"x"}}]}}"#
            )
        };
        assert!(!status_error(500, outcome("exception").as_bytes()).is_transient());
        assert!(status_error(503, outcome("transient").as_bytes()).is_transient());
        assert!(status_error(502, b"<html>bad gateway</html>").is_transient());
        assert!(status_error(429, b"").is_transient());
        assert!(!status_error(400, b"").is_transient());
    }
}
