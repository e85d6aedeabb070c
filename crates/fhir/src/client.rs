//! A FHIR R4 REST client: read, search (following `Bundle.link[next]`), capabilities,
//! create and transaction, with a bearer token per call.
//!
//! Errors never carry the token or response bodies in their `Display` text (they end up in
//! logs); an OperationOutcome's human text is kept apart in [`FhirError::outcome_text`] for the
//! clinician who made the call.

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use url::Url;

use crate::bundle::Bundle;
use crate::http::{self, BodyError, HttpLimits};
use crate::FHIR_JSON;

#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    #[error("the FHIR server refused the access token (401)")]
    Unauthorized { outcome: Option<String> },
    #[error("the FHIR server did not allow this request (403)")]
    Forbidden { outcome: Option<String> },
    #[error("the FHIR server has no such resource (404)")]
    NotFound { outcome: Option<String> },
    #[error("the FHIR server answered {status}")]
    Status { status: u16, outcome: Option<String> },
    #[error("the FHIR server could not be reached: {0}")]
    Transport(String),
    #[error("the FHIR server did not answer in time")]
    Timeout,
    #[error("the FHIR server's answer was too large (over {limit} bytes)")]
    TooLarge { limit: usize },
    #[error("the FHIR server's answer was not valid FHIR JSON: {0}")]
    Decode(String),
    #[error("the FHIR server sent a paging link outside its base URL")]
    ForeignLink,
}

impl FhirError {
    /// The OperationOutcome text the server sent with an error, for showing to the user who
    /// made the request (never logged: it may describe patient data).
    pub fn outcome_text(&self) -> Option<&str> {
        match self {
            FhirError::Unauthorized { outcome }
            | FhirError::Forbidden { outcome }
            | FhirError::NotFound { outcome }
            | FhirError::Status { outcome, .. } => outcome.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            FhirError::Unauthorized { .. } => Some(401),
            FhirError::Forbidden { .. } => Some(403),
            FhirError::NotFound { .. } => Some(404),
            FhirError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when retrying the same request later may succeed (5xx, timeouts, dropped connections).
    pub fn is_transient(&self) -> bool {
        match self {
            FhirError::Status { status, .. } => *status >= 500 || *status == 429,
            FhirError::Transport(_) | FhirError::Timeout => true,
            _ => false,
        }
    }
}

impl From<BodyError> for FhirError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge { limit } => FhirError::TooLarge { limit },
            BodyError::Timeout => FhirError::Timeout,
            BodyError::Transport(m) => FhirError::Transport(m),
        }
    }
}

fn transport(e: reqwest::Error) -> FhirError {
    if e.is_timeout() {
        FhirError::Timeout
    } else {
        FhirError::Transport(e.without_url().to_string())
    }
}

/// The result of a create: whether the server made a new resource, and its reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    /// 201 for created, 200 when a conditional create matched an existing resource.
    pub status: u16,
    /// `Location` header, when sent.
    pub location: Option<String>,
    pub resource: Option<Value>,
}

/// A FHIR server at one base URL.
#[derive(Debug, Clone)]
pub struct FhirClient {
    http: reqwest::Client,
    base: Url,
    max_body: usize,
    timeout: Option<std::time::Duration>,
    /// Shared by every client of one server: bounds the requests in flight to it.
    gate: Option<std::sync::Arc<tokio::sync::Semaphore>>,
}

impl FhirClient {
    pub fn new(http: reqwest::Client, base: Url, limits: &HttpLimits) -> Self {
        let base = with_trailing_slash(base);
        Self { http, base, max_body: limits.max_body, timeout: None, gate: None }
    }

