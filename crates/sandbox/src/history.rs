//! Deterministic synthetic member histories as a health plan holds them: encounters (from
//! claims), conditions, procedures, dispensed medications, immunizations, lab and vital
//! observations, allergies and ExplanationOfBenefit claims, with ICD-10-CM, SNOMED CT, CPT,
//! LOINC, RxNorm and CVX codes. Sized by a parameter (10,000 resources for one member is
//! fine). Some items are sensitive (behavioural health, substance use, sexual and
//! reproductive health), some carry security labels, some come from the clinic running the
//! sandbox EHR, and a few match items already in the EHR's chart.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::synthetic::{shared_items, systems, Person, CLINIC_ID, CLINIC_NAME, PLAN_NAME};

pub use crate::synthetic::code_systems;

use code_systems::*;

/// (ICD-10-CM, SNOMED, display, sensitivity ActCode if sensitive)
const CONDITIONS: &[(&str, &str, &str, Option<&str>)] = &[
    ("I10", "59621000", "Essential hypertension", None),
    ("E11.9", "44054006", "Type 2 diabetes mellitus without complications", None),
    ("E78.5", "55822004", "Hyperlipidemia", None),
    ("J45.909", "195967001", "Asthma, uncomplicated", None),
    ("K21.9", "235595009", "Gastro-oesophageal reflux disease", None),
    ("M54.50", "279039007", "Low back pain", None),
    ("J06.9", "54150009", "Acute upper respiratory infection", None),
    ("N39.0", "68566005", "Urinary tract infection", None),
    ("F32.9", "35489007", "Major depressive disorder, single episode", Some("PSY")),
    ("F41.1", "21897009", "Generalized anxiety disorder", Some("BH")),
    ("F10.20", "66590003", "Alcohol dependence, uncomplicated", Some("ETH")),
    ("Z34.00", "72892002", "Supervision of normal first pregnancy", Some("SEX")),
    ("A54.9", "15628003", "Gonococcal infection", Some("STD")),
];

/// (CPT, SNOMED, display, sensitive)
const PROCEDURES: &[(&str, &str, &str, Option<&str>)] = &[
    ("45378", "73761001", "Colonoscopy", None),
    ("93000", "29303009", "Electrocardiogram", None),
    ("71046", "399208008", "Chest X-ray, 2 views", None),
    ("44970", "80146002", "Laparoscopic appendectomy", None),
    ("66984", "54885007", "Cataract extraction with lens implant", None),
    ("90834", "75516001", "Psychotherapy, 45 minutes", Some("PSY")),
];

/// (RxNorm, display, sensitive)
const MEDICATIONS: &[(&str, &str, Option<&str>)] = &[
    ("860975", "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet", None),
    ("197361", "amlodipine 5 MG Oral Tablet", None),
    ("314076", "lisinopril 10 MG Oral Tablet", None),
    ("617310", "atorvastatin 20 MG Oral Tablet", None),
    ("745679", "albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", None),
    ("310798", "hydrochlorothiazide 25 MG Oral Tablet", None),
    ("312940", "sertraline 50 MG Oral Tablet", Some("PSY")),
    ("1010600", "buprenorphine 8 MG / naloxone 2 MG Sublingual Film", Some("SUD")),
];

/// (CVX, display)
const VACCINES: &[(&str, &str)] = &[
    ("140", "Influenza, seasonal, injectable, preservative free"),
    ("208", "COVID-19, mRNA, LNP-S, PF, 30 mcg/0.3 mL dose"),
    ("115", "Tdap"),
    ("133", "Pneumococcal conjugate PCV 13"),
    ("187", "Zoster vaccine recombinant"),
    ("43", "Hepatitis B vaccine, adult dosage"),
];

