//! CDS Hooks 2.0 JSON shapes (cds-hooks.hl7.org/2.0). Optional fields are omitted when
//! empty, as the spec asks; unknown fields from services are ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `GET {base}/cds-services`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryResponse {
    pub services: Vec<Service>,
}

/// One service in discovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub hook: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// REQUIRED by the spec; tolerated when missing (shown as empty).
    #[serde(default)]
    pub description: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prefetch: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_requirements: Option<String>,
    /// Context descriptors (proposed for personal health records): context key → a
    /// CodeableConcept describing the value the client should send.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<Value>,
}

/// `fhirAuthorization` of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FhirAuthorization {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub scope: String,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
}

/// A hook call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookRequest {
    pub hook: String,
    pub hook_instance: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_authorization: Option<FhirAuthorization>,
    pub context: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<Value>,
    /// Root properties proposed beyond CDS Hooks 2.0 (several FHIR sources and their
    /// `contexts`, [`crate::phr`]), sent only to a service that declares them.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub proposed: BTreeMap<String, Value>,
}

/// `info` | `warning` | `critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Indicator {
    Info,
    Warning,
    Critical,
}

impl Indicator {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "info" => Some(Indicator::Info),
            "warning" => Some(Indicator::Warning),
            "critical" => Some(Indicator::Critical),
            _ => None,
        }
    }
}

/// A Coding as CDS Hooks uses it (`system` and `code` required).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coding {
    pub code: String,
    #[serde(default)]
    pub system: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<Coding>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    #[serde(rename = "type")]
    pub action_type: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Suggestion {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_recommended: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkType {
    Absolute,
    Smart,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    pub label: String,
    pub url: String,
    #[serde(rename = "type")]
    pub link_type: LinkType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autolaunchable: Option<bool>,
}

/// A card as the spec defines it. `indicator` is read as text so that a card with an unknown
/// indicator can still be shown (PDex's own example sends `success`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Card {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub indicator: String,
    pub source: Source,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<Suggestion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection_behavior: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub override_reasons: Vec<Coding>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<Value>,
}

/// A service response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct HookResponse {
    pub cards: Vec<Card>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system_actions: Vec<Action>,
}

/// `accepted` | `overridden`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Accepted,
    Overridden,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedSuggestion {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverrideReason {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Coding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_comment: Option<String>,
}

/// One feedback item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Feedback {
    pub card: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_suggestions: Vec<AcceptedSuggestion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_reason: Option<OverrideReason>,
    pub outcome_timestamp: String,
}

/// `POST {base}/cds-services/{id}/feedback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackRequest {
    pub feedback: Vec<Feedback>,
}
