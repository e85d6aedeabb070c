//! The audit log: who read which patient's plan data, what was written into which chart,
//! which member matches were refused. Kept in the store only (never in the application log)
//! and exported as FHIR R4 `AuditEvent` resources.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditAction {
    /// The plan was asked about the member (the CDS Hooks request) and its answer read.
    PlanAsked,
    /// The member's history was read from the plan's FHIR API.
    PlanHistoryRead,
    /// Resources were written into the EMR.
    EmrWrite,
    /// The plan's member did not match the patient in the chart: nothing was shown.
    MemberMatchRefused,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::PlanAsked => "plan-asked",
            AuditAction::PlanHistoryRead => "plan-history-read",
            AuditAction::EmrWrite => "emr-write",
            AuditAction::MemberMatchRefused => "member-match-refused",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::PlanAsked, Self::PlanHistoryRead, Self::EmrWrite, Self::MemberMatchRefused]
            .into_iter()
            .find(|a| a.as_str() == text)
    }

    /// FHIR `AuditEvent.action` (C, R, E) and the `restful-interaction` subtype.
    fn fhir(self) -> (&'static str, &'static str, &'static str) {
        match self {
            AuditAction::PlanAsked => ("E", "operation", "Plan asked about the member"),
            AuditAction::PlanHistoryRead => {
                ("R", "search-type", "Member history read from the plan")
            }
            AuditAction::EmrWrite => ("C", "transaction", "Resources written into the EHR"),
            AuditAction::MemberMatchRefused => ("E", "operation", "Member match refused"),
        }
    }
}

/// How it ended (FHIR `AuditEvent.outcome`: 0, 4, 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditOutcome {
    Success,
    /// Refused or partly done: nothing unsafe happened, but not all that was asked.
    MinorFailure,
    SeriousFailure,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Success => "success",
            AuditOutcome::MinorFailure => "minor-failure",
            AuditOutcome::SeriousFailure => "serious-failure",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Success, Self::MinorFailure, Self::SeriousFailure]
            .into_iter()
            .find(|o| o.as_str() == text)
    }

    fn fhir(self) -> &'static str {
        match self {
            AuditOutcome::Success => "0",
            AuditOutcome::MinorFailure => "4",
            AuditOutcome::SeriousFailure => "8",
        }
    }
}

/// One audited access.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub action: AuditAction,
    pub outcome: AuditOutcome,
    /// The user's `fhirUser`, as the EHR gave it.
    pub user: Option<String>,
    /// The configured EHR's id and its FHIR base.
    pub ehr: String,
    pub ehr_base: String,
    /// The patient's id in that EHR.
    pub patient: String,
    /// The configured plan's id.
    pub plan: Option<String>,
    /// How many resources were read or written.
    pub count: u64,
    /// The resources concerned (`Type/id` at the EHR for writes, at the plan for reads).
    pub references: Vec<String>,
    /// A short reason for a failure or refusal (no patient data).
    pub note: Option<String>,
}

impl AuditEntry {
    /// The entry as a FHIR R4 `AuditEvent`, identified by its position in the log.
    pub fn to_fhir(&self, id: &str) -> Value {
        let (action, subtype, text) = self.action.fhir();
        let recorded =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.at_ms) * 1_000_000)
                .ok()
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                .unwrap_or_default();
        let mut entity = vec![json!({
            "what": { "reference": format!("{}/Patient/{}", self.ehr_base.trim_end_matches('/'), self.patient) },
            "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person" },
            "role": { "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient" },
        })];
        entity.extend(self.references.iter().map(|r| {
            json!({
                "what": { "reference": r },
                "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object" },
            })
        }));
        let mut agent = json!({
            "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "AUT" }] },
            "requestor": true,
        });
        if let Some(user) = &self.user {
            agent["who"] = json!({ "reference": user });
        }
        let mut event = json!({
            "resourceType": "AuditEvent",
            "id": id,
            "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation" },
            "subtype": [{ "system": "http://hl7.org/fhir/restful-interaction", "code": subtype }],
            "action": action,
            "recorded": recorded,
            "outcome": self.outcome.fhir(),
            "outcomeDesc": self.note.clone().unwrap_or_else(|| text.to_owned()),
            "agent": [agent],
            "source": {
                "site": self.ehr,
                "observer": { "display": "Member History" },
                "type": [{ "system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server" }],
            },
            "entity": entity,
            "extension": [{
                "url": "https://member-history.org/fhir/StructureDefinition/audit-detail",
                "extension": [
                    { "url": "action", "valueCode": self.action.as_str() },
                    { "url": "count", "valueUnsignedInt": self.count },
                ],
            }],
        });
        if let Some(plan) = &self.plan {
            if let Some(entities) = event["entity"].as_array_mut() {
                entities.push(json!({
                    "what": { "display": plan },
                    "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "3", "display": "Organization" },
                    "name": plan,
                }));
            }
        }
        event
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_entry_becomes_an_r4_audit_event_with_its_required_elements() {
        let entry = AuditEntry {
            at_ms: 1_790_000_000_123,
            action: AuditAction::EmrWrite,
            outcome: AuditOutcome::Success,
            user: Some("Practitioner/p1".into()),
            ehr: "sandbox".into(),
            ehr_base: "http://ehr.test/fhir/".into(),
            patient: "pat-1".into(),
            plan: Some("sandbox-plan".into()),
            count: 2,
            references: vec!["Condition/c1".into(), "Provenance/v1".into()],
            note: None,
        };
        let event = entry.to_fhir("7");
        assert_eq!(event["resourceType"], "AuditEvent");
        assert_eq!(event["type"]["code"], "rest");
        assert_eq!(event["action"], "C");
        assert_eq!(event["outcome"], "0");
        assert!(event["recorded"].as_str().unwrap().starts_with("2026-"));
        assert_eq!(event["agent"][0]["requestor"], true);
        assert_eq!(event["agent"][0]["who"]["reference"], "Practitioner/p1");
        assert!(event["source"]["observer"].is_object());
        assert_eq!(event["entity"][0]["what"]["reference"], "http://ehr.test/fhir/Patient/pat-1");
        assert_eq!(event["entity"].as_array().unwrap().len(), 4);
        assert_eq!(AuditAction::parse("emr-write"), Some(AuditAction::EmrWrite));
    }
}