/// (LOINC, display, unit, low, high, category)
const OBSERVATIONS: &[(&str, &str, &str, f64, f64, &str)] = &[
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 5.0, 9.5, "laboratory"),
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 70.0, 180.0, "laboratory"),
    ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 140.0, 260.0, "laboratory"),
    ("2085-9", "HDL Cholesterol", "mg/dL", 30.0, 80.0, "laboratory"),
    ("13457-7", "LDL Cholesterol (calculated)", "mg/dL", 60.0, 190.0, "laboratory"),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 1.5, "laboratory"),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 11.0, 17.0, "laboratory"),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", 105.0, 165.0, "vital-signs"),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]", 60.0, 100.0, "vital-signs"),
    ("29463-7", "Body weight", "kg", 50.0, 120.0, "vital-signs"),
    ("8867-4", "Heart rate", "/min", 55.0, 100.0, "vital-signs"),
];

/// (SNOMED, display)
const ALLERGIES: &[(&str, &str)] = &[
    ("91936005", "Allergy to penicillin"),
    ("300913006", "Shellfish allergy"),
    ("418689008", "Allergy to grass pollen"),
    ("294505008", "Allergy to sulfonamide"),
];

/// (id, name, NPI): providers whose claims the plan paid. The clinic itself is one of them,
/// so "exclude my own organisation" has something to exclude.
const PROVIDERS: &[(&str, &str, &str)] = &[
    ("prov-lakeside", "Lakeside Cardiology", "1932145678"),
    ("prov-northside", "Northside Urgent Care", "1821034567"),
    ("prov-mercy", "Mercy General Hospital", "1710923456"),
    ("prov-hope", "Hope Behavioral Health", "1609812345"),
    (CLINIC_ID, CLINIC_NAME, crate::synthetic::CLINIC_NPI),
];

/// (id, given, family, NPI) of practitioners outside the clinic.
const CLINICIANS: &[(&str, &str, &str, &str)] = &[
    ("hp-prac-1", "Aisha", "Rahman", "1386745201"),
    ("hp-prac-2", "Jonas", "Berg", "1295634120"),
    ("hp-prac-3", "Lucia", "Moreno", "1184523019"),
    // A clinician of the sandbox clinic (Dr. Chen in the EHR): "exclude my own items" finds her.
    ("hp-prac-4", "Wei", "Chen", "1245319599"),
];

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

fn security(sensitivity: Option<&str>) -> Option<Value> {
    sensitivity.map(|code| {
        json!([coding(CONFIDENTIALITY, "R", "restricted"), coding(ACT_CODE, code, code),])
    })
}

fn date_string(days_before_epoch: i64) -> String {
    // Day 0 is 2026-11-01; dates go back from there.
    let base =
        time::Date::from_calendar_date(2026, time::Month::November, 1).unwrap_or(time::Date::MIN);
    let date = base - time::Duration::days(days_before_epoch);
    format!("{:04}-{:02}-{:02}", date.year(), date.month() as u8, date.day())
}

/// Builds a member history. `member_patient_id` is the plan's Patient id for the person;
/// `size` is the number of resources wanted (the result is within a few of it).
#[derive(Debug)]
pub struct HistoryBuilder<'a> {
    person: &'a Person,
    patient_ref: String,
    rng: ChaCha8Rng,
    out: Vec<Value>,
    next: usize,
}

