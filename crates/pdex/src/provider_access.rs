//! The Da Vinci PDex Provider Access API (STU 2.2, CMS-0057-F) as plain FHIR shapes: the
//! `$provider-member-match` request (one `MemberBundle` per patient: the EMR's demographics,
//! its Coverage and the clinician's treatment attestation), its three Groups back, and the
//! `$davinci-data-export` request. The HTTP side is `bulk`'s; the flow is the service's.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The operation that matches members (on the Group type).
pub const MEMBER_MATCH: &str = "Group/$provider-member-match";

/// The code system of PDex export types.
pub const EXPORT_TYPE_SYSTEM: &str = "hl7.fhir.us.davinci-pdex";

/// Consent scope and category codes of the Provider Treatment Attestation.
const CONSENT_SCOPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
const LOINC: &str = "http://loinc.org";
const PURPOSE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
/// The NPI identifier system.
pub const NPI_SYSTEM: &str = "http://hl7.org/fhir/sid/us-npi";

/// What an export is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportType {
    /// Everything, to import into the chart.
    Download,
    /// Everything, to view only.
    Snapshot,
    /// What changed since a patient's earlier import (`_since`).
    Delta,
}

impl ExportType {
    /// The `exportType` value.
    pub fn code(self) -> &'static str {
        match self {
            ExportType::Download => "hl7.fhir.us.davinci-pdex#provider-download",
            ExportType::Snapshot => "hl7.fhir.us.davinci-pdex#provider-snapshot",
            ExportType::Delta => "hl7.fhir.us.davinci-pdex#provider-delta",
        }
    }

    /// Reads a code, with or without the system prefix.
    pub fn parse(code: &str) -> Option<Self> {
        let code = code.rsplit('#').next().unwrap_or(code);
        match code {
            "provider-download" => Some(ExportType::Download),
            "provider-snapshot" => Some(ExportType::Snapshot),
            "provider-delta" => Some(ExportType::Delta),
            _ => None,
        }
    }
}

/// The clinician's attestation of a treatment relationship.
#[derive(Debug, Clone)]
pub struct Attestation<'a> {
    /// The clinician's NPI (from the EMR's Practitioner).
    pub npi: &'a str,
    pub clinician_name: Option<&'a str>,
    /// When the attestation is made (FHIR dateTime).
    pub at: &'a str,
    /// The treatment period it covers (FHIR dates).
    pub period_start: &'a str,
    pub period_end: &'a str,
}

/// The HRex Patient demographics the plan matches on: identifiers, name, telecom, gender,
/// birth date and address of the EMR's Patient, nothing else of the chart.
pub fn member_patient(patient: &Value) -> Value {
    let mut out = Map::new();
    out.insert("resourceType".into(), json!("Patient"));
    out.insert("id".into(), json!("member"));
    for key in ["identifier", "name", "telecom", "gender", "birthDate", "address"] {
        if let Some(value) = patient.get(key) {
            out.insert(key.into(), value.clone());
        }
    }
    Value::Object(out)
}

/// The EMR's Coverage as HRex `CoverageToMatch`: what identifies the coverage, its
/// beneficiary pointed at the `MemberPatient`.
pub fn coverage_to_match(coverage: &Value) -> Value {
    let mut out = Map::new();
    out.insert("resourceType".into(), json!("Coverage"));
    out.insert("id".into(), json!("coverage"));
    for key in
        ["identifier", "status", "type", "subscriberId", "relationship", "period", "payor", "class"]
    {
        if let Some(value) = coverage.get(key) {
            out.insert(key.into(), value.clone());
        }
    }
    out.entry("status").or_insert(json!("active"));
    out.insert("beneficiary".into(), json!({"reference": "Patient/member"}));
    // `payor` is 1..*: a Coverage without one still says whose it is, by display.
    out.entry("payor").or_insert(json!([{"display": "unknown"}]));
    Value::Object(out)
}

