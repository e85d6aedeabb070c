//! The SMART token response and the token set kept in the server-side session.

use oauth2::basic::BasicTokenType;
use oauth2::{ExtraTokenFields, StandardTokenResponse, TokenResponse as _};
use serde::{Deserialize, Deserializer, Serialize};

use crate::secret::Secret;

/// One `fhirContext` item (SMART 2.2): at least one of `reference`, `canonical`, `identifier`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FhirContextItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canonical: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<serde_json::Value>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// The SMART launch-context fields of a token response, beyond OAuth's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SmartTokenFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<String>,
    #[serde(default, rename = "fhirContext", skip_serializing_if = "Vec::is_empty")]
    pub fhir_context: Vec<FhirContextItem>,
    #[serde(default, deserialize_with = "lenient_bool", skip_serializing_if = "Option::is_none")]
    pub need_patient_banner: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smart_style_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// CDS Hooks: the `appContext` of the `smart` card link the EHR launched us from.
    #[serde(default, rename = "appContext", skip_serializing_if = "Option::is_none")]
    pub app_context: Option<String>,
}

impl ExtraTokenFields for SmartTokenFields {}

/// What `oauth2` parses a SMART token response into.
pub type OAuthTokenResponse = StandardTokenResponse<SmartTokenFields, BasicTokenType>;

/// Some EHRs send `"need_patient_banner": "true"`; accept booleans and their string forms.
fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Str(String),
    }
    Ok(match Option::<B>::deserialize(d)? {
        Some(B::Bool(b)) => Some(b),
        Some(B::Str(s)) => match s.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        None => None,
    })
}

/// A SMART token response.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenResponse {
    pub access_token: Secret,
    pub expires_in: Option<u64>,
    /// Granted scopes; `None` when the server left `scope` out (the requested scopes apply).
    pub scope: Option<String>,
    pub refresh_token: Option<Secret>,
    pub context: SmartTokenFields,
}

impl From<OAuthTokenResponse> for TokenResponse {
    fn from(r: OAuthTokenResponse) -> Self {
        TokenResponse {
            access_token: Secret::new(r.access_token().secret().clone()),
            expires_in: r.expires_in().map(|d| d.as_secs()),
            scope: r.scopes().map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")),
            refresh_token: r.refresh_token().map(|t| Secret::new(t.secret().clone())),
            context: r.extra_fields().clone(),
        }
    }
}

impl TokenResponse {
    /// Parses a token endpoint's JSON body the way the code exchange does.
    pub fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice::<OAuthTokenResponse>(body).map(Into::into)
    }
}

/// The tokens kept in the server session for one launch. Never sent to the browser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenSet {
    pub access_token: Secret,
    /// Unix seconds; `None` when the server gave no lifetime.
    pub expires_at: Option<u64>,
    pub refresh_token: Option<Secret>,
    pub scope: String,
}

impl TokenSet {
    /// `requested_scope` stands in when the server did not echo `scope`.
    pub fn from_response(response: &TokenResponse, requested_scope: &str, now: u64) -> Self {
        TokenSet {
            access_token: response.access_token.clone(),
            expires_at: response.expires_in.map(|s| now + s),
            refresh_token: response.refresh_token.clone(),
            scope: response.scope.clone().unwrap_or_else(|| requested_scope.to_owned()),
        }
    }

    /// True when the access token expires within `margin_secs` and a refresh token exists.
    pub fn should_refresh(&self, now: u64, margin_secs: u64) -> bool {
        self.refresh_token.is_some() && self.expires_at.is_some_and(|at| at <= now + margin_secs)
    }

    /// Applies a refresh response: a new refresh token replaces the old one when sent.
    pub fn apply_refresh(&mut self, response: &TokenResponse, now: u64) {
        self.access_token = response.access_token.clone();
        self.expires_at = response.expires_in.map(|s| now + s);
        if let Some(rt) = &response.refresh_token {
            self.refresh_token = Some(rt.clone());
        }
        if let Some(scope) = &response.scope {
            self.scope = scope.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_a_full_smart_token_response() {
        let body = br#"{
            "access_token": "at", "token_type": "Bearer", "expires_in": 3600,
            "scope": "launch openid fhirUser patient/Patient.rs", "refresh_token": "rt",
            "id_token": "idt", "patient": "p1", "encounter": "e1",
            "fhirContext": [{"reference": "Appointment/a1"}],
            "need_patient_banner": true, "smart_style_url": "https://ehr/style.json",
            "intent": "reconcile", "tenant": "t1", "appContext": "{\"member\":\"M1\"}",
            "unknown_field": 42
        }"#;
        let t = TokenResponse::from_json(body).unwrap();
        assert_eq!(t.access_token.expose(), "at");
        assert_eq!(t.expires_in, Some(3600));
        assert_eq!(t.scope.as_deref(), Some("launch openid fhirUser patient/Patient.rs"));
        assert_eq!(t.refresh_token.unwrap().expose(), "rt");
        assert_eq!(t.context.patient.as_deref(), Some("p1"));
        assert_eq!(t.context.encounter.as_deref(), Some("e1"));
        assert_eq!(t.context.fhir_context[0].reference.as_deref(), Some("Appointment/a1"));
        assert_eq!(t.context.need_patient_banner, Some(true));
        assert_eq!(t.context.app_context.as_deref(), Some("{\"member\":\"M1\"}"));
        assert_eq!(t.context.id_token.unwrap().expose(), "idt");
    }

    #[test]
    fn parses_a_minimal_token_response() {
        let t =
            TokenResponse::from_json(br#"{"access_token":"at","token_type":"bearer"}"#).unwrap();
        assert_eq!(t.expires_in, None);
        assert_eq!(t.scope, None);
        assert!(t.refresh_token.is_none());
        assert_eq!(t.context, SmartTokenFields::default());
        let set = TokenSet::from_response(&t, "launch patient/*.rs", 100);
        assert_eq!(set.scope, "launch patient/*.rs");
        assert!(!set.should_refresh(100, 60));
    }

    #[test]
    fn string_booleans_are_tolerated() {
        let t = TokenResponse::from_json(
            br#"{"access_token":"at","token_type":"Bearer","need_patient_banner":"false"}"#,
        )
        .unwrap();
        assert_eq!(t.context.need_patient_banner, Some(false));
    }

    #[test]
    fn refresh_is_due_within_the_margin() {
        let t = TokenResponse::from_json(
            br#"{"access_token":"a","token_type":"Bearer","expires_in":100,"refresh_token":"r"}"#,
        )
        .unwrap();
        let mut set = TokenSet::from_response(&t, "", 1000);
        assert!(!set.should_refresh(1000, 60));
        assert!(set.should_refresh(1041, 60));
        let refreshed = TokenResponse::from_json(
            br#"{"access_token":"b","token_type":"Bearer","expires_in":100}"#,
        )
        .unwrap();
        set.apply_refresh(&refreshed, 1050);
        assert_eq!(set.access_token.expose(), "b");
        assert_eq!(set.expires_at, Some(1150));
        assert_eq!(set.refresh_token.as_ref().unwrap().expose(), "r", "old refresh token kept");
    }

    #[test]
    fn missing_access_token_is_an_error() {
        assert!(TokenResponse::from_json(br#"{"token_type":"Bearer"}"#).is_err());
    }
}