impl<'a> HistoryBuilder<'a> {
    pub fn new(person: &'a Person, member_patient_id: &str, seed: u64) -> Self {
        Self {
            person,
            patient_ref: format!("Patient/{member_patient_id}"),
            rng: ChaCha8Rng::seed_from_u64(
                seed ^ (person.index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            out: Vec::new(),
            next: 0,
        }
    }

    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        let key = self.patient_ref.trim_start_matches("Patient/").to_owned();
        format!("{key}-{prefix}-{:05}", self.next)
    }

    fn identifier(id: &str) -> Value {
        json!([{"system": PLAN_RECORD, "value": id}])
    }

    fn push(&mut self, mut resource: Value, sensitivity: Option<&str>) {
        if let Some(labels) = security(sensitivity) {
            resource["meta"] = json!({"security": labels});
        }
        self.out.push(resource);
    }

    /// The history: shared items first, then encounters with what happened at them until
    /// `size` resources exist.
    pub fn build(mut self, size: usize) -> Vec<Value> {
        for (resource_type, system, code, display, date) in shared_items(self.person) {
            let id = self.id(if resource_type == "Condition" { "cond" } else { "imm" });
            let resource = match resource_type {
                "Condition" => {
                    self.condition_resource(&id, system, code, display, &date, None, None)
                }
                _ => self.immunization_resource(&id, code, display, &date, CLINIC_ID),
            };
            self.push(resource, None);
        }
        let allergy_count = 1 + self.person.index % 2;
        for n in 0..allergy_count.min(ALLERGIES.len()) {
            let (code, display) = ALLERGIES[(self.person.index + n) % ALLERGIES.len()];
            let id = self.id("alg");
            let resource = json!({
                "resourceType": "AllergyIntolerance",
                "id": id,
                "identifier": Self::identifier(&id),
                "clinicalStatus": {"coding": [coding("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active", "Active")]},
                "verificationStatus": {"coding": [coding("http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "confirmed", "Confirmed")]},
                "code": {"coding": [coding(SNOMED, code, display)], "text": display},
                "patient": {"reference": self.patient_ref},
                "recordedDate": date_string(900 + 30 * n as i64),
            });
            self.push(resource, None);
        }
        let mut day = 5i64;
        while self.out.len() < size {
            day += self.rng.gen_range(3..25);
            self.encounter(day, size);
        }
        self.out.truncate(size);
        self.out
    }

    // Long on purpose: one encounter's resources (claim, conditions, labs, medications, their
    // Provenance) are made in one place so their cross-references visibly agree.
    fn encounter(&mut self, days_ago: i64, size: usize) {
        // Five years of history; long histories revisit the same days.
        let date = date_string(days_ago % 1825);
        let sensitive_visit = self.rng.gen_bool(0.08);
        let (provider_id, provider_name, _) = if sensitive_visit {
            PROVIDERS[3]
        } else {
            *PROVIDERS.choose(&mut self.rng).unwrap_or(&PROVIDERS[0])
        };
        let (prac_id, ..) = *CLINICIANS.choose(&mut self.rng).unwrap_or(&CLINICIANS[0]);
        let emergency = provider_id == "prov-mercy" && self.rng.gen_bool(0.4);
        let enc_id = self.id("enc");
        let class = if emergency { ("EMER", "emergency") } else { ("AMB", "ambulatory") };
        let visit = if emergency {
            ("99284", "Emergency department visit")
        } else {
            ("99213", "Office or other outpatient visit")
        };
        let encounter = json!({
            "resourceType": "Encounter",
            "id": enc_id,
            "identifier": Self::identifier(&enc_id),
            "status": "finished",
            "class": coding(ACT_CODE, class.0, class.1),
            "type": [{"coding": [coding(CPT, visit.0, visit.1)], "text": visit.1}],
            "subject": {"reference": self.patient_ref},
            "participant": [{"individual": {"reference": format!("Practitioner/{prac_id}")}}],
            "period": {"start": format!("{date}T10:00:00Z"), "end": format!("{date}T10:40:00Z")},
            "serviceProvider": {"reference": format!("Organization/{provider_id}"), "display": provider_name},
        });
        self.push(encounter, if sensitive_visit { Some("PSY") } else { None });

        let mut billed = vec![(visit.0, visit.1)];
        // A diagnosis at most visits.
        if self.out.len() < size && self.rng.gen_bool(0.6) {
            let pool: Vec<_> =
                CONDITIONS.iter().filter(|c| sensitive_visit == c.3.is_some()).collect();
            if let Some(&&(icd, snomed, display, sensitivity)) = pool.choose(&mut self.rng) {
                let id = self.id("cond");
                let mut condition = self.condition_resource(
                    &id,
                    ICD10CM,
                    icd,
                    display,
                    &date,
                    Some(&enc_id),
                    sensitivity,
                );
                if let Some(codings) = condition["code"]["coding"].as_array_mut() {
                    codings.push(coding(SNOMED, snomed, display));
                }
                self.push(condition, sensitivity);
            }
        }
        if self.out.len() < size && self.rng.gen_bool(if sensitive_visit { 0.6 } else { 0.15 }) {
            let pool: Vec<_> =
                PROCEDURES.iter().filter(|p| sensitive_visit == p.3.is_some()).collect();
            if let Some(&&(cpt, snomed, display, sensitivity)) = pool.choose(&mut self.rng) {
                let id = self.id("proc");
                let procedure = json!({
                    "resourceType": "Procedure",
                    "id": id,
                    "identifier": Self::identifier(&id),
                    "status": "completed",
                    "code": {"coding": [coding(CPT, cpt, display), coding(SNOMED, snomed, display)], "text": display},
                    "subject": {"reference": self.patient_ref},
                    "encounter": {"reference": format!("Encounter/{enc_id}")},
                    "performedDateTime": format!("{date}T10:15:00Z"),
                    "performer": [{"actor": {"reference": format!("Practitioner/{prac_id}")}}],
                });
                self.push(procedure, sensitivity);
                billed.push((cpt, display));
            }
        }
        let labs = self.rng.gen_range(0..4);
        for _ in 0..labs {
            if self.out.len() >= size {
                break;
            }
            let &(loinc, display, unit, low, high, category) =
                OBSERVATIONS.choose(&mut self.rng).unwrap_or(&OBSERVATIONS[0]);
            let value = (self.rng.gen_range(low..high) * 10.0_f64).round() / 10.0;
            let id = self.id("obs");
            let observation = json!({
                "resourceType": "Observation",
                "id": id,
                "identifier": Self::identifier(&id),
                "status": "final",
                "category": [{"coding": [coding("http://terminology.hl7.org/CodeSystem/observation-category", category, category)]}],
                "code": {"coding": [coding(LOINC, loinc, display)], "text": display},
                "subject": {"reference": self.patient_ref},
                "encounter": {"reference": format!("Encounter/{enc_id}")},
                "effectiveDateTime": format!("{date}T10:20:00Z"),
                "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
            });
            self.push(observation, None);
        }
        if self.out.len() < size && self.rng.gen_bool(0.35) {
            let pool: Vec<_> =
                MEDICATIONS.iter().filter(|m| sensitive_visit == m.2.is_some()).collect();
            if let Some(&&(rxnorm, display, sensitivity)) = pool.choose(&mut self.rng) {
                let id = self.id("med");
                let dispense = json!({
                    "resourceType": "MedicationDispense",
                    "id": id,
                    "identifier": Self::identifier(&id),
                    "status": "completed",
                    "medicationCodeableConcept": {"coding": [coding(RXNORM, rxnorm, display)], "text": display},
                    "subject": {"reference": self.patient_ref},
                    "quantity": {"value": 30, "unit": "tablet"},
                    "daysSupply": {"value": 30, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"},
                    "whenHandedOver": format!("{date}T16:00:00Z"),
                });
                self.push(dispense, sensitivity);
            }
        }
        if self.out.len() < size && self.rng.gen_bool(0.1) {
            let &(cvx, display) = VACCINES.choose(&mut self.rng).unwrap_or(&VACCINES[0]);
            let id = self.id("imm");
            let immunization = self.immunization_resource(&id, cvx, display, &date, provider_id);
            self.push(immunization, None);
        }
        if self.out.len() < size {
            let id = self.id("eob");
            let items: Vec<Value> = billed
                .iter()
                .enumerate()
                .map(|(n, (code, display))| {
                    json!({"sequence": n + 1, "productOrService": {"coding": [coding(CPT, code, display)], "text": display},
                           "servicedDate": date, "net": {"value": 80 + 45 * n, "currency": "USD"}})
                })
                .collect();
            let total: usize = (0..billed.len()).map(|n| 80 + 45 * n).sum();
            let eob = json!({
                "resourceType": "ExplanationOfBenefit",
                "id": id,
                "identifier": Self::identifier(&id),
                "status": "active",
                "type": {"coding": [coding("http://terminology.hl7.org/CodeSystem/claim-type", "professional", "Professional")]},
                "use": "claim",
                "patient": {"reference": self.patient_ref},
                "billablePeriod": {"start": date, "end": date},
                "created": format!("{date}T23:00:00Z"),
                "insurer": {"display": PLAN_NAME},
                "provider": {"reference": format!("Organization/{provider_id}"), "display": provider_name},
                "outcome": "complete",
                "insurance": [{"focal": true, "coverage": {"display": PLAN_NAME}}],
                "item": items,
                "total": [{"category": {"coding": [coding("http://terminology.hl7.org/CodeSystem/adjudication", "submitted", "Submitted Amount")]},
                           "amount": {"value": total, "currency": "USD"}}],
            });
            self.push(eob, if sensitive_visit { Some("PSY") } else { None });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn condition_resource(
        &self,
        id: &str,
        system: &str,
        code: &str,
        display: &str,
        date: &str,
        encounter: Option<&str>,
        _sensitivity: Option<&str>,
    ) -> Value {
        let mut condition = json!({
            "resourceType": "Condition",
            "id": id,
            "identifier": Self::identifier(id),
            "clinicalStatus": {"coding": [coding("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active")]},
            "verificationStatus": {"coding": [coding("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed")]},
            "category": [{"coding": [coding("http://terminology.hl7.org/CodeSystem/condition-category", "encounter-diagnosis", "Encounter Diagnosis")]}],
            "code": {"coding": [coding(system, code, display)], "text": display},
            "subject": {"reference": self.patient_ref},
            "onsetDateTime": format!("{date}T00:00:00Z"),
            "recordedDate": date,
        });
        if let Some(e) = encounter {
            condition["encounter"] = json!({"reference": format!("Encounter/{e}")});
        }
        condition
    }

    fn immunization_resource(
        &self,
        id: &str,
        cvx: &str,
        display: &str,
        date: &str,
        performer_org: &str,
    ) -> Value {
        json!({
            "resourceType": "Immunization",
            "id": id,
            "identifier": Self::identifier(id),
            "status": "completed",
            "vaccineCode": {"coding": [coding(CVX, cvx, display)], "text": display},
            "patient": {"reference": self.patient_ref},
            "occurrenceDateTime": format!("{date}T11:00:00Z"),
            "primarySource": false,
            "performer": [{"actor": {"reference": format!("Organization/{performer_org}")}}],
        })
    }
}

/// The organisations and practitioners the histories refer to.
pub fn directory() -> Vec<Value> {
    let mut out: Vec<Value> = PROVIDERS
        .iter()
        .map(|(id, name, npi)| {
            crate::synthetic::organization(
                id,
                name,
                json!({"system": systems::NPI, "value": npi}),
                false,
            )
        })
        .collect();
    out.extend(CLINICIANS.iter().map(|(id, given, family, npi)| {
        json!({
            "resourceType": "Practitioner",
            "id": id,
            "identifier": [{"system": systems::NPI, "value": npi}],
            "name": [{"use": "official", "family": family, "given": [given], "prefix": ["Dr."]}],
        })
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::population;

    #[test]
    fn histories_are_deterministic_and_sized() {
        let people = population(3, 2);
        let a = HistoryBuilder::new(&people[0], "mbr-001", 9).build(300);
        let b = HistoryBuilder::new(&people[0], "mbr-001", 9).build(300);
        assert_eq!(a, b);
        assert_eq!(a.len(), 300);
        let big = HistoryBuilder::new(&people[1], "mbr-002", 9).build(10_000);
        assert_eq!(big.len(), 10_000);
        for t in [
            "Encounter",
            "Condition",
            "Procedure",
            "MedicationDispense",
            "Immunization",
            "Observation",
            "AllergyIntolerance",
            "ExplanationOfBenefit",
        ] {
            assert!(big.iter().any(|r| r["resourceType"] == t), "{t} missing");
        }
        assert!(
            big.iter().any(|r| r.pointer("/meta/security").is_some()),
            "some items carry security labels"
        );
        let mut ids: Vec<&str> = big.iter().filter_map(|r| r["id"].as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 10_000, "ids are unique");
    }
}
