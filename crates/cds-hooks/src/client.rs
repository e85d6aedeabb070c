//! The CDS client side: discovery, hook calls and feedback, each with a signed JWT whose
//! `aud` is the exact URL called. Timeouts, a body size cap and no redirects; tolerant of
//! what real services send (404/422 with cards, `text/json`, unknown fields), strict about
//! what it cannot read.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::Value;
use url::Url;

use crate::cards::{check_response, CheckedResponse};
use crate::model::{DiscoveryResponse, FeedbackRequest, HookRequest};

/// Who we are to CDS services: the key that signs our JWTs and where its JWKS is published.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub key: Arc<jose::SigningKey>,
    /// `iss` of our JWTs.
    pub issuer: String,
    /// `jku`: our JWKS URL.
    pub jku: String,
    pub tenant: Option<String>,
}

/// Lifetime of our JWTs (the spec caps it at five minutes).
pub const JWT_LIFETIME_SECS: u64 = 240;

impl ClientIdentity {
    /// A JWT for one request to `audience` (the exact URL called).
    pub fn token(&self, audience: &str) -> Result<String, jose::JoseError> {
        self.token_for(audience, None)
    }

    /// A JWT for one request to `audience` on behalf of `tenant` (the SMART launch's
    /// `tenant`, when the request is made for one), else the configured tenant.
    pub fn token_for(
        &self,
        audience: &str,
        tenant: Option<&str>,
    ) -> Result<String, jose::JoseError> {
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            aud: &'a str,
            iat: u64,
            exp: u64,
            jti: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            tenant: Option<&'a str>,
        }
        let now = jose::now();
        self.key.sign(
            &Claims {
                iss: &self.issuer,
                aud: audience,
                iat: now,
                exp: now + JWT_LIFETIME_SECS,
                jti: jose::new_jti(),
                tenant: tenant.or(self.tenant.as_deref()),
            },
            Some(&self.jku),
        )
    }
}

/// Limits of the client.
#[derive(Debug, Clone, Copy)]
pub struct CdsLimits {
    pub connect_timeout: Duration,
    /// Whole-call deadline, body included.
    pub timeout: Duration,
    pub max_body: usize,
    pub max_cards: usize,
    /// Calls in flight at once to this service, over all clinicians (more wait their turn).
    pub max_in_flight: usize,
}

impl Default for CdsLimits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            max_body: 2 * 1024 * 1024,
            max_cards: 50,
            max_in_flight: 64,
        }
    }
}

/// What went wrong talking to a CDS service. `Display` is for logs; the app that uses the
/// client says it in its own words (Member History: `service::error::hook_message`).
#[derive(Debug, thiserror::Error)]
pub enum CdsError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("could not connect: {0}")]
    Unreachable(String),
    #[error("refused our credentials (HTTP {0})")]
    Refused(u16),
    #[error("needs data it could not get (HTTP 412)")]
    PreconditionFailed,
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("answer is not JSON (content type {0})")]
    NotJson(String),
    #[error("answer could not be read: {0}")]
    Malformed(String),
    #[error("offers no `{0}` service")]
    NoService(String),
    #[error("could not sign the request: {0}")]
    Signing(#[from] jose::JoseError),
}

/// A hook answer after checking.
#[derive(Debug, Clone)]
pub struct HookAnswer {
    /// The HTTP status (200, or 404/422 when the service explained a failure with cards).
    pub status: u16,
    pub response: CheckedResponse,
}

/// A CDS Hooks client for one identity.
#[derive(Debug, Clone)]
pub struct CdsClient {
    http: reqwest::Client,
    identity: ClientIdentity,
    limits: CdsLimits,
    gate: std::sync::Arc<tokio::sync::Semaphore>,
}

/// `{base}/cds-services`.
pub fn discovery_url(base: &Url) -> String {
    format!("{}/cds-services", base.as_str().trim_end_matches('/'))
}

/// `{base}/cds-services/{id}`.
pub fn service_url(base: &Url, service_id: &str) -> String {
    let id: String = url::form_urlencoded::byte_serialize(service_id.as_bytes()).collect();
    format!("{}/{id}", discovery_url(base))
}

/// `{base}/cds-services/{id}/feedback`.
pub fn feedback_url(base: &Url, service_id: &str) -> String {
    format!("{}/feedback", service_url(base, service_id))
}

