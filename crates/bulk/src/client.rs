//! Kick-off, status, files and cancel against one FHIR server.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, ACCEPT, CONTENT_LOCATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use url::Url;

use crate::error::{status_error, transport};
use crate::{BulkError, Manifest, NdjsonReader, OutputFile, FHIR_NDJSON};

/// Limits on what a server may send.
#[derive(Debug, Clone, Copy)]
pub struct BulkLimits {
    /// Largest kick-off or status answer (a manifest, a Parameters result), in bytes.
    pub max_answer: usize,
    /// Longest NDJSON line, in bytes (one resource).
    pub max_line: usize,
    /// Deadline for each call (a file's download included).
    pub timeout: Duration,
}

impl Default for BulkLimits {
    fn default() -> Self {
        Self {
            max_answer: 8 * 1024 * 1024,
            max_line: 4 * 1024 * 1024,
            timeout: Duration::from_secs(600),
        }
    }
}

/// A status URL the server gave (`Content-Location`), on its own origin: it receives the
/// token at every poll.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct StatusUrl(Url);

impl StatusUrl {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// What a kick-off answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Started {
    /// `202 Accepted`: poll here.
    Accepted(StatusUrl),
    /// `200`: the server answered at once (some do for small operations), with this body.
    Completed(Value),
}

/// One poll's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Still running (`202`, or `429` asking to slow down).
    InProgress { progress: Option<String>, retry_after: Option<Duration> },
    /// Done: the manifest (or the operation's result) as the server sent it.
    Complete(Value),
}

/// When to poll again: the server's `Retry-After` (kept within a minute and an hour), else a
/// backoff from 2 s doubling to 2 minutes.
pub fn next_poll(retry_after: Option<Duration>, attempt: u32) -> Duration {
    match retry_after {
        Some(wait) => wait.clamp(Duration::from_secs(1), Duration::from_secs(3600)),
        None => Duration::from_secs(2u64.saturating_mul(1 << attempt.min(6)).min(120)),
    }
}

/// A Bulk Data client for one FHIR server.
#[derive(Debug, Clone)]
pub struct BulkClient {
    http: reqwest::Client,
    base: Url,
    limits: BulkLimits,
}

impl BulkClient {
    /// `base` is the server's FHIR base URL; `http` must not follow redirects (a token must
    /// not be carried elsewhere).
    pub fn new(http: reqwest::Client, base: Url, limits: BulkLimits) -> Self {
        let mut base = base;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Self { http, base, limits }
    }

