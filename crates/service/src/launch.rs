//! The SMART launch: `/launch` starts an authorization, `/callback` completes it.

use api::LaunchKind;
use smart::{CallbackParams, LaunchRequest, TokenSet};
use tower_sessions::Session;
use url::Url;

use crate::error::LaunchError;
use crate::launch_state::{new_launch_id, Launch};
use crate::session;
use crate::state::{AppState, EhrRuntime};

/// The scopes of an authorization: the launch/identity/refresh scopes for the launch mode,
/// then the EHR's resource scopes.
pub fn scope_for(ehr: &EhrRuntime, ehr_launch: bool) -> String {
    let fixed = if ehr_launch {
        "launch openid fhirUser online_access"
    } else {
        "launch/patient openid fhirUser offline_access"
    };
    format!("{fixed} {}", ehr.config.scope.trim())
}

/// Starts an EHR launch (`launch` given) or a standalone launch (none) at `iss`, which must
/// be a configured issuer: anything else is refused before any request leaves the server.
/// Returns the EHR's authorize URL to redirect to.
pub async fn start(
    state: &AppState,
    session: &Session,
    iss: Option<&str>,
    launch: Option<&str>,
) -> Result<Url, LaunchError> {
    let iss = iss.map(str::trim).filter(|s| !s.is_empty()).ok_or(LaunchError::MissingIssuer)?;
    let ehr = state.ehr_by_issuer(iss).ok_or(LaunchError::UnknownIssuer)?;
    let launch = launch.map(str::trim).filter(|s| !s.is_empty());
    let config = state.discovery.get(&ehr.config.issuer).await?;
    let scope = scope_for(ehr, launch.is_some());
    let (url, pending) = ehr.client.authorize(
        &config,
        LaunchRequest { iss: &ehr.config.issuer, launch, scope: &scope },
        jose::now(),
    )?;
    let now = jose::now();
    let mut list = session::pending(session).await?;
    list.retain(|p| now.saturating_sub(p.created_at) <= smart::client::PENDING_TTL_SECS);
    list.push(pending);
    session::set_pending(session, list).await?;
    tracing::info!(ehr = %ehr.config.id, ehr_launch = launch.is_some(), "SMART authorization started");
    Ok(url)
}

/// Completes a launch at the callback: checks `state` against this session's authorizations
/// in flight (each usable once), exchanges the code, and records the launch. Returns the new
/// launch id.
pub async fn complete(
    state: &AppState,
    session: &Session,
    params: &CallbackParams,
) -> Result<String, LaunchError> {
    let now = jose::now();
    let mut list = session::pending(session).await?;
    let checked = smart::SmartClient::check_callback(&list, params, now);
    // A matched authorization is spent whatever happens next: a replayed state finds nothing.
    let index = match &checked {
        Ok((index, _)) => Some(*index),
        Err(
            smart::SmartError::Denied { .. }
            | smart::SmartError::AuthorizationExpired
            | smart::SmartError::CodeMissing,
        ) => list.iter().position(|p| Some(p.state.expose()) == params.state.as_deref()),
        Err(_) => None,
    };
    let pending = match index {
        Some(i) => {
            let pending = list.remove(i);
            session::set_pending(session, list).await?;
            Some(pending)
        }
        None => None,
    };
    let (_, code) = checked?;
    let pending = pending.ok_or(LaunchError::Smart(smart::SmartError::StateMismatch))?;
    let ehr = state.ehr_by_issuer(&pending.iss).ok_or(LaunchError::UnknownIssuer)?;
    let config = state.discovery.get(&ehr.config.issuer).await?;
    let token = ehr.client.exchange_code(&config, &pending, &code).await?;

    let fhir_user = match &token.context.id_token {
        Some(id_token) => {
            ehr.client.verify_id_token(&config, id_token, pending.nonce.as_ref()).await?.fhir_user
        }
        None => None,
    };
    let patient_id = token.context.patient.clone().ok_or(LaunchError::NoPatient)?;
    let kind = match (&token.context.app_context, pending.ehr_launch) {
        (Some(_), _) => LaunchKind::CardLink,
        (None, true) => LaunchKind::Ehr,
        (None, false) => LaunchKind::Standalone,
    };
    let launch = Launch {
        id: new_launch_id(),
        ehr_id: ehr.config.id.clone(),
        kind,
        tokens: TokenSet::from_response(&token, &pending.scope, now),
        patient_id,
        encounter_id: token.context.encounter.clone(),
        fhir_user,
        // Standalone launches have no EHR chrome around them: always show the banner.
        need_patient_banner: token.context.need_patient_banner.unwrap_or(true)
            || !pending.ehr_launch,
        smart_style_url: token.context.smart_style_url.clone(),
        app_context: token.context.app_context.clone(),
        appointment_id: context_appointment(&token.context.fhir_context),
        intent: token.context.intent.clone(),
        tenant: token.context.tenant.clone(),
        style: None,
        identification: None,
        history: None,
        writes: Vec::new(),
        member_access: None,
        plan: token
            .context
            .app_context
            .as_deref()
            .and_then(|c| crate::plan::from_app_context(state, c)),
    };
    let id = launch.id.clone();
    state.launches.insert(&launch).await?;
    // A new session id once signed in, so an id planted before the launch is worthless.
    session.cycle_id().await?;
    session::add_launch(session, &id).await?;
    tracing::info!(ehr = %ehr.config.id, ?kind, "SMART launch completed");
    Ok(id)
}

/// The Appointment named in SMART `fhirContext` (`reference` `Appointment/{id}`, `type`
/// optional), if exactly one is.
fn context_appointment(items: &[smart::token::FhirContextItem]) -> Option<String> {
    let ids: Vec<String> = items
        .iter()
        .filter(|i| i.resource_type.as_deref().is_none_or(|t| t == "Appointment"))
        .filter_map(|i| i.reference.as_deref())
        .filter_map(|r| match fhir::Reference::parse(r) {
            fhir::Reference::Local { resource_type, id } if resource_type == "Appointment" => {
                Some(id)
            }
            _ => None,
        })
        .collect();
    match ids.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod context_tests {
    use super::context_appointment;
    use smart::token::FhirContextItem;

    fn item(reference: &str, resource_type: Option<&str>) -> FhirContextItem {
        FhirContextItem {
            reference: Some(reference.into()),
            resource_type: resource_type.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn the_one_appointment_in_fhir_context_is_found() {
        assert_eq!(context_appointment(&[item("Appointment/a1", None)]).as_deref(), Some("a1"));
        assert_eq!(
            context_appointment(&[
                item("Encounter/e1", None),
                item("Appointment/a2", Some("Appointment"))
            ])
            .as_deref(),
            Some("a2")
        );
        assert_eq!(context_appointment(&[item("Encounter/e1", None)]), None);
        // Two appointments: which one is meant is not ours to guess.
        assert_eq!(
            context_appointment(&[item("Appointment/a1", None), item("Appointment/a2", None)]),
            None
        );
    }
}