/// The Provider Treatment Attestation: a `Consent` (scope `patient-privacy`) by the
/// clinician, for the member, over the treatment period, for treatment.
pub fn treatment_attestation(attestation: &Attestation<'_>) -> Value {
    let mut performer = json!({
        "identifier": {"system": NPI_SYSTEM, "value": attestation.npi},
    });
    if let Some(name) = attestation.clinician_name {
        performer["display"] = json!(name);
    }
    json!({
        "resourceType": "Consent",
        "id": "attestation",
        "status": "active",
        "scope": {"coding": [{"system": CONSENT_SCOPE_SYSTEM, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": LOINC, "code": "64292-6", "display": "Release of information consent"}]}],
        "patient": {"reference": "Patient/member"},
        "dateTime": attestation.at,
        "performer": [performer],
        "policy": [{"uri": "https://www.cms.gov/priorities/key-initiatives/burden-reduction/interoperability/policies-and-regulations/cms-interoperability-and-prior-authorization-final-rule-cms-0057-f"}],
        "provision": {
            "type": "permit",
            "period": {"start": attestation.period_start, "end": attestation.period_end},
            "actor": [{
                "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
                "reference": performer,
            }],
            "purpose": [{"system": PURPOSE_SYSTEM, "code": "TREAT", "display": "treatment"}],
        },
    })
}

/// The `$provider-member-match` request for one patient.
pub fn member_match_request(patient: &Value, coverage: &Value, attestation: &Attestation) -> Value {
    json!({
        "resourceType": "Parameters",
        "parameter": [{
            "name": "MemberBundle",
            "part": [
                {"name": "MemberPatient", "resource": member_patient(patient)},
                {"name": "CoverageToMatch", "resource": coverage_to_match(coverage)},
                {"name": "Consent", "resource": treatment_attestation(attestation)},
            ],
        }],
    })
}

/// Which of the three answers a Group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupKind {
    Matched,
    NonMatched,
    /// The plan matched the member but may not share their data (the member opted out, or
    /// another constraint). Said only when the plan itself says so.
    ConsentConstrained,
}

impl GroupKind {
    /// From an output parameter's name.
    fn from_parameter(name: &str) -> Option<Self> {
        match name {
            "MatchedMembers" => Some(GroupKind::Matched),
            "NonMatchedMembers" => Some(GroupKind::NonMatched),
            "ConsentConstrainedMembers" => Some(GroupKind::ConsentConstrained),
            _ => None,
        }
    }

    /// From a Group on its own (an NDJSON file of a manifest): its profile, else its code.
    pub fn of_group(group: &Value) -> Option<Self> {
        let profiles = group.pointer("/meta/profile").and_then(Value::as_array);
        let codes = group.pointer("/code/coding").and_then(Value::as_array);
        let words: Vec<String> = profiles
            .into_iter()
            .flatten()
            .chain(codes.into_iter().flatten().filter_map(|c| c.get("code")))
            .filter_map(Value::as_str)
            .map(|s| s.to_ascii_lowercase().replace(['-', '_'], ""))
            .collect();
        let has = |needle: &str| words.iter().any(|w| w.contains(needle));
        if has("consent") || has("optout") {
            Some(GroupKind::ConsentConstrained)
        } else if has("nomatch") || has("nonmatch") || has("notmatch") {
            Some(GroupKind::NonMatched)
        } else if has("match") || has("treatmentrelationship") || has("attribution") {
            Some(GroupKind::Matched)
        } else {
            None
        }
    }
}

/// What the plan answered about the member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchAnswer {
    /// Matched: the Group to export from, and the member's Patient at the plan when the
    /// Group names it.
    Matched {
        group_id: String,
        member: Option<String>,
    },
    NotMatched,
    ConsentConstrained,
}

/// A match answer the plan sent that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchShapeError {
    #[error("the plan's match answer is neither Parameters nor Groups")]
    Unrecognised,
    #[error("the plan matched the member but its Group has no id to export from")]
    GroupWithoutId,
}

/// Reads the match answer: a Parameters resource with `MatchedMembers`,
/// `NonMatchedMembers` and `ConsentConstrainedMembers` Groups, or the Groups themselves (a
/// manifest's files). A request for one patient has one answer: a matched Group wins over a
/// non-matched one only when it has members (some plans send all three, two empty).
pub fn read_match_answer(resources: &[Value]) -> Result<MatchAnswer, MatchShapeError> {
    let mut groups: Vec<(GroupKind, &Value)> = Vec::new();
    for resource in resources {
        match resource.get("resourceType").and_then(Value::as_str) {
            Some("Parameters") => {
                for parameter in
                    resource.get("parameter").and_then(Value::as_array).into_iter().flatten()
                {
                    let kind = parameter
                        .get("name")
                        .and_then(Value::as_str)
                        .and_then(GroupKind::from_parameter);
                    if let (Some(kind), Some(group)) = (kind, parameter.get("resource")) {
                        groups.push((kind, group));
                    }
                }
            }
            Some("Group") => {
                if let Some(kind) = GroupKind::of_group(resource) {
                    groups.push((kind, resource));
                }
            }
            _ => {}
        }
    }
    if groups.is_empty() {
        return Err(MatchShapeError::Unrecognised);
    }
    let populated = |kind: GroupKind| {
        groups.iter().find(|(k, g)| *k == kind && members(g).next().is_some()).map(|(_, g)| *g)
    };
    if let Some(group) = populated(GroupKind::Matched) {
        let group_id = group
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| fhir::resource::is_fhir_id(id))
            .ok_or(MatchShapeError::GroupWithoutId)?;
        let member = members(group).next().map(str::to_owned);
        return Ok(MatchAnswer::Matched { group_id: group_id.to_owned(), member });
    }
    if populated(GroupKind::ConsentConstrained).is_some() {
        return Ok(MatchAnswer::ConsentConstrained);
    }
    Ok(MatchAnswer::NotMatched)
}

