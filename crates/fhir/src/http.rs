//! Outbound HTTP rules shared by every client in Member History: timeouts, no redirects,
//! and a cap on how much of a response body is read.

use std::time::Duration;

use futures::StreamExt;

/// Limits for an outbound HTTP client.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub connect_timeout: Duration,
    pub total_timeout: Duration,
    /// Largest response body read, in bytes.
    pub max_body: usize,
    /// Idle keep-alive connections kept per server.
    pub max_idle_connections_per_host: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(30),
            max_body: 64 * 1024 * 1024,
            max_idle_connections_per_host: 32,
        }
    }
}

/// A reqwest client that never follows redirects (OAuth and FHIR calls must go only where
/// configured) and applies the limits' timeouts. Fails (at start) only when the TLS backend
/// cannot initialise; there is no fallback client without these rules.
pub fn client(limits: &HttpLimits) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(limits.connect_timeout)
        .timeout(limits.total_timeout)
        // Idle connections kept per server are bounded (and dropped after 30 s): a burst of
        // clinicians must not leave hundreds of descriptors open towards one EHR.
        .pool_max_idle_per_host(limits.max_idle_connections_per_host)
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("member-history/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the response was larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the connection failed while reading the response: {0}")]
    Transport(String),
    #[error("no complete response arrived in time")]
    Timeout,
}

/// Reads at most `limit` bytes of `response`; a longer body is an error, not a truncation.
pub async fn read_capped(response: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if e.is_timeout() {
                BodyError::Timeout
            } else {
                BodyError::Transport(e.without_url().to_string())
            }
        })?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// True for `application/json`, `application/fhir+json`, `text/json` and other `+json`
/// types, ignoring parameters such as `charset`.
pub fn is_json_content_type(value: Option<&str>) -> bool {
    let Some(value) = value else { return false };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    matches!(essence.as_str(), "application/json" | "text/json") || essence.ends_with("+json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_json_media_types() {
        assert!(is_json_content_type(Some("application/json; charset=utf-8")));
        assert!(is_json_content_type(Some("application/fhir+json")));
        assert!(is_json_content_type(Some("text/json")));
        assert!(!is_json_content_type(Some("text/html")));
        assert!(!is_json_content_type(None));
    }
}
