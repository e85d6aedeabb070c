//! How the sandbox plan decides whether to believe a CDS client: the JWT on every request
//! (discovery, hook calls, feedback) must be signed by a registered client's key, fetched
//! from `jku` only when `jku` is that client's registered JWKS URL, with `aud` the exact URL
//! called, `exp` at most five minutes ahead, and a `jti` never seen before.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{header, HeaderMap};
use serde::Deserialize;
use serde_json::Value;

/// A CDS client the plan trusts.
#[derive(Debug, Clone)]
pub struct CdsClientTrust {
    /// The client's `iss`.
    pub issuer: String,
    /// The client's JWKS URL: the only `jku` accepted for this issuer.
    pub jku: String,
    /// Keys given at registration instead of fetching `jku` (tests without a listening app).
    pub jwks: Option<jose::jwk::JwkSet>,
}

/// A verified (or refused) request, kept so tests can check what clients sent.
#[derive(Debug, Clone)]
pub struct SeenJwt {
    pub header: Value,
    pub claims: Value,
    pub accepted: bool,
    pub refusal: Option<String>,
}

#[derive(Debug)]
pub struct CdsTrust {
    clients: Vec<CdsClientTrust>,
    http: reqwest::Client,
    jtis: Mutex<HashMap<String, u64>>,
    pub jwks_fetches: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Deserialize)]
struct Claims {
    iss: String,
    jti: String,
    exp: u64,
}

impl CdsTrust {
    pub fn new(clients: Vec<CdsClientTrust>, http: reqwest::Client) -> Self {
        Self { clients, http, jtis: Mutex::default(), jwks_fetches: Default::default() }
    }

    /// Checks the bearer JWT of a request to `audience` (the exact URL called).
    pub async fn verify(
        &self,
        headers: &HeaderMap,
        audience: &str,
    ) -> (Result<(), String>, SeenJwt) {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let header_json = token
            .as_deref()
            .and_then(|t| jose::peek_header(t).ok())
            .and_then(|h| serde_json::to_value(h).ok())
            .unwrap_or(Value::Null);
        let claims_json = token
            .as_deref()
            .and_then(|t| jose::peek_claims::<Value>(t).ok())
            .unwrap_or(Value::Null);
        let result = match token {
            Some(token) => self.check(&token, audience).await,
            None => Err("no bearer JWT".to_owned()),
        };
        let seen = SeenJwt {
            header: header_json,
            claims: claims_json,
            accepted: result.is_ok(),
            refusal: result.as_ref().err().cloned(),
        };
        (result, seen)
    }

    async fn check(&self, token: &str, audience: &str) -> Result<(), String> {
        let header = jose::peek_header(token).map_err(|e| e.to_string())?;
        if !jose::ACCEPTED_ALGORITHMS.contains(&header.alg) {
            return Err(format!("alg {:?} is not accepted", header.alg));
        }
        if header.typ.as_deref() != Some("JWT") {
            return Err("typ must be JWT".into());
        }
        if header.kid.is_none() {
            return Err("no kid".into());
        }
        let claims: Claims = jose::peek_claims(token).map_err(|e| e.to_string())?;
        let client = self
            .clients
            .iter()
            .find(|c| c.issuer == claims.iss)
            .ok_or_else(|| format!("issuer {} is not registered", claims.iss))?;
        if let Some(jku) = &header.jku {
            if jku != &client.jku {
                return Err("jku is not the registered JWKS URL of this issuer".into());
            }
        }
        let jwks = match &client.jwks {
            Some(jwks) => jwks.clone(),
            None => self.fetch(&client.jku).await?,
        };
        jose::verify::<Value>(
            token,
            &jwks,
            &jose::Expectations {
                issuers: &[client.issuer.as_str()],
                audiences: &[audience],
                required: &["iss", "aud", "exp", "iat", "jti"],
                leeway: Some(5),
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let now = jose::now();
        if claims.exp > now + 300 + 5 {
            return Err("exp is more than five minutes ahead".into());
        }
        let mut jtis = self.jtis.lock().unwrap_or_else(|p| p.into_inner());
        jtis.retain(|_, exp| *exp + 5 >= now);
        let key = format!("{}\u{0}{}", claims.iss, claims.jti);
        if jtis.contains_key(&key) {
            return Err("jti was already used".into());
        }
        jtis.insert(key, claims.exp);
        Ok(())
    }

    async fn fetch(&self, url: &str) -> Result<jose::jwk::JwkSet, String> {
        self.jwks_fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|_| "the JWKS could not be fetched".to_owned())?;
        if !response.status().is_success() {
            return Err(format!("the JWKS URL answered {}", response.status().as_u16()));
        }
        let body =
            fhir::http::read_capped(response, 256 * 1024).await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&body).map_err(|_| "the JWKS is not a JWK Set".to_owned())
    }
}
