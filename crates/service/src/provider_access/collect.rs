//! A member's resources read one at a time into review items, whichever route brought them
//! (a Provider Access export's files, a Bundle the plan pushed): each is checked against the
//! member as it comes, and only the newest items are kept, so memory does not grow with
//! what the plan sends.

use pdex::HistoryItem;
use serde_json::Value;

/// Reads resources (context first: Patient, parties, then the rest, Provenance last) into
/// the newest `capacity` review items of one member.
pub(crate) struct Collector {
    found: Found,
    items: pdex::export::ExportItems,
}

/// What the resources held.
pub(crate) struct Collected {
    /// The member's Patient id at the plan (named beforehand, else the data's one Patient).
    pub member: Option<String>,
    /// The member's Patient as the plan sent it.
    pub plan_patient: Option<Value>,
    /// Distinct Patients the data held.
    pub patients: usize,
    pub items: Vec<HistoryItem>,
    /// What was left out, in the clinician's words.
    pub notes: Vec<String>,
}

impl Collector {
    /// `member`: the member's Patient id when the plan named it (a member match).
    pub fn new(member: Option<String>, capacity: usize) -> Self {
        Collector {
            found: Found { member, plan_patient: None, patients: Vec::new(), others: 0 },
            items: pdex::export::ExportItems::new(capacity),
        }
    }

    pub fn add(&mut self, resource: Value) {
        if let Some(resource) = self.found.keep(resource) {
            self.items.add(resource);
        }
    }

    /// The items, newest first; `plan` and `what` ("export", "pushed history") word the notes.
    pub fn finish(self, plan: &str, what: &str) -> Collected {
        let mut notes = Vec::new();
        if self.found.others > 0 {
            notes.push(format!(
                "{} records in {plan}'s {what} were about another person, or about nobody the plan named, and were left out.",
                self.found.others
            ));
        }
        let collected = self.items.finish();
        if collected.left_out > 0 {
            notes.push(format!(
                "{plan}'s {what} holds {} more records, older than the {} shown here; they were not kept for review.",
                collected.left_out,
                collected.items.len()
            ));
        }
        Collected {
            member: self.found.member,
            plan_patient: self.found.plan_patient,
            patients: self.found.patients.len(),
            items: collected.items,
            notes,
        }
    }
}

/// Whose the resources are, learnt as they are read: the member the plan named,
/// else the data's one Patient (Patients are read first).
struct Found {
    member: Option<String>,
    plan_patient: Option<Value>,
    patients: Vec<String>,
    others: usize,
}

impl Found {
    /// `resource`, unless it is about another person than the member (a plan's mistake is
    /// not shown) or nobody is known to be the member yet.
    fn keep(&mut self, resource: Value) -> Option<Value> {
        if resource.get("resourceType").and_then(Value::as_str) == Some("Patient") {
            let id = resource.get("id").and_then(Value::as_str).map(str::to_owned);
            match (&self.member, id) {
                (Some(member), Some(id)) if *member == id => {
                    self.plan_patient = Some(resource.clone());
                    return Some(resource);
                }
                (None, Some(id)) if self.patients.is_empty() => {
                    self.patients.push(id);
                    self.plan_patient = Some(resource.clone());
                    return Some(resource);
                }
                (None, Some(id)) => {
                    // Two Patients and the plan named neither: the export is nobody's.
                    self.patients.push(id);
                    self.plan_patient = None;
                }
                _ => {}
            }
            self.others += 1;
            return None;
        }
        if self.member.is_none() && self.patients.len() == 1 {
            self.member = self.patients.first().cloned();
        }
        let Some(member) = self.member.as_deref() else {
            self.others += 1;
            return None;
        };
        if about_other(&resource, member) {
            self.others += 1;
            return None;
        }
        Some(resource)
    }
}

/// Whether `r` names a Patient other than `member` as its subject.
fn about_other(r: &Value, member: &str) -> bool {
    let own = format!("Patient/{member}");
    ["/subject/reference", "/patient/reference", "/beneficiary/reference"]
        .iter()
        .filter_map(|p| r.pointer(p).and_then(Value::as_str))
        .filter_map(|reference| fhir::Reference::parse(reference).local())
        .any(|local| local.starts_with("Patient/") && local != own)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn condition(id: &str, patient: &str) -> Value {
        json!({"resourceType": "Condition", "id": id, "subject": {"reference": format!("Patient/{patient}")},
               "recordedDate": "2025-01-01", "code": {"text": "Asthma"}})
    }

    #[test]
    fn the_ones_patient_is_the_member_and_another_persons_records_are_left_out() {
        let mut collector = Collector::new(None, 100);
        collector.add(json!({"resourceType": "Patient", "id": "m1"}));
        collector.add(condition("c1", "m1"));
        collector.add(condition("c2", "someone-else"));
        let collected = collector.finish("Plan", "pushed history");
        assert_eq!(collected.member.as_deref(), Some("m1"));
        assert_eq!(collected.patients, 1);
        let keys: Vec<&str> = collected.items.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["Condition/c1"], "the member's record only (the Patient is context)");
        assert!(
            collected.notes[0].starts_with("1 records in Plan's pushed history"),
            "{:?}",
            collected.notes
        );
    }

    #[test]
    fn two_patients_and_no_named_member_is_nobodys_data() {
        let mut collector = Collector::new(None, 100);
        collector.add(json!({"resourceType": "Patient", "id": "m1"}));
        collector.add(json!({"resourceType": "Patient", "id": "m2"}));
        collector.add(condition("c1", "m1"));
        let collected = collector.finish("Plan", "export");
        assert_eq!(collected.patients, 2);
        assert!(collected.member.is_none() && collected.plan_patient.is_none());
    }
}
