//! Da Vinci PDex conventions around the `appointment-book` hook: how the member is named in
//! the request (member id, else the Coverage with subscriber id and the beneficiary's
//! demographics — sent in the request's `extension`), and how a plan's answer points at the
//! member's data (PDex 2.x: a `smart` link's `appContext`; STU1: a card carrying the plan's
//! FHIR base and an access token). PDex names neither set of JSON keys, so both the plain and
//! the `davinci-pdex.`-prefixed spellings are read.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::model::{Card, LinkType};

/// `Coverage.identifier` typed `MB` (v2-0203 "Member Number").
pub fn member_id(coverage: &Value) -> Option<&str> {
    fhir::first_identifier_of_type(coverage, "MB")?.get("value")?.as_str().filter(|s| !s.is_empty())
}

/// `Coverage.subscriberId`.
pub fn subscriber_id(coverage: &Value) -> Option<&str> {
    coverage.get("subscriberId")?.as_str().filter(|s| !s.is_empty())
}

/// The least of the beneficiary a plan needs to match a member: name, birth date, sex.
pub fn beneficiary_demographics(patient: &Value) -> Value {
    let mut out = json!({"resourceType": "Patient", "id": "beneficiary"});
    for key in ["name", "birthDate", "gender"] {
        if let Some(v) = patient.get(key) {
            out[key] = v.clone();
        }
    }
    out
}

/// The request `extension` naming the member: `memberId` when known, and the Coverage with
/// the beneficiary's demographics contained in it (so a plan can match on subscriber id and
/// demographics when there is no member id). The Coverage's own contained resources (a
/// `#org` payor, a subscriber) stay: only the beneficiary is added, under an id not taken.
pub fn request_extension(
    member_id: Option<&str>,
    coverage: Option<&Value>,
    beneficiary: Option<&Value>,
) -> Value {
    let mut extension = json!({});
    if let Some(id) = member_id {
        extension["memberId"] = json!(id);
    }
    if let Some(coverage) = coverage {
        let mut coverage = coverage.clone();
        if let Some(patient) = beneficiary {
            let mut contained: Vec<Value> =
                coverage.get("contained").and_then(Value::as_array).cloned().unwrap_or_default();
            // A beneficiary already contained is replaced, not doubled.
            if let Some(own) = coverage.pointer("/beneficiary/reference").and_then(Value::as_str) {
                if let Some(own) = own.strip_prefix('#') {
                    contained.retain(|c| c.get("id").and_then(Value::as_str) != Some(own));
                }
            }
            let taken = |id: &str| {
                contained.iter().any(|c| c.get("id").and_then(Value::as_str) == Some(id))
            };
            let id = std::iter::once("beneficiary".to_owned())
                .chain((2..).map(|n| format!("beneficiary-{n}")))
                .find(|id| !taken(id))
                .unwrap_or_default();
            let mut demographics = beneficiary_demographics(patient);
            demographics["id"] = json!(id);
            contained.push(demographics);
            coverage["contained"] = Value::Array(contained);
            coverage["beneficiary"] = json!({"reference": format!("#{id}")});
        }
        extension["coverage"] = coverage;
    }
    extension
}

/// Where a plan says the member's data is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDataPointer {
    /// The plan's FHIR base.
    pub fhir_server: String,
    /// The member's Patient id at the plan.
    pub patient: String,
    pub member_id: Option<String>,
    /// An access token to the plan's FHIR API, when the plan handed one out.
    pub access_token: Option<String>,
    pub expires_in: Option<u64>,
}

fn field<'a>(object: &'a Value, names: &[&str]) -> Option<&'a Value> {
    names.iter().find_map(|n| object.get(*n).or_else(|| object.get(format!("davinci-pdex.{n}"))))
}

