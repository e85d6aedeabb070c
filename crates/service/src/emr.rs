//! Calls to the clinician's EMR on behalf of a launch: a valid access token every time,
//! refreshed shortly before it expires, and once more if the EMR refuses it anyway.

use std::future::Future;
use std::sync::Arc;

use fhir::{FhirClient, FhirError};
use smart::Secret;
use tokio::sync::Mutex;

use crate::error::ServiceError;
use crate::launches::Launch;
use crate::state::AppState;

/// Seconds before expiry at which the access token is refreshed.
pub const REFRESH_MARGIN_SECS: u64 = 60;

/// Runs `call` against the launch's EMR with a current access token. The refresh happens
/// under the launch's lock, so two concurrent calls refresh once.
pub async fn with_emr<T, F, Fut>(
    state: &AppState,
    launch: &Arc<Mutex<Launch>>,
    call: F,
) -> Result<T, ServiceError>
where
    F: Fn(FhirClient, Secret) -> Fut,
    Fut: Future<Output = Result<T, FhirError>>,
{
    let (client, token) = current_token(state, launch, false).await?;
    match call(client, token).await {
        Err(FhirError::Unauthorized { .. }) => {
            // The EMR may have revoked the token early or our clock differs: refresh and retry once.
            let (client, token) = current_token(state, launch, true).await?;
            call(client, token).await.map_err(ServiceError::from)
        }
        other => other.map_err(ServiceError::from),
    }
}

/// The EMR client and a current access token for the launch (refreshed when due, or
/// always with `force_refresh`).
pub async fn current_token(
    state: &AppState,
    launch: &Arc<Mutex<Launch>>,
    force_refresh: bool,
) -> Result<(FhirClient, Secret), ServiceError> {
    let mut launch = launch.lock().await;
    let ehr = state.ehr(&launch.ehr_id).ok_or_else(|| {
        ServiceError::Internal(format!("EHR `{}` is no longer configured", launch.ehr_id))
    })?;
    let now = jose::now();
    let due = launch.tokens.should_refresh(now, REFRESH_MARGIN_SECS)
        || (force_refresh && launch.tokens.refresh_token.is_some());
    if due {
        let refresh_token = launch
            .tokens
            .refresh_token
            .clone()
            .ok_or_else(|| ServiceError::Internal("no refresh token".into()))?;
        let config =
            state.discovery.get(&ehr.config.issuer).await.map_err(ServiceError::Refresh)?;
        let response =
            ehr.client.refresh(&config, &refresh_token).await.map_err(ServiceError::Refresh)?;
        launch.tokens.apply_refresh(&response, jose::now());
        tracing::info!(ehr = %ehr.config.id, "access token refreshed");
    }
    Ok((state.fhir_client(ehr), launch.tokens.access_token.clone()))
}
