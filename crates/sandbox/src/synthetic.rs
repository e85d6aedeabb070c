//! Deterministic synthetic people: the same seed always gives the same patients, MRNs, member
//! ids and coverage, so tests can name them and the EHR and the plan agree on who is who.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// Identifier systems used by the sandbox.
pub mod systems {
    pub const MRN: &str = "http://sandbox-ehr.member-history.example/mrn";
    pub const MEMBER_ID: &str = "http://sandbox-plan.member-history.example/member-id";
    pub const SUBSCRIBER_ID: &str = "http://sandbox-plan.member-history.example/subscriber-id";
    pub const NPI: &str = "http://hl7.org/fhir/sid/us-npi";
    pub const PAYER_ID: &str = "http://sandbox-plan.member-history.example/payer-id";
    pub const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
}

/// The health plan every covered sandbox patient belongs to (unless noted).
pub const PLAN_PAYER_ID: &str = "SBXHP";
pub const PLAN_NAME: &str = "Sandbox Health Plan";
/// A plan no one configures: patients covered only by it have no plan to ask.
pub const OTHER_PAYER_ID: &str = "NWMUT";
pub const OTHER_PLAN_NAME: &str = "Northwind Mutual";
/// The clinic running the sandbox EHR.
pub const CLINIC_ID: &str = "clinic";
pub const CLINIC_NAME: &str = "Riverside Family Medicine";
pub const CLINIC_NPI: &str = "1407993356";

const GIVEN_FEMALE: &[&str] = &[
    "Ada", "Beatriz", "Chloe", "Danielle", "Esther", "Farah", "Grace", "Hana", "Ines", "Julia",
    "Keiko", "Lucia", "Mariam", "Nadia", "Olivia", "Priya", "Rosa", "Sofia", "Tamar", "Uma",
];
const GIVEN_MALE: &[&str] = &[
    "Aaron", "Bilal", "Carlos", "Daniel", "Emeka", "Felix", "George", "Hiroshi", "Ivan", "Jamal",
    "Kwame", "Liam", "Mateo", "Noah", "Omar", "Pedro", "Rahul", "Samuel", "Tomas", "Victor",
];
const FAMILY: &[&str] = &[
    "Okafor",
    "Nguyen",
    "Garcia",
    "Smith",
    "Kowalski",
    "Haddad",
    "Johansson",
    "Patel",
    "Tanaka",
    "Rossi",
    "Mensah",
    "O'Brien",
    "Dubois",
    "Schmidt",
    "Silva",
    "Cohen",
    "Ivanova",
    "Kim",
    "Hernandez",
    "Walker",
];
const STREETS: &[&str] =
    &["Oak Street", "Maple Avenue", "River Road", "Hill Crest Drive", "Elm Court", "Station Lane"];
const CITIES: &[(&str, &str, &str)] = &[
    ("Springfield", "IL", "62701"),
    ("Madison", "WI", "53703"),
    ("Columbus", "OH", "43215"),
    ("Ann Arbor", "MI", "48104"),
];

/// How a person's coverage looks in the EHR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoverageKind {
    /// Coverage with the plan's member id (identifier typed MB) and subscriber id.
    MemberId,
    /// Coverage with a subscriber id only: the plan must match on demographics.
    SubscriberOnly,
    /// Covered by a plan that is not configured in the app.
    OtherPlan,
    /// No coverage on file: the clinician must type the member id.
    None,
}

/// One synthetic person, known to both the EHR (as a patient) and the plan (as a member).
#[derive(Debug, Clone)]
pub struct Person {
    pub index: usize,
    pub patient_id: String,
    pub given: Vec<String>,
    pub family: String,
    pub gender: &'static str,
    pub birth_date: String,
    pub mrn: String,
    pub member_id: String,
    pub subscriber_id: String,
    pub coverage: CoverageKind,
    pub line: String,
    pub city: &'static str,
    pub state: &'static str,
    pub postal_code: &'static str,
    pub phone: String,
}

impl Person {
    pub fn display_name(&self) -> String {
        format!("{} {}", self.given.join(" "), self.family)
    }
}

/// A practitioner of the sandbox clinic.
#[derive(Debug, Clone)]
pub struct Clinician {
    pub id: String,
    pub given: &'static str,
    pub family: &'static str,
    pub npi: &'static str,
}

pub fn clinicians() -> Vec<Clinician> {
    vec![
        Clinician {
            id: "prac-alvarez".into(),
            given: "Maria",
            family: "Alvarez",
            npi: "1234567893",
        },
        Clinician { id: "prac-chen".into(), given: "Wei", family: "Chen", npi: "1245319599" },
        Clinician { id: "prac-osei".into(), given: "Kofi", family: "Osei", npi: "1568492801" },
    ]
}