fn string(object: &Value, names: &[&str]) -> Option<String> {
    field(object, names).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

fn pointer_from(object: &Value) -> Option<PlanDataPointer> {
    Some(PlanDataPointer {
        fhir_server: string(object, &["fhirServer", "fhir_server", "fhirBase"])?,
        patient: string(object, &["patient", "patientId"])?,
        member_id: string(object, &["memberId"]),
        access_token: string(object, &["accessToken", "access_token"]),
        expires_in: field(object, &["tokenExpiresIn", "expires_in"]).and_then(Value::as_u64),
    })
}

/// Reads an `appContext` (a JSON object in a string).
pub fn pointer_from_app_context(app_context: &str) -> Option<PlanDataPointer> {
    serde_json::from_str::<Value>(app_context).ok().as_ref().and_then(pointer_from)
}

/// Reads a card: a `smart` link's `appContext` (PDex 2.x), else the card's `extension`
/// (PDex STU1: FHIR base and access token).
pub fn pointer_from_card(card: &Card) -> Option<PlanDataPointer> {
    card.links
        .iter()
        .filter(|l| l.link_type == LinkType::Smart)
        .find_map(|l| l.app_context.as_deref().and_then(pointer_from_app_context))
        .or_else(|| card.extension.as_ref().and_then(pointer_from))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn coverage(with_member_id: bool) -> Value {
        let mut c = json!({"resourceType": "Coverage", "id": "c1", "subscriberId": "SUB1",
            "beneficiary": {"reference": "Patient/p1"}, "payor": [{"reference": "Organization/o1"}]});
        if with_member_id {
            c["identifier"] = json!([{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB"}]}, "value": "M123"}]);
        }
        c
    }

    #[test]
    fn member_id_else_subscriber_with_demographics() {
        assert_eq!(member_id(&coverage(true)), Some("M123"));
        assert_eq!(member_id(&coverage(false)), None);
        assert_eq!(subscriber_id(&coverage(false)), Some("SUB1"));
        let patient = json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Ng"}], "birthDate": "1990-01-01",
            "gender": "female", "telecom": [{"value": "555"}], "address": [{"city": "X"}]});
        let ext = request_extension(None, Some(&coverage(false)), Some(&patient));
        assert!(ext.get("memberId").is_none());
        assert_eq!(ext["coverage"]["beneficiary"]["reference"], "#beneficiary");
        let contained = &ext["coverage"]["contained"][0];
        assert_eq!(contained["birthDate"], "1990-01-01");
        assert!(
            contained.get("telecom").is_none() && contained.get("address").is_none(),
            "only what matching needs"
        );
        let ext = request_extension(Some("M123"), None, None);
        assert_eq!(ext, json!({"memberId": "M123"}));
    }

    #[test]
    fn coverage_keeps_its_contained_resources() {
        let mut cov = coverage(false);
        cov["contained"] = json!([
            {"resourceType": "Organization", "id": "org", "name": "Plan"},
            {"resourceType": "Patient", "id": "beneficiary", "name": [{"family": "Subscriber"}]}
        ]);
        cov["payor"] = json!([{"reference": "#org"}]);
        cov["subscriber"] = json!({"reference": "#beneficiary"});
        let patient = json!({"resourceType": "Patient", "birthDate": "1980-02-03"});
        let ext = request_extension(None, Some(&cov), Some(&patient));
        let contained = ext["coverage"]["contained"].as_array().unwrap();
        assert_eq!(contained.len(), 3, "{contained:?}");
        assert_eq!(contained[0]["id"], "org");
        assert_eq!(contained[1]["name"][0]["family"], "Subscriber");
        assert_eq!(contained[2]["id"], "beneficiary-2");
        assert_eq!(contained[2]["birthDate"], "1980-02-03");
        assert_eq!(ext["coverage"]["beneficiary"]["reference"], "#beneficiary-2");
        assert_eq!(ext["coverage"]["payor"][0]["reference"], "#org");
        // Sent again (a retry): the beneficiary it added is replaced, not doubled.
        let again = request_extension(None, Some(&ext["coverage"]), Some(&patient));
        assert_eq!(again["coverage"]["contained"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn reads_both_answer_styles() {
        let pdex2: Card = serde_json::from_value(json!({"summary": "s", "indicator": "info", "source": {"label": "P"},
            "links": [{"label": "l", "url": "https://app/launch", "type": "smart",
                "appContext": "{\"fhirServer\":\"https://plan/fhir\",\"patient\":\"m1\",\"memberId\":\"M1\"}"}]})).unwrap();
        let p = pointer_from_card(&pdex2).unwrap();
        assert_eq!((p.fhir_server.as_str(), p.patient.as_str()), ("https://plan/fhir", "m1"));
        assert_eq!(p.access_token, None);
        let stu1: Card = serde_json::from_value(json!({"summary": "s", "indicator": "info", "source": {"label": "P"},
            "extension": {"davinci-pdex.fhirServer": "https://plan/fhir", "davinci-pdex.accessToken": "tok",
                          "davinci-pdex.patient": "m1", "davinci-pdex.tokenExpiresIn": 300}})).unwrap();
        let p = pointer_from_card(&stu1).unwrap();
        assert_eq!(p.access_token.as_deref(), Some("tok"));
        assert_eq!(p.expires_in, Some(300));
        assert!(pointer_from_app_context("not json").is_none());
    }
}
