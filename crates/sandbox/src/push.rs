//! The plan pushing a member's history to Member History (PDex §3-4-3): the member's
//! `Patient/$everything` Bundle, POSTed with a JWT signed by the plan's key (published at
//! `{plan}/auth/jwks`) that names the push URL, lives five minutes, has its own `jti` and
//! carries the SHA-256 of the body. Tests also send what a plan must not (a stale, reused or
//! foreign-signed token, another body).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Router};
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::plan::Plan;
use crate::synthetic;

/// `POST /push`: the plan home page's form.
pub fn router(plan: Arc<Plan>) -> Router {
    Router::new().route("/push", post(push)).with_state(plan)
}

/// A push as the plan sends it: the body and its token.
#[derive(Debug, Clone)]
pub struct Push {
    pub body: Vec<u8>,
    pub token: String,
}

impl Plan {
    /// The `iss` of the plan's push tokens (what Member History registers for it).
    pub fn push_issuer(&self) -> &str {
        &self.base_url
    }

    /// Member History's push URL, next to its launch URL (when an app is registered).
    pub fn push_url(&self) -> Option<String> {
        let launch = self.app_launch_url.as_deref()?;
        Some(format!("{}/pdex/push", launch.strip_suffix("/launch")?))
    }

    /// Where the plan publishes the keys its pushes are signed with.
    pub fn push_jwks_url(&self) -> String {
        format!("{}/auth/jwks", self.base_url)
    }

    /// The `Patient/$everything` Bundle of member `patient_id` (a plan Patient id).
    pub fn everything_bundle(&self, patient_id: &str) -> Value {
        let entries: Vec<Value> = crate::fhir_api::everything_of(&self.store, patient_id)
            .into_iter()
            .map(|resource| {
                let url = fhir::ResourceExt::local_reference(&resource)
                    .map(|r| format!("{}/{r}", self.fhir_base))
                    .unwrap_or_default();
                json!({"fullUrl": url, "resource": resource})
            })
            .collect();
        json!({
            "resourceType": "Bundle",
            "type": "collection",
            "timestamp": crate::store::now_instant(),
            "entry": entries,
        })
    }

    /// A push of `bundle` to `push_url`, signed now for five minutes.
    pub fn push_of(&self, bundle: &Value, push_url: &str) -> Push {
        let body = serde_json::to_vec(bundle).expect("a Bundle serialises");
        let token = self.push_token(&body, push_url, 300);
        Push { body, token }
    }

    /// A push token for `body`, living `lifetime` seconds.
    pub fn push_token(&self, body: &[u8], push_url: &str, lifetime: i64) -> String {
        let now = jose::now() as i64;
        let digest =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(body));
        let claims = json!({
            "iss": self.push_issuer(),
            "sub": self.push_issuer(),
            "aud": push_url,
            "iat": now,
            "exp": now + lifetime,
            "jti": jose::new_jti(),
            "bundle_sha256": digest,
        });
        self.auth.key.sign(&claims, None).expect("the plan's key signs")
    }
}

/// Sends `push` to `push_url`; the status and the answer's body.
pub async fn send(push: &Push, push_url: &str) -> Result<(u16, Value), reqwest::Error> {
    let response = reqwest::Client::new()
        .post(push_url)
        .bearer_auth(&push.token)
        .header(reqwest::header::CONTENT_TYPE, "application/fhir+json")
        .body(push.body.clone())
        .send()
        .await?;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

#[derive(Debug, serde::Deserialize)]
struct PushForm {
    member: String,
}

/// The demo's push: the chosen member's history to Member History, and what it answered.
async fn push(State(plan): State<Arc<Plan>>, Form(form): Form<PushForm>) -> Response {
    let (Some(push_url), Some(member)) =
        (plan.push_url(), plan.members.iter().find(|m| m.patient_id == form.member))
    else {
        return (StatusCode::NOT_FOUND, "no such member, or no Member History to push to")
            .into_response();
    };
    let pushed = plan.push_of(&plan.everything_bundle(&member.patient_id), &push_url);
    let said = match send(&pushed, &push_url).await {
        Ok((status, outcome)) => format!(
            "Member History answered {status}: {}",
            outcome.pointer("/issue/0/diagnostics").and_then(Value::as_str).unwrap_or("")
        ),
        Err(e) => format!("Member History could not be reached: {e}"),
    };
    crate::pages::layout(
        synthetic::PLAN_NAME,
        "History pushed",
        maud::html! { p data-testid="push-result" { (said) } p { a href="/" { "Back" } } },
    )
    .into_response()
}
