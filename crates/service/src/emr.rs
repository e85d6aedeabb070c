//! The clinician's EMR as one launch reaches it: a valid access token on every call,
//! refreshed shortly before it expires, and once more (with one retry) if the EMR refuses it
//! anyway.

use std::future::Future;

use fhir::{FhirClient, FhirError};
use serde_json::Value;
use smart::Secret;
use tokio::sync::Mutex;

use crate::error::ServiceError;
use crate::launches::Versioned;
use crate::state::{AppState, EhrRuntime};

/// Seconds before expiry at which the access token is refreshed.
pub const REFRESH_MARGIN_SECS: u64 = 60;

/// One launch's access to its EMR (from [`crate::owned::OwnedLaunch::emr`]).
#[derive(Debug, Clone, Copy)]
pub struct Emr<'a> {
    pub(crate) state: &'a AppState,
    pub(crate) ehr: &'a EhrRuntime,
    pub(crate) current: &'a Mutex<Versioned>,
}

impl Emr<'_> {
    /// Runs `call` with a current access token; on a 401 refreshes and runs it once more.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, ServiceError>
    where
        F: Fn(FhirClient, Secret) -> Fut,
        Fut: Future<Output = Result<T, FhirError>>,
    {
        let (client, token) = self.current_token(None).await?;
        match call(client, token.clone()).await {
            Err(FhirError::Unauthorized { .. }) => {
                // The EMR may have revoked the token early or our clock differs.
                let (client, token) = self.current_token(Some(&token)).await?;
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
        let id = self.current.lock().await.launch.patient_id.clone();
        self.read("Patient", &id).await
    }

    /// The EMR client and a current access token: refreshed when due, or when the EMR
    /// `refused` the one given. One refresh at a time per launch in this server; a refresh
    /// another server made first (the store has newer tokens) is used instead of refreshing
    /// again, since an EHR that rotates refresh tokens would refuse the second.
    pub async fn current_token(
        &self,
        refused: Option<&Secret>,
    ) -> Result<(FhirClient, Secret), ServiceError> {
        let stale = |tokens: &smart::TokenSet| {
            tokens.should_refresh(jose::now(), REFRESH_MARGIN_SECS)
                || refused.is_some_and(|r| *r == tokens.access_token)
        };
        let launches = &self.state.launches;
        let client = || self.state.fhir_client(self.ehr);
        {
            let current = self.current.lock().await;
            if !stale(&current.launch.tokens) {
                return Ok((client(), current.launch.tokens.access_token.clone()));
            }
        }
        let id = self.current.lock().await.launch.id.clone();
        let gate = launches.refresh_lock(&id);
        let _one_at_a_time = gate.lock().await;
        let mut current = self.current.lock().await;
        launches.reload(&mut current).await?;
        let tokens = current.launch.tokens.clone();
        // Without a refresh token the token is used as it is; the EMR's 401 then ends access.
        let Some(refresh_token) = tokens.refresh_token.clone().filter(|_| stale(&tokens)) else {
            return Ok((client(), tokens.access_token));
        };
        let issuer = &self.ehr.config.issuer;
        let config = self.state.discovery.get(issuer).await.map_err(ServiceError::Refresh)?;
        let response = match self.ehr.client.refresh(&config, &refresh_token).await {
            Ok(response) => response,
            Err(e) => {
                // Another server may have refreshed (and rotated the refresh token) meanwhile.
                launches.reload(&mut current).await?;
                if current.launch.tokens.refresh_token.as_ref() != Some(&refresh_token) {
                    return Ok((client(), current.launch.tokens.access_token.clone()));
                }
                return Err(ServiceError::Refresh(e));
            }
        };
        let at = jose::now();
        let access = launches
            .update(&mut current, |launch| {
                launch.tokens.apply_refresh(&response, at);
                Ok(launch.tokens.access_token.clone())
            })
            .await?;
        tracing::info!(ehr = %self.ehr.config.id, "access token refreshed");
        Ok((client(), access))
    }
}