/// The member references of a Group (`member.entity.reference`), as `Patient/id`.
fn members(group: &Value) -> impl Iterator<Item = &str> {
    group
        .get("member")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.pointer("/entity/reference").and_then(Value::as_str))
}

/// The plan's member Patient id from a Group member reference (`Patient/abc`, or absolute).
pub fn patient_id(reference: &str) -> Option<String> {
    fhir::Reference::parse(reference)
        .local()
        .and_then(|local| local.strip_prefix("Patient/").map(str::to_owned))
        .filter(|id| fhir::resource::is_fhir_id(id))
}

/// The operation that exports a matched Group's data.
pub fn export_operation(group_id: &str) -> String {
    format!("Group/{group_id}/$davinci-data-export")
}

/// What to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    pub export_type: ExportType,
    /// The member's Patient reference at the plan (`Patient/x`), when the Group named it.
    pub patient: Option<String>,
    /// Resource types; always sent (servers differ on the default).
    pub types: Vec<String>,
    /// FHIR instants.
    pub since: Option<String>,
    pub until: Option<String>,
}

impl ExportRequest {
    /// The review's types and their context, for `export_type`.
    pub fn new(export_type: ExportType, patient: Option<String>) -> Self {
        let mut types: Vec<String> =
            crate::kinds::KINDS.iter().map(|k| k.resource_type.to_owned()).collect();
        types.extend(crate::kinds::CONTEXT_TYPES.iter().map(|t| (*t).to_owned()));
        types.push("Coverage".into());
        Self { export_type, patient, types, since: None, until: None }
    }

    /// The `$davinci-data-export` Parameters.
    pub fn parameters(&self) -> Value {
        let mut parameter = Vec::new();
        if let Some(patient) = &self.patient {
            parameter.push(json!({"name": "patient", "valueReference": {"reference": patient}}));
        }
        parameter.push(json!({"name": "exportType", "valueCode": self.export_type.code()}));
        parameter.push(json!({"name": "_type", "valueString": self.types.join(",")}));
        if let Some(since) = &self.since {
            parameter.push(json!({"name": "_since", "valueInstant": since}));
        }
        if let Some(until) = &self.until {
            parameter.push(json!({"name": "_until", "valueInstant": until}));
        }
        json!({"resourceType": "Parameters", "parameter": parameter})
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn attestation() -> Attestation<'static> {
        Attestation {
            npi: "1234567893",
            clinician_name: Some("Dr Ada Lane"),
            at: "2026-12-04T10:00:00Z",
            period_start: "2026-12-04",
            period_end: "2027-12-04",
        }
    }

