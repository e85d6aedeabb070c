//! The clinician's EMR as one launch reaches it: a valid access token on every call,
//! refreshed shortly before it expires, and once more (with one retry) if the EMR refuses it
//! anyway.

use std::future::Future;

use fhir::{FhirClient, FhirError};
use serde_json::Value;
use smart::Secret;
use tokio::sync::Mutex;

use crate::error::ServiceError;
use crate::launch_state::Launch;
use crate::state::{AppState, EhrRuntime};

/// Seconds before expiry at which the access token is refreshed.
pub const REFRESH_MARGIN_SECS: u64 = 60;

/// One launch's access to its EMR (from [`crate::owned::OwnedLaunch::emr`]).
#[derive(Debug, Clone, Copy)]
pub struct Emr<'a> {
    pub(crate) state: &'a AppState,
    pub(crate) ehr: &'a EhrRuntime,
    pub(crate) launch: &'a Mutex<Launch>,
}

impl Emr<'_> {
    /// Runs `call` with a current access token; on a 401 refreshes and runs it once more.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, ServiceError>
    where
        F: Fn(FhirClient, Secret) -> Fut,
        Fut: Future<Output = Result<T, FhirError>>,
    {
        let (client, token) = self.current_token(false).await?;
        match call(client, token).await {
            Err(FhirError::Unauthorized { .. }) => {
                // The EMR may have revoked the token early or our clock differs.
                let (client, token) = self.current_token(true).await?;
                call(client, token).await.map_err(ServiceError::from)
            }
            other => other.map_err(ServiceError::from),
        }
    }

    pub async fn read(&self, resource_type: &str, id: &str) -> Result<Value, ServiceError> {
        self.call(|c, t| async move { c.read(Some(t.expose()), resource_type, id).await }).await
    }

    /// A resource by local reference (`Practitioner/1`).
    pub async fn read_reference(&self, reference: &str) -> Result<Value, ServiceError> {
        self.call(|c, t| async move { c.read_reference(Some(t.expose()), reference).await }).await
    }

    /// Every page of a search, up to `max_pages`.
    pub async fn search_all(
        &self,
        resource_type: &str,
        params: &[(&str, &str)],
        max_pages: usize,
    ) -> Result<Vec<Value>, ServiceError> {
        self.call(|c, t| async move {
            c.search_all(Some(t.expose()), resource_type, params, max_pages).await
        })
        .await
    }

    /// The launched patient's record.
    pub async fn patient(&self) -> Result<Value, ServiceError> {
        let id = self.launch.lock().await.patient_id.clone();
        self.read("Patient", &id).await
    }

    /// The EMR client and a current access token (refreshed when due, or always with
    /// `force_refresh`). The refresh happens under the launch's lock, so two concurrent
    /// calls refresh once.
    pub async fn current_token(
        &self,
        force_refresh: bool,
    ) -> Result<(FhirClient, Secret), ServiceError> {
        let mut launch = self.launch.lock().await;
        let now = jose::now();
        let due = launch.tokens.should_refresh(now, REFRESH_MARGIN_SECS) || force_refresh;
        // Without a refresh token the token is used as it is; the EMR's 401 then ends access.
        if let (true, Some(refresh_token)) = (due, launch.tokens.refresh_token.clone()) {
            let issuer = &self.ehr.config.issuer;
            let config = self.state.discovery.get(issuer).await.map_err(ServiceError::Refresh)?;
            let response = self
                .ehr
                .client
                .refresh(&config, &refresh_token)
                .await
                .map_err(ServiceError::Refresh)?;
            launch.tokens.apply_refresh(&response, jose::now());
            tracing::info!(ehr = %self.ehr.config.id, "access token refreshed");
        }
        Ok((self.state.fhir_client(self.ehr), launch.tokens.access_token.clone()))
    }
}