    fn request(&self, method: Method, url: Url, token: Option<&str>) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url).timeout(self.limits.timeout);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.base.origin()
    }

    /// `POST [base]/{operation}` with `parameters`, asking for an asynchronous answer.
    pub async fn kick_off(
        &self,
        token: Option<&str>,
        operation: &str,
        parameters: &Value,
    ) -> Result<Started, BulkError> {
        let url = self
            .base
            .join(operation.trim_start_matches('/'))
            .map_err(|e| BulkError::Decode(e.to_string()))?;
        let body = serde_json::to_vec(parameters).map_err(|e| BulkError::Decode(e.to_string()))?;
        let request = self
            .request(Method::POST, url.clone(), token)
            .header(ACCEPT, fhir::FHIR_JSON)
            .header(CONTENT_TYPE, fhir::FHIR_JSON)
            .header("Prefer", "respond-async")
            .body(body);
        let (status, headers, body) = self.exchange(request).await?;
        match status {
            StatusCode::ACCEPTED => {
                let location = headers
                    .get(CONTENT_LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or(BulkError::NoStatusUrl)?;
                let status_url = url.join(location.trim()).map_err(|_| BulkError::NoStatusUrl)?;
                if !self.same_origin(&status_url) {
                    return Err(BulkError::ForeignUrl { what: "its status URL" });
                }
                Ok(Started::Accepted(StatusUrl(status_url)))
            }
            s if s.is_success() => Ok(Started::Completed(json(&body)?)),
            s => Err(status_error(s.as_u16(), &body)),
        }
    }

    /// Polls once.
    pub async fn status(
        &self,
        token: Option<&str>,
        status: &StatusUrl,
    ) -> Result<Status, BulkError> {
        let request =
            self.request(Method::GET, status.0.clone(), token).header(ACCEPT, "application/json");
        let (code, headers, body) = self.exchange(request).await?;
        match code {
            StatusCode::ACCEPTED | StatusCode::TOO_MANY_REQUESTS => Ok(Status::InProgress {
                progress: headers
                    .get("x-progress")
                    .and_then(|v| v.to_str().ok())
                    .map(|p| p.chars().take(100).filter(|c| !c.is_control()).collect()),
                retry_after: retry_after(&headers, SystemTime::now()),
            }),
            c if c.is_success() => Ok(Status::Complete(json(&body)?)),
            c => Err(status_error(c.as_u16(), &body)),
        }
    }

    /// Reads the later pages of a paged manifest (`link` `next`, Bulk Data 3) into
    /// `manifest`, up to `max_pages` pages in all; past them `manifest.next` stays set, so the
    /// caller can say part was left unread. A page not ready yet (`202`) is a passing failure:
    /// the whole manifest is asked for again later.
    pub async fn follow_pages(
        &self,
        token: Option<&str>,
        manifest: &mut Manifest,
        max_pages: usize,
    ) -> Result<(), BulkError> {
        for _ in 1..max_pages {
            let Some(next) = manifest.next.take() else { return Ok(()) };
            if !self.same_origin(&next) {
                return Err(BulkError::ForeignUrl { what: "its manifest's next page" });
            }
            let page = match self.status(token, &StatusUrl(next.clone())).await? {
                Status::Complete(body) => Manifest::parse(&body, &next)?,
                Status::InProgress { .. } => {
                    return Err(BulkError::Failed { status: 202, outcome: None, transient: true })
                }
            };
            manifest.append(page);
        }
        Ok(())
    }

    /// Cancels a running request, or tells the server a finished one's files may go. A
    /// request the server no longer knows (`404`) is already gone.
    pub async fn cancel(&self, token: Option<&str>, status: &StatusUrl) -> Result<(), BulkError> {
        let request = self.request(Method::DELETE, status.0.clone(), token);
        let (code, _, body) = self.exchange(request).await?;
        if code.is_success() || code == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(status_error(code.as_u16(), &body))
        }
    }

    /// Opens an output file of `manifest` for reading line by line. The token goes only with
    /// a manifest that requires it, and only to this server's origin; other files must be
    /// `https`.
    pub async fn open(
        &self,
        token: Option<&str>,
        manifest: &Manifest,
        file: &OutputFile,
    ) -> Result<NdjsonReader, BulkError> {
        let token = if manifest.requires_access_token {
            if !self.same_origin(&file.url) {
                return Err(BulkError::ForeignUrl { what: "a file that needs its access token" });
            }
            token
        } else {
            if !self.same_origin(&file.url) && file.url.scheme() != "https" {
                return Err(BulkError::ForeignUrl { what: "a file over plain http" });
            }
            None
        };
        let request =
            self.request(Method::GET, file.url.clone(), token).header(ACCEPT, FHIR_NDJSON);
        let response = request.send().await.map_err(transport)?;
        if !response.status().is_success() {
            let code = response.status().as_u16();
            let body = fhir::http::read_capped(response, 64 * 1024).await.unwrap_or_default();
            return Err(status_error(code, &body));
        }
        Ok(NdjsonReader::from_response(response, self.limits.max_line))
    }

    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), BulkError> {
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = fhir::http::read_capped(response, self.limits.max_answer).await?;
        Ok((status, headers, body))
    }
}

fn json(body: &[u8]) -> Result<Value, BulkError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| BulkError::Decode(format!("not JSON: {e}")))
}

/// `Retry-After` as seconds or as an HTTP date (how long from `now`).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(retry: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, retry.parse().unwrap());
        h
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = httpdate::parse_http_date("Fri, 04 Dec 2026 10:00:00 GMT").unwrap();
        assert_eq!(retry_after(&headers("120"), now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after(&headers("Fri, 04 Dec 2026 10:00:30 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(&headers("Fri, 04 Dec 2026 09:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers("soon"), now), None);
    }

    #[test]
    fn polls_back_off_and_honour_the_server_within_bounds() {
        assert_eq!(next_poll(None, 0), Duration::from_secs(2));
        assert_eq!(next_poll(None, 3), Duration::from_secs(16));
        assert_eq!(next_poll(None, 30), Duration::from_secs(120));
        assert_eq!(next_poll(Some(Duration::ZERO), 0), Duration::from_secs(1));
        assert_eq!(next_poll(Some(Duration::from_secs(86_400)), 0), Duration::from_secs(3600));
    }
}