    #[test]
    fn the_match_request_carries_demographics_coverage_and_the_attestation_only() {
        let patient = json!({"resourceType": "Patient", "id": "emr-1", "name": [{"family": "Rivera"}], "birthDate": "1980-02-03", "gender": "female", "identifier": [{"system": "mrn", "value": "1"}], "extension": [{"url": "race"}], "generalPractitioner": [{"reference": "Practitioner/1"}]});
        let coverage = json!({"resourceType": "Coverage", "id": "cov", "subscriberId": "S1", "identifier": [{"type": {"coding": [{"code": "MB"}]}, "value": "M1"}], "payor": [{"reference": "Organization/p"}], "beneficiary": {"reference": "Patient/emr-1"}});
        let request = member_match_request(&patient, &coverage, &attestation());
        let bundle = &request["parameter"][0];
        assert_eq!(bundle["name"], "MemberBundle");
        let parts: Vec<&str> = bundle["part"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(parts, ["MemberPatient", "CoverageToMatch", "Consent"]);
        let member = &bundle["part"][0]["resource"];
        assert_eq!(member["birthDate"], "1980-02-03");
        assert!(member.get("extension").is_none() && member.get("generalPractitioner").is_none());
        let cov = &bundle["part"][1]["resource"];
        assert_eq!(cov["beneficiary"]["reference"], "Patient/member");
        assert_eq!(cov["status"], "active");
        let consent = &bundle["part"][2]["resource"];
        assert_eq!(consent["scope"]["coding"][0]["code"], "patient-privacy");
        assert_eq!(consent["patient"]["reference"], "Patient/member");
        assert_eq!(consent["performer"][0]["identifier"]["system"], NPI_SYSTEM);
        assert_eq!(consent["provision"]["period"]["end"], "2027-12-04");
        assert_eq!(consent["provision"]["purpose"][0]["code"], "TREAT");
        assert_eq!(consent["dateTime"], "2026-12-04T10:00:00Z");
    }

    fn group(id: &str, members: &[&str]) -> Value {
        json!({"resourceType": "Group", "id": id, "type": "person", "actual": true,
            "member": members.iter().map(|m| json!({"entity": {"reference": m}})).collect::<Vec<_>>()})
    }

    fn answer(matched: &[&str], non: &[&str], constrained: &[&str]) -> Value {
        json!({"resourceType": "Parameters", "parameter": [
            {"name": "MatchedMembers", "resource": group("g-match", matched)},
            {"name": "NonMatchedMembers", "resource": group("g-no", non)},
            {"name": "ConsentConstrainedMembers", "resource": group("g-cc", constrained)},
        ]})
    }

    #[test]
    fn reads_matched_not_matched_and_consent_constrained() {
        assert_eq!(
            read_match_answer(&[answer(&["Patient/mbr-1"], &[], &[])]).unwrap(),
            MatchAnswer::Matched {
                group_id: "g-match".into(),
                member: Some("Patient/mbr-1".into())
            }
        );
        assert_eq!(
            read_match_answer(&[answer(&[], &["Patient/member"], &[])]).unwrap(),
            MatchAnswer::NotMatched
        );
        assert_eq!(
            read_match_answer(&[answer(&[], &[], &["Patient/mbr-2"])]).unwrap(),
            MatchAnswer::ConsentConstrained
        );
        // A plan that folds opted-out members into the non-matched: not matched, nothing more.
        let only_non = json!({"resourceType": "Parameters", "parameter": [{"name": "NonMatchedMembers", "resource": group("g", &["Patient/member"])}]});
        assert_eq!(read_match_answer(&[only_non]).unwrap(), MatchAnswer::NotMatched);
    }

    #[test]
    fn reads_groups_from_a_manifest_by_profile_or_code() {
        let mut matched = group("g1", &["https://plan.example/fhir/Patient/mbr-1"]);
        matched["meta"] = json!({"profile": ["http://hl7.org/fhir/us/davinci-pdex/StructureDefinition/pdex-member-match-group"]});
        let mut none = group("g2", &[]);
        none["code"] = json!({"coding": [{"code": "nomatch"}]});
        let got = read_match_answer(&[none, matched]).unwrap();
        let MatchAnswer::Matched { group_id, member } = got else { panic!() };
        assert_eq!(group_id, "g1");
        assert_eq!(patient_id(&member.unwrap()).as_deref(), Some("mbr-1"));
        assert_eq!(
            read_match_answer(&[json!({"resourceType": "Bundle"})]),
            Err(MatchShapeError::Unrecognised)
        );
        let mut bad = answer(&["Patient/1"], &[], &[]);
        bad["parameter"][0]["resource"]["id"] = json!("../x");
        assert_eq!(read_match_answer(&[bad]), Err(MatchShapeError::GroupWithoutId));
    }

    #[test]
    fn the_export_request_names_its_type_and_every_resource_type() {
        let mut request = ExportRequest::new(ExportType::Delta, Some("Patient/mbr-1".into()));
        request.since = Some("2026-11-01T00:00:00Z".into());
        let p = request.parameters();
        let by = |name: &str| {
            p["parameter"].as_array().unwrap().iter().find(|x| x["name"] == name).cloned()
        };
        assert_eq!(
            by("exportType").unwrap()["valueCode"],
            "hl7.fhir.us.davinci-pdex#provider-delta"
        );
        assert_eq!(by("patient").unwrap()["valueReference"]["reference"], "Patient/mbr-1");
        let types = by("_type").unwrap()["valueString"].as_str().unwrap().to_owned();
        assert!(
            types.contains("ExplanationOfBenefit")
                && types.contains("Patient")
                && types.contains("Provenance")
        );
        assert_eq!(by("_since").unwrap()["valueInstant"], "2026-11-01T00:00:00Z");
        assert!(by("_until").is_none());
        assert_eq!(ExportType::parse("provider-snapshot"), Some(ExportType::Snapshot));
        assert_eq!(ExportType::parse(ExportType::Download.code()), Some(ExportType::Download));
        assert_eq!(export_operation("g1"), "Group/g1/$davinci-data-export");
    }
}