    /// Bounds the requests in flight through every client that shares `gate` (one per
    /// server, over all clinicians); a request waits for a permit, its time limit included.
    pub fn with_gate(mut self, gate: std::sync::Arc<tokio::sync::Semaphore>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// A deadline for each whole request (answer included), overriding the HTTP client's.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `base/path` (path relative to the base, e.g. `Patient/1`).
    pub fn url(&self, path: &str) -> Result<Url, FhirError> {
        self.base.join(path.trim_start_matches('/')).map_err(|e| FhirError::Decode(e.to_string()))
    }

    /// Reads `resource_type/id`.
    pub async fn read(
        &self,
        token: Option<&str>,
        resource_type: &str,
        id: &str,
    ) -> Result<Value, FhirError> {
        let url = self.url(&format!("{resource_type}/{id}"))?;
        self.get_json(token, url).await
    }

    /// Reads a reference relative to the base (`Practitioner/1`).
    pub async fn read_reference(
        &self,
        token: Option<&str>,
        reference: &str,
    ) -> Result<Value, FhirError> {
        let url = self.url(reference)?;
        self.get_json(token, url).await
    }

    /// One page of `resource_type?params`.
    pub async fn search(
        &self,
        token: Option<&str>,
        resource_type: &str,
        params: &[(&str, &str)],
    ) -> Result<Bundle, FhirError> {
        let mut url = self.url(resource_type)?;
        url.query_pairs_mut().extend_pairs(params);
        self.get_bundle(token, &url).await
    }

    /// Every page of `resource_type?params`, following `next` links, up to `max_pages`.
    pub async fn search_all(
        &self,
        token: Option<&str>,
        resource_type: &str,
        params: &[(&str, &str)],
        max_pages: usize,
    ) -> Result<Vec<Value>, FhirError> {
        let mut page = self.search(token, resource_type, params).await?;
        let mut out = Vec::new();
        for _ in 1..max_pages.max(1) {
            let next = page.link("next").map(str::to_owned);
            out.extend(page.into_resources());
            let Some(next) = next else { return Ok(out) };
            page = self.get_bundle(token, &self.checked_link(&next)?).await?;
        }
        out.extend(page.into_resources());
        Ok(out)
    }

    /// A paging link, accepted only when it stays under this server's base URL: a server must
    /// not be able to send our bearer token elsewhere.
    pub fn checked_link(&self, link: &str) -> Result<Url, FhirError> {
        let url = self.base.join(link).map_err(|_| FhirError::ForeignLink)?;
        let same_origin = url.origin() == self.base.origin();
        if same_origin && url.path().starts_with(self.base.path()) {
            Ok(url)
        } else {
            Err(FhirError::ForeignLink)
        }
    }

    /// GETs a Bundle at `url` (which must be under the base).
    pub async fn get_bundle(&self, token: Option<&str>, url: &Url) -> Result<Bundle, FhirError> {
        let value = self.get_json(token, self.checked_link(url.as_str())?).await?;
        serde_json::from_value(value).map_err(|e| FhirError::Decode(e.to_string()))
    }

    /// The server's CapabilityStatement (`metadata`).
    pub async fn capabilities(&self, token: Option<&str>) -> Result<Value, FhirError> {
        self.get_json(token, self.url("metadata")?).await
    }

    /// POSTs `resource` to its type endpoint, with `If-None-Exist` when given.
    pub async fn create(
        &self,
        token: Option<&str>,
        resource: &Value,
        if_none_exist: Option<&str>,
    ) -> Result<Created, FhirError> {
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .ok_or_else(|| FhirError::Decode("resource has no resourceType".into()))?;
        let mut request =
            self.request(Method::POST, self.url(resource_type)?, token).json(resource);
        if let Some(query) = if_none_exist {
            request = request.header("If-None-Exist", query);
        }
        let (status, location, body) = self.exchange(request).await?;
        if !status.is_success() {
            return Err(status_error(status, &body));
        }
        let resource = serde_json::from_slice(&body).ok();
        Ok(Created { status: status.as_u16(), location, resource })
    }

    /// POSTs a transaction (or batch) Bundle to the base and returns the response Bundle.
    pub async fn transaction(
        &self,
        token: Option<&str>,
        bundle: &Bundle,
    ) -> Result<Bundle, FhirError> {
        // `POST [base]`, without the trailing slash the joins need.
        let url = Url::parse(self.base()).map_err(|e| FhirError::Decode(e.to_string()))?;
        let request = self
            .request(Method::POST, url, token)
            .header(CONTENT_TYPE, FHIR_JSON)
            .body(serde_json::to_vec(bundle).map_err(|e| FhirError::Decode(e.to_string()))?);
        let (status, _, body) = self.exchange(request).await?;
        if !status.is_success() {
            return Err(status_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| FhirError::Decode(e.to_string()))
    }

    async fn get_json(&self, token: Option<&str>, url: Url) -> Result<Value, FhirError> {
        let (status, _, body) = self.get_with_retry(token, url).await?;
        if !status.is_success() {
            return Err(status_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| FhirError::Decode(e.to_string()))
    }

    fn request(&self, method: Method, url: Url, token: Option<&str>) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, url).header(ACCEPT, FHIR_JSON);
        if let Some(timeout) = self.timeout {
            request = request.timeout(timeout);
        }
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// A read, tried once more when that is safe and likely to help: a GET changes nothing,
    /// so after a connection that failed before any answer, or a 429/503 (the server asking
    /// for a pause, for at most 5 s by its `Retry-After`), it is sent again once.
    async fn get_with_retry(
        &self,
        token: Option<&str>,
        url: Url,
    ) -> Result<(StatusCode, Option<String>, Vec<u8>), FhirError> {
        let request = || self.request(Method::GET, url.clone(), token);
        let pause = match self.exchange_with_headers(request()).await {
            Err(FhirError::Transport(_)) => Duration::from_millis(200),
            Ok((status, headers, body))
                if matches!(
                    status,
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                ) =>
            {
                match retry_after(&headers) {
                    Some(wait) if wait <= Duration::from_secs(5) => wait,
                    Some(_) => return Ok((status, None, body)),
                    None => Duration::from_millis(500),
                }
            }
            other => {
                return other.map(|(status, headers, body)| (status, location(&headers), body))
            }
        };
        tokio::time::sleep(pause).await;
        self.exchange(request()).await
    }

    /// Sends (within the gate, when there is one) and reads the capped body: the status, the
    /// `Location` header and the body.
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Option<String>, Vec<u8>), FhirError> {
        let (status, headers, body) = self.exchange_with_headers(request).await?;
        Ok((status, location(&headers), body))
    }

    async fn exchange_with_headers(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, Vec<u8>), FhirError> {
        let _permit = match &self.gate {
            Some(gate) => Some(gate.acquire().await.map_err(|_| FhirError::Timeout)?),
            None => None,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = http::read_capped(response, self.max_body).await?;
        Ok((status, headers, body))
    }
}

fn location(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers.get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// `Retry-After` in seconds (the HTTP-date form is treated as "not soon").
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    Some(value.trim().parse::<u64>().map_or(Duration::MAX, Duration::from_secs))
}

fn with_trailing_slash(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

/// The text of an OperationOutcome body: per issue its `details.text` or `diagnostics`, with
/// the issue `code` when it says something the text may not (`too-costly`, `not-supported`)
/// and where it points (`expression`, or the deprecated `location`), so a caller can tell a
/// refusal of the request's size from a refusal of one entry.
pub fn outcome_text(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    if value.get("resourceType")?.as_str()? != "OperationOutcome" {
        return None;
    }
    let texts: Vec<String> =
        value.get("issue")?.as_array()?.iter().take(20).filter_map(issue_text).collect();
    // Outside text that reaches logs and, through a caller's message, pages: no control
    // characters, and a bounded length.
    (!texts.is_empty()).then(|| {
        texts.join("; ").chars().take(600).map(|c| if c.is_control() { ' ' } else { c }).collect()
    })
}

fn issue_text(issue: &Value) -> Option<String> {
    let text = issue
        .pointer("/details/text")
        .and_then(Value::as_str)
        .or_else(|| issue.get("diagnostics").and_then(Value::as_str));
    let code = issue
        .get("code")
        .and_then(Value::as_str)
        .filter(|c| matches!(*c, "too-costly" | "too-long" | "not-supported" | "business-rule"));
    let at: Vec<&str> = ["expression", "location"]
        .iter()
        .filter_map(|k| issue.get(*k).and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut out = match (code, text) {
        (Some(code), Some(text)) => format!("{code}: {text}"),
        (None, Some(text)) => text.to_owned(),
        (Some(code), None) => code.to_owned(),
        (None, None) if !at.is_empty() => "refused".to_owned(),
        (None, None) => return None,
    };
    if !at.is_empty() {
        out.push_str(&format!(" (at {})", at.join(", ")));
    }
    Some(out)
}

fn status_error(status: StatusCode, body: &[u8]) -> FhirError {
    let outcome = outcome_text(body);
    match status.as_u16() {
        401 => FhirError::Unauthorized { outcome },
        403 => FhirError::Forbidden { outcome },
        404 => FhirError::NotFound { outcome },
        other => FhirError::Status { status: other, outcome },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn client(base: &str) -> FhirClient {
        FhirClient::new(reqwest::Client::new(), Url::parse(base).unwrap(), &HttpLimits::default())
    }

    #[test]
    fn paging_links_must_stay_under_the_base() {
        let c = client("https://plan.example/fhir");
        assert!(c.checked_link("https://plan.example/fhir/Patient?page=2").is_ok());
        assert!(c.checked_link("Patient?page=2").is_ok());
        assert!(matches!(
            c.checked_link("https://evil.example/fhir/Patient?page=2"),
            Err(FhirError::ForeignLink)
        ));
        assert!(matches!(
            c.checked_link("https://plan.example/other/Patient"),
            Err(FhirError::ForeignLink)
        ));
    }

    /// A server that answers each GET with the next of `answers` (status, Retry-After).
    async fn answering(
        answers: Vec<(u16, Option<&'static str>)>,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let count = std::sync::Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        let app = axum::Router::new().fallback(move || {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let (status, retry) = answers.get(n).copied().unwrap_or((200, None));
            async move {
                let mut response = axum::response::Response::builder().status(status);
                if let Some(retry) = retry {
                    response = response.header("retry-after", retry);
                }
                response
                    .body(axum::body::Body::from(r#"{"resourceType":"Patient","id":"1"}"#))
                    .unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/fhir", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (base, count)
    }

    #[tokio::test]
    async fn a_read_is_tried_again_once_when_the_server_asks_for_a_pause() {
        use std::sync::atomic::Ordering;
        let (base, count) = answering(vec![(503, Some("0"))]).await;
        let patient = client(&base).read(None, "Patient", "1").await.unwrap();
        assert_eq!(patient["id"], "1");
        assert_eq!(count.load(Ordering::SeqCst), 2);
        // Only once; and not when the pause asked for is long.
        let (base, count) = answering(vec![(503, Some("0")), (503, Some("0"))]).await;
        assert!(matches!(
            client(&base).read(None, "Patient", "1").await,
            Err(FhirError::Status { status: 503, .. })
        ));
        assert_eq!(count.load(Ordering::SeqCst), 2);
        let (base, count) = answering(vec![(429, Some("3600"))]).await;
        assert!(client(&base).read(None, "Patient", "1").await.is_err());
        assert_eq!(count.load(Ordering::SeqCst), 1);
        // A server error is not a request for a pause.
        let (base, count) = answering(vec![(500, None)]).await;
        assert!(client(&base).read(None, "Patient", "1").await.is_err());
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_gate_bounds_the_requests_in_flight_over_all_its_clients() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (now, most) =
            (std::sync::Arc::new(AtomicUsize::new(0)), std::sync::Arc::new(AtomicUsize::new(0)));
        let (n, m) = (now.clone(), most.clone());
        let app = axum::Router::new().fallback(move || {
            let (n, m) = (n.clone(), m.clone());
            async move {
                m.fetch_max(n.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                n.fetch_sub(1, Ordering::SeqCst);
                r#"{"resourceType":"Patient","id":"1"}"#
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/fhir", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(3));
        let reads = (0..24).map(|_| {
            let c = client(&base).with_gate(gate.clone());
            async move { c.read(None, "Patient", "1").await }
        });
        let results = futures::future::join_all(reads).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(most.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn urls_join_under_the_base() {
        let c = client("https://ehr.example/r4");
        assert_eq!(c.url("Patient/1").unwrap().as_str(), "https://ehr.example/r4/Patient/1");
        assert_eq!(c.base(), "https://ehr.example/r4");
    }

    #[test]
    fn reads_operation_outcome_text() {
        let body = br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"bad date"}]}"#;
        assert_eq!(outcome_text(body).as_deref(), Some("bad date"));
        assert_eq!(outcome_text(b"<html>"), None);
        let body = br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"too-costly","details":{"text":"at most 8 conditional entries"}},{"severity":"error","code":"invalid","expression":["Bundle.entry[3].resource"]}]}"#;
        assert_eq!(
            outcome_text(body).as_deref(),
            Some(
                "too-costly: at most 8 conditional entries; refused (at Bundle.entry[3].resource)"
            )
        );
    }
}
