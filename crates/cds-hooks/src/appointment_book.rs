//! The `appointment-book` hook (hooks library 1.0): `userId`, `patientId`, `encounterId`
//! (optional) and `appointments`, a Bundle of proposed Appointments.

use serde_json::{json, Value};

use crate::model::HookRequest;

pub const HOOK: &str = "appointment-book";
/// The context keys the hook requires (`encounterId` is optional).
pub const REQUIRED_CONTEXT: [&str; 3] = ["userId", "patientId", "appointments"];

/// One proposed Appointment for `patient_id`, with the user as the other participant.
/// `start`/`end` are left out: the spec allows a proposed appointment without them (app-3),
/// and an ad-hoc history request has no real slot.
pub fn proposed_appointment(id: &str, patient_id: &str, user_id: &str, description: &str) -> Value {
    json!({
        "resourceType": "Appointment",
        "id": id,
        "status": "proposed",
        "description": description,
        "participant": [
            {"actor": {"reference": format!("Patient/{patient_id}")}, "status": "needs-action"},
            {"actor": {"reference": user_id}, "status": "accepted"}
        ]
    })
}

/// The hook context. `user_id` is `Type/id`; `patient_id` and `encounter_id` are plain ids.
pub fn context(
    user_id: &str,
    patient_id: &str,
    encounter_id: Option<&str>,
    appointments: Vec<Value>,
) -> Value {
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": appointments.into_iter().map(|a| json!({"resource": a})).collect::<Vec<_>>(),
    });
    let mut context = json!({"userId": user_id, "patientId": patient_id, "appointments": bundle});
    if let Some(encounter) = encounter_id {
        context["encounterId"] = json!(encounter);
    }
    context
}

/// A request with a fresh `hookInstance`.
pub fn request(fhir_server: &str, context: Value) -> HookRequest {
    HookRequest {
        hook: HOOK.into(),
        hook_instance: uuid::Uuid::new_v4().to_string(),
        fhir_server: Some(fhir_server.to_owned()),
        fhir_authorization: None,
        context,
        prefetch: None,
        extension: None,
        proposed: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_has_every_required_field() {
        let appointment = proposed_appointment("a1", "p1", "Practitioner/u1", "History request");
        let c = context("Practitioner/u1", "p1", Some("e1"), vec![appointment]);
        assert_eq!(c["userId"], "Practitioner/u1");
        assert_eq!(c["patientId"], "p1");
        assert_eq!(c["encounterId"], "e1");
        assert_eq!(c["appointments"]["resourceType"], "Bundle");
        assert_eq!(c["appointments"]["entry"][0]["resource"]["status"], "proposed");
        let c = context("Practitioner/u1", "p1", None, vec![]);
        assert!(c.get("encounterId").is_none());
    }

    #[test]
    fn hook_instances_are_fresh_uuids() {
        let a = request("https://ehr/fhir", json!({}));
        let b = request("https://ehr/fhir", json!({}));
        assert_ne!(a.hook_instance, b.hook_instance);
        assert!(uuid::Uuid::parse_str(&a.hook_instance).is_ok());
    }
}