impl CdsClient {
    /// Fails only when the TLS backend cannot initialise: there is no fallback client
    /// without the timeouts and the no-redirect rule.
    pub fn new(identity: ClientIdentity, limits: CdsLimits) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(limits.connect_timeout)
            .timeout(limits.timeout)
            .user_agent(concat!("member-history/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_in_flight.max(1)));
        Ok(Self { http, identity, limits, gate })
    }

    pub fn identity(&self) -> &ClientIdentity {
        &self.identity
    }

    /// `GET {base}/cds-services`.
    pub async fn discover(&self, base: &Url) -> Result<DiscoveryResponse, CdsError> {
        let url = discovery_url(base);
        let (status, body) = self.send(self.http.get(&url), &url, None).await?;
        if status != StatusCode::OK {
            return Err(status_error(status));
        }
        let value = body.ok_or_else(|| CdsError::Malformed("an empty discovery answer".into()))?;
        serde_json::from_value(value).map_err(|e| CdsError::Malformed(format!("discovery: {e}")))
    }

    /// `POST {base}/cds-services/{id}` with `request`.
    pub async fn call(
        &self,
        base: &Url,
        service_id: &str,
        request: &HookRequest,
    ) -> Result<HookAnswer, CdsError> {
        self.call_for_tenant(base, service_id, request, None).await
    }

    /// [`call`](Self::call) on behalf of a tenant: its JWT's `tenant` claim names the
    /// healthcare organisation the request is made for.
    pub async fn call_for_tenant(
        &self,
        base: &Url,
        service_id: &str,
        request: &HookRequest,
        tenant: Option<&str>,
    ) -> Result<HookAnswer, CdsError> {
        let url = service_url(base, service_id);
        let (status, body) = self.send(self.http.post(&url).json(request), &url, tenant).await?;
        let explained_failure = matches!(status.as_u16(), 400 | 404 | 409 | 422)
            && body.as_ref().is_some_and(|b| b.get("cards").is_some_and(Value::is_array));
        if status != StatusCode::OK && !explained_failure {
            return Err(status_error(status));
        }
        let body = body.ok_or_else(|| CdsError::Malformed("an empty answer".into()))?;
        let response =
            check_response(&body, self.limits.max_cards).map_err(|e| CdsError::Malformed(e.0))?;
        Ok(HookAnswer { status: status.as_u16(), response })
    }

    /// `POST {base}/cds-services/{id}/feedback`. Any 2xx is success (2.0 defines no body).
    pub async fn feedback(
        &self,
        base: &Url,
        service_id: &str,
        feedback: &FeedbackRequest,
    ) -> Result<(), CdsError> {
        let url = feedback_url(base, service_id);
        let request = self.http.post(&url).json(feedback);
        let response =
            self.signed(request, &url, None)?.send().await.map_err(|e| self.transport(e))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(status_error(response.status()))
        }
    }

    fn transport(&self, e: reqwest::Error) -> CdsError {
        if e.is_timeout() {
            CdsError::Timeout(self.limits.timeout)
        } else {
            CdsError::Unreachable(e.without_url().to_string())
        }
    }

    fn signed(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
        tenant: Option<&str>,
    ) -> Result<reqwest::RequestBuilder, CdsError> {
        let jwt = self.identity.token_for(url, tenant)?;
        Ok(request
            .header(AUTHORIZATION, format!("Bearer {jwt}"))
            .header(ACCEPT, "application/json"))
    }

    /// Sends a signed request; reads a JSON body (if any) within the size cap.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
        tenant: Option<&str>,
    ) -> Result<(StatusCode, Option<Value>), CdsError> {
        let request = self.signed(request, url, tenant)?;
        // Waiting for a permit counts against the call's deadline, as the plan sees it.
        let _permit = tokio::time::timeout(self.limits.timeout, self.gate.acquire())
            .await
            .map_err(|_| CdsError::Timeout(self.limits.timeout))?
            .map_err(|_| CdsError::Timeout(self.limits.timeout))?;
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        let content_type =
            response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = match fhir::http::read_capped(response, self.limits.max_body).await {
            Ok(bytes) => bytes,
            Err(fhir::http::BodyError::TooLarge { limit }) => {
                return Err(CdsError::TooLarge(limit))
            }
            Err(fhir::http::BodyError::Timeout) => {
                return Err(CdsError::Timeout(self.limits.timeout))
            }
            Err(fhir::http::BodyError::Transport(m)) => return Err(CdsError::Unreachable(m)),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok((status, None));
        }
        if !fhir::http::is_json_content_type(content_type.as_deref()) {
            // Only a failure status may come without JSON (an HTML error page, say).
            if !status.is_success() {
                return Ok((status, None));
            }
            return Err(CdsError::NotJson(
                content_type.unwrap_or_else(|| "no content type".into()),
            ));
        }
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| CdsError::Malformed(format!("invalid JSON ({e})")))?;
        Ok((status, Some(value)))
    }
}

fn status_error(status: StatusCode) -> CdsError {
    match status.as_u16() {
        401 | 403 => CdsError::Refused(status.as_u16()),
        412 => CdsError::PreconditionFailed,
        other => CdsError::Status(other),
    }
}