/// `count` people from `seed`. The coverage kinds cycle so every kind is present from six
/// people on; the last person has no coverage.
pub fn population(seed: u64, count: usize) -> Vec<Person> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|index| {
            let female = rng.gen_bool(0.5);
            let pool = if female { GIVEN_FEMALE } else { GIVEN_MALE };
            let given = vec![pick(&mut rng, pool).to_owned()];
            let family = pick(&mut rng, FAMILY).to_owned();
            let year = rng.gen_range(1938..2012);
            let month = rng.gen_range(1..=12);
            let day = rng.gen_range(1..=28);
            let (city, state, postal_code) = *CITIES.choose(&mut rng).unwrap_or(&CITIES[0]);
            let coverage = if index + 1 == count && count > 1 {
                CoverageKind::None
            } else {
                match index % 6 {
                    4 => CoverageKind::SubscriberOnly,
                    5 => CoverageKind::OtherPlan,
                    _ => CoverageKind::MemberId,
                }
            };
            Person {
                index,
                patient_id: format!("pat-{:03}", index + 1),
                given,
                family,
                gender: if female { "female" } else { "male" },
                birth_date: format!("{year:04}-{month:02}-{day:02}"),
                mrn: format!("MRN{:06}", rng.gen_range(100_000..999_999)),
                member_id: format!("SBX{:08}", rng.gen_range(10_000_000..99_999_999)),
                subscriber_id: format!("SUB{:08}", rng.gen_range(10_000_000..99_999_999)),
                coverage,
                line: format!("{} {}", rng.gen_range(1..999), pick(&mut rng, STREETS)),
                city,
                state,
                postal_code,
                phone: format!("555-{:04}", rng.gen_range(1000..9999)),
            }
        })
        .collect()
}

