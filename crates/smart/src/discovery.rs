//! `{fhirBase}/.well-known/smart-configuration`, cached per issuer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use url::Url;

use crate::error::SmartError;

/// The SMART configuration document (SMART App Launch 2.2 §Conformance). Unknown fields are
/// ignored; the ones the app acts on are typed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SmartConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: String,
    #[serde(default)]
    pub grant_types_supported: Vec<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    pub token_endpoint_auth_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    #[serde(default)]
    pub response_types_supported: Vec<String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
}

impl SmartConfiguration {
    pub fn has_capability(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    /// Endpoint URLs resolved against the FHIR base (the spec says they SHALL be absolute,
    /// and clients SHOULD resolve relative ones).
    fn resolve(mut self, base: &Url) -> Result<Self, SmartError> {
        let absolute = |s: &str| -> Result<String, SmartError> {
            base.join(s).map(String::from).map_err(|_| SmartError::Discovery {
                reason: format!("endpoint `{s}` is not a URL"),
            })
        };
        self.token_endpoint = absolute(&self.token_endpoint)?;
        if let Some(a) = &self.authorization_endpoint {
            self.authorization_endpoint = Some(absolute(a)?);
        }
        if let Some(j) = &self.jwks_uri {
            self.jwks_uri = Some(absolute(j)?);
        }
        Ok(self)
    }

    /// Checks what the app relies on: an authorization endpoint and PKCE S256.
    pub fn check_for_app_launch(&self) -> Result<(), SmartError> {
        if self.authorization_endpoint.is_none() {
            return Err(SmartError::Discovery { reason: "no authorization_endpoint".into() });
        }
        if !self.code_challenge_methods_supported.iter().any(|m| m == "S256") {
            return Err(SmartError::Discovery {
                reason: "code_challenge_methods_supported does not include S256".into(),
            });
        }
        Ok(())
    }
}

/// The SMART configuration URL for a FHIR base: `.well-known` is appended even when the base
/// has a path (the spec departs from RFC 5785 here).
pub fn configuration_url(fhir_base: &Url) -> Result<Url, SmartError> {
    let base = fhir_base.as_str().trim_end_matches('/');
    Url::parse(&format!("{base}/.well-known/smart-configuration"))
        .map_err(|e| SmartError::Discovery { reason: e.to_string() })
}

/// Fetches and caches SMART configurations. Callers pass only configured issuers.
#[derive(Debug)]
pub struct Discovery {
    http: reqwest::Client,
    ttl: Duration,
    max_body: usize,
    cache: RwLock<HashMap<String, (Instant, Arc<SmartConfiguration>)>>,
}

impl Discovery {
    pub fn new(http: reqwest::Client, ttl: Duration) -> Self {
        Self { http, ttl, max_body: 1024 * 1024, cache: RwLock::default() }
    }

    /// The configuration for `fhir_base`, from the cache while fresh.
    pub async fn get(&self, fhir_base: &Url) -> Result<Arc<SmartConfiguration>, SmartError> {
        let key = fhir_base.as_str().trim_end_matches('/').to_owned();
        if let Some((at, config)) = self.cache.read().await.get(&key) {
            if at.elapsed() < self.ttl {
                return Ok(config.clone());
            }
        }
        let config = Arc::new(self.fetch(fhir_base).await?);
        self.cache.write().await.insert(key, (Instant::now(), config.clone()));
        Ok(config)
    }

    /// Drops a cached entry (after the EHR refused something the configuration promised).
    pub async fn forget(&self, fhir_base: &Url) {
        self.cache.write().await.remove(fhir_base.as_str().trim_end_matches('/'));
    }

    async fn fetch(&self, fhir_base: &Url) -> Result<SmartConfiguration, SmartError> {
        let url = configuration_url(fhir_base)?;
        let response = crate::http::get_json(&self.http, url).await?;
        if !response.status().is_success() {
            return Err(SmartError::Discovery {
                reason: format!("smart-configuration answered {}", response.status().as_u16()),
            });
        }
        let body = fhir::http::read_capped(response, self.max_body)
            .await
            .map_err(|e| SmartError::Unreachable(e.to_string()))?;
        let config: SmartConfiguration = serde_json::from_slice(&body)
            .map_err(|e| SmartError::Discovery { reason: format!("not valid JSON: {e}") })?;
        config.resolve(fhir_base)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn well_known_is_appended_to_a_base_with_a_path() {
        let url =
            configuration_url(&Url::parse("https://ehr.example/apis/fhir/").unwrap()).unwrap();
        assert_eq!(url.as_str(), "https://ehr.example/apis/fhir/.well-known/smart-configuration");
    }

    #[test]
    fn relative_endpoints_are_resolved_and_s256_required() {
        let config: SmartConfiguration = serde_json::from_str(
            r#"{"authorization_endpoint":"/auth/authorize","token_endpoint":"https://ehr.example/auth/token",
                "capabilities":["launch-ehr"],"code_challenge_methods_supported":["S256"],"extra":1}"#,
        )
        .unwrap();
        let config = config.resolve(&Url::parse("https://ehr.example/fhir").unwrap()).unwrap();
        assert_eq!(
            config.authorization_endpoint.as_deref(),
            Some("https://ehr.example/auth/authorize")
        );
        assert!(config.check_for_app_launch().is_ok());
        let plain =
            SmartConfiguration { code_challenge_methods_supported: vec!["plain".into()], ..config };
        assert!(plain.check_for_app_launch().is_err());
    }
}
