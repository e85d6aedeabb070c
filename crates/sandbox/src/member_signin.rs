//! The plan's member sign-in (PDex §3-4-2: member-authorized access to the plan's
//! patient-facing API): a SMART standalone launch (`launch/patient`, PKCE) lands here; the
//! member signs in (the sandbox asks for the member id and birth date) and approves on an
//! authorization screen that can withhold demographics (`patient/Patient.rs` not granted) and
//! behavioural health (every scope narrowed with `_security:not=…|PSY`, and those records left
//! out of the API's answers). The granted scope goes back in the token response.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::html;

use crate::auth::{self, AuthorizeOutcome, AuthorizeParams, Decision};
use crate::pages;
use crate::plan::Plan;
use crate::synthetic;

use crate::fhir_api::BEHAVIOURAL_HEALTH_LABEL;

/// `/auth/authorize` and its decision, on the plan.
pub fn router(plan: Arc<Plan>) -> Router {
    Router::new()
        .route("/auth/authorize", get(authorize))
        .route("/auth/authorize/decide", post(decide))
        .with_state(plan)
}

async fn authorize(
    State(plan): State<Arc<Plan>>,
    Query(params): Query<AuthorizeParams>,
) -> Response {
    match plan.auth.authorize(&params) {
        Ok(AuthorizeOutcome::Code(_)) => {
            (StatusCode::BAD_REQUEST, "The plan's member sign-in takes no EHR launch.")
                .into_response()
        }
        Ok(AuthorizeOutcome::Picker { request_id, .. }) => sign_in(&request_id).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The member's sign-in and the authorization screen, in one form.
fn sign_in(request_id: &str) -> axum::response::Html<String> {
    pages::layout(
        synthetic::PLAN_NAME,
        "Member sign-in",
        html! {
            p { "Member History, your doctor's app, asks to read your records at " (synthetic::PLAN_NAME) "." }
            form method="post" action="/auth/authorize/decide" {
                input type="hidden" name="request_id" value=(request_id);
                label { "Member id " input name="member_id" required autocomplete="off"; }
                label { "Date of birth " input name="birth_date" type="date" required; }
                fieldset {
                    legend { "Share with the app" }
                    label { input type="checkbox" name="share_demographics" value="yes" checked; " Your name, birth date and contact details" }
                    label { input type="checkbox" name="share_behavioural_health" value="yes" checked; " Behavioural health records" }
                    p { "Your visits, diagnoses, medications, tests and claims are shared." }
                }
                button type="submit" name="decision" value="allow" { "Sign in and allow" }
                " "
                button.secondary type="submit" name="decision" value="deny" formnovalidate { "Deny" }
            }
        },
    )
}

#[derive(Debug, serde::Deserialize)]
struct MemberDecision {
    request_id: String,
    decision: String,
    member_id: Option<String>,
    birth_date: Option<String>,
    share_demographics: Option<String>,
    share_behavioural_health: Option<String>,
}

async fn decide(State(plan): State<Arc<Plan>>, Form(form): Form<MemberDecision>) -> Response {
    let member = plan.members.iter().find(|m| {
        form.member_id.as_deref().map(str::trim) == Some(m.member_id.as_str())
            && form.birth_date.as_deref() == Some(m.birth_date.as_str())
    });
    if form.decision == "allow" && member.is_none() {
        return pages::layout(
            synthetic::PLAN_NAME,
            "Member sign-in",
            html! { p role="alert" { "No member has that member id and date of birth. Go back and try again." } },
        )
        .into_response();
    }
    let decision = Decision {
        request_id: form.request_id.clone(),
        patient: member.map(|m| m.patient_id.clone()),
        practitioner: String::new(),
        decision: form.decision.clone(),
    };
    let demographics = form.share_demographics.is_some();
    let behavioural = form.share_behavioural_health.is_some();
    match plan
        .auth
        .decide_granting(&decision, |requested| granted(requested, demographics, behavioural))
    {
        Ok((redirect_uri, params)) => auth::redirect_with(&redirect_uri, &params),
        Err(e) => e.into_response(),
    }
}

/// The scopes granted of `requested`: without demographics, no `Patient` scope; without
/// behavioural health, every resource scope narrowed to records not labelled `PSY`.
pub fn granted(requested: &str, demographics: bool, behavioural: bool) -> String {
    requested
        .split_whitespace()
        .filter(|s| demographics || !s.starts_with("patient/Patient."))
        .map(|s| {
            let resource = s.starts_with("patient/") && !s.starts_with("patient/Patient.");
            if behavioural || !resource || s.contains('?') {
                s.to_owned()
            } else {
                format!("{s}?_security:not={BEHAVIOURAL_HEALTH_LABEL}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn withheld_categories_narrow_the_granted_scopes() {
        let requested = "launch/patient patient/Patient.rs patient/Condition.rs";
        assert_eq!(super::granted(requested, true, true), requested);
        assert_eq!(
            super::granted(requested, false, false),
            "launch/patient patient/Condition.rs?_security:not=http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY"
        );
    }
}