fn pick<'a>(rng: &mut ChaCha8Rng, pool: &'a [&'a str]) -> &'a str {
    pool.choose(rng).copied().unwrap_or("")
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

/// The Patient resource for `person` (as the EHR holds it, with its MRN).
pub fn patient_resource(person: &Person, id: &str, identifier: Value) -> Value {
    json!({
        "resourceType": "Patient",
        "id": id,
        "identifier": [identifier],
        "active": true,
        "name": [{"use": "official", "family": person.family, "given": person.given}],
        "gender": person.gender,
        "birthDate": person.birth_date,
        "telecom": [{"system": "phone", "value": person.phone, "use": "home"}],
        "address": [{"use": "home", "line": [person.line], "city": person.city, "state": person.state, "postalCode": person.postal_code, "country": "US"}],
    })
}

pub fn organization(id: &str, name: &str, identifier: Value, payer: bool) -> Value {
    let kind = if payer { ("pay", "Payer") } else { ("prov", "Healthcare Provider") };
    json!({
        "resourceType": "Organization",
        "id": id,
        "identifier": [identifier],
        "active": true,
        "type": [{"coding": [coding("http://terminology.hl7.org/CodeSystem/organization-type", kind.0, kind.1)]}],
        "name": name,
    })
}

/// Everything the sandbox EHR holds at start: the clinic, both payers, clinicians, and for
/// each person a Patient, Coverage (per its kind) and two past Encounters.
pub fn ehr_resources(people: &[Person]) -> Vec<Value> {
    let mut out = vec![
        organization(
            CLINIC_ID,
            CLINIC_NAME,
            json!({"system": systems::NPI, "value": CLINIC_NPI}),
            false,
        ),
        organization(
            "payer-sbx",
            PLAN_NAME,
            json!({"system": systems::PAYER_ID, "value": PLAN_PAYER_ID}),
            true,
        ),
        organization(
            "payer-nw",
            OTHER_PLAN_NAME,
            json!({"system": systems::PAYER_ID, "value": OTHER_PAYER_ID}),
            true,
        ),
    ];
    for c in clinicians() {
        out.push(json!({
            "resourceType": "Practitioner",
            "id": c.id,
            "identifier": [{"system": systems::NPI, "value": c.npi}],
            "active": true,
            "name": [{"use": "official", "family": c.family, "given": [c.given], "prefix": ["Dr."]}],
        }));
    }
    for p in people {
        let mrn = json!({
            "use": "usual",
            "type": {"coding": [coding(systems::V2_0203, "MR", "Medical record number")]},
            "system": systems::MRN,
            "value": p.mrn,
        });
        out.push(patient_resource(p, &p.patient_id, mrn));
        if let Some(coverage) = ehr_coverage(p) {
            out.push(coverage);
        }
        for (n, (resource_type, system, code, display, date)) in
            shared_items(p).into_iter().enumerate()
        {
            let id = format!("{}-chart-{}", p.patient_id, n + 1);
            let concept = json!({"coding": [coding(system, code, display)], "text": display});
            out.push(match resource_type {
                "Condition" => json!({
                    "resourceType": "Condition", "id": id,
                    "clinicalStatus": {"coding": [coding("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active")]},
                    "code": concept, "subject": {"reference": format!("Patient/{}", p.patient_id)},
                    "onsetDateTime": format!("{date}T00:00:00Z"),
                }),
                _ => json!({
                    "resourceType": "Immunization", "id": id, "status": "completed",
                    "vaccineCode": concept, "patient": {"reference": format!("Patient/{}", p.patient_id)},
                    "occurrenceDateTime": format!("{date}T11:00:00Z"),
                }),
            });
        }
        for (n, (date, reason)) in
            [("2025-03-14", "Annual wellness visit"), ("2026-02-02", "Follow-up visit")]
                .iter()
                .enumerate()
        {
            out.push(json!({
                "resourceType": "Encounter",
                "id": format!("{}-enc-{}", p.patient_id, n + 1),
                "status": "finished",
                "class": coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB", "ambulatory"),
                "type": [{"text": reason}],
                "subject": {"reference": format!("Patient/{}", p.patient_id)},
                "participant": [{"individual": {"reference": format!("Practitioner/{}", clinicians()[n % 3].id)}}],
                "period": {"start": format!("{date}T09:00:00Z"), "end": format!("{date}T09:30:00Z")},
                "serviceProvider": {"reference": format!("Organization/{CLINIC_ID}")},
            }));
        }
    }
    out
}

fn ehr_coverage(p: &Person) -> Option<Value> {
    let (payor, payor_name) = match p.coverage {
        CoverageKind::None => return None,
        CoverageKind::OtherPlan => ("payer-nw", OTHER_PLAN_NAME),
        _ => ("payer-sbx", PLAN_NAME),
    };
    let mut identifiers = Vec::new();
    if p.coverage == CoverageKind::MemberId || p.coverage == CoverageKind::OtherPlan {
        identifiers.push(json!({
            "type": {"coding": [coding(systems::V2_0203, "MB", "Member Number")]},
            "system": systems::MEMBER_ID,
            "value": p.member_id,
        }));
    }
    Some(json!({
        "resourceType": "Coverage",
        "id": format!("{}-cov", p.patient_id),
        "identifier": identifiers,
        "status": "active",
        "type": {"coding": [coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "HIP", "health insurance plan policy")]},
        "subscriberId": p.subscriber_id,
        "beneficiary": {"reference": format!("Patient/{}", p.patient_id)},
        "relationship": {"coding": [coding("http://terminology.hl7.org/CodeSystem/subscriber-relationship", "self", "Self")]},
        "period": {"start": "2024-01-01"},
        "payor": [{"reference": format!("Organization/{payor}"), "display": payor_name}],
    }))
}

/// Code systems the sandbox's records use.
pub mod code_systems {
    pub const ICD10CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
    pub const SNOMED: &str = "http://snomed.info/sct";
    pub const LOINC: &str = "http://loinc.org";
    pub const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
    pub const CVX: &str = "http://hl7.org/fhir/sid/cvx";
    pub const CPT: &str = "http://www.ama-assn.org/go/cpt";
    pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
    pub const CONFIDENTIALITY: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
    /// The plan's own identifier system for the records it holds.
    pub const PLAN_RECORD: &str = "http://sandbox-plan.member-history.example/record-id";
}

/// Items both the EHR's chart and the plan hold for a person (same code, same date): what the
/// review must recognise as already in the chart. (resource type, code system, code, display, date)
pub fn shared_items(
    person: &Person,
) -> Vec<(&'static str, &'static str, &'static str, &'static str, String)> {
    let year = 2024 + (person.index % 2) as i32;
    vec![
        (
            "Condition",
            code_systems::ICD10CM,
            "I10",
            "Essential hypertension",
            format!("{year}-04-1{}", person.index % 9),
        ),
        (
            "Immunization",
            code_systems::CVX,
            "140",
            "Influenza, seasonal, injectable, preservative free",
            format!("{year}-10-0{}", 1 + person.index % 8),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn population_is_deterministic_and_covers_every_kind() {
        let a = population(7, 12);
        let b = population(7, 12);
        assert_eq!(
            a.iter().map(Person::display_name).collect::<Vec<_>>(),
            b.iter().map(Person::display_name).collect::<Vec<_>>()
        );
        assert_eq!(a[0].mrn, b[0].mrn);
        for kind in [
            CoverageKind::MemberId,
            CoverageKind::SubscriberOnly,
            CoverageKind::OtherPlan,
            CoverageKind::None,
        ] {
            assert!(a.iter().any(|p| p.coverage == kind), "{kind:?} missing");
        }
    }

    #[test]
    fn ehr_resources_hold_patients_and_coverage() {
        let people = population(1, 6);
        let resources = ehr_resources(&people);
        let count = |t: &str| resources.iter().filter(|r| r["resourceType"] == t).count();
        assert_eq!(count("Patient"), 6);
        assert_eq!(count("Coverage"), 5, "the last person has no coverage");
        assert_eq!(count("Practitioner"), 3);
    }
}
