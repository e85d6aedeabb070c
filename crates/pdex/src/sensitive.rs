//! Items a patient may not want shared, flagged and left unselected: behavioural health,
//! substance use, sexual and reproductive health (by code), and anything carrying a
//! restricting `meta.security` label.

use serde_json::Value;

use crate::model::{Code, Sensitivity};

const ICD10CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
const SNOMED: &str = "http://snomed.info/sct";
const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
const CPT: &str = "http://www.ama-assn.org/go/cpt";
const LOINC: &str = "http://loinc.org";

/// ICD-10-CM code prefixes (dots ignored) and what they reveal.
const ICD10_PREFIXES: &[(&str, Sensitivity)] = &[
    // F10–F19: mental and behavioural disorders due to psychoactive substance use.
    ("F1", Sensitivity::SubstanceUse),
    ("Z714", Sensitivity::SubstanceUse),
    ("Z715", Sensitivity::SubstanceUse),
    ("T40", Sensitivity::SubstanceUse),
    // The rest of chapter F: mental and behavioural disorders.
    ("F", Sensitivity::BehaviouralHealth),
    ("R45851", Sensitivity::BehaviouralHealth),
    ("Z9151", Sensitivity::BehaviouralHealth),
    // Pregnancy, childbirth, contraception, infertility, sexually transmitted infections, HIV.
    ("O", Sensitivity::SexualAndReproductiveHealth),
    ("Z3", Sensitivity::SexualAndReproductiveHealth),
    ("N96", Sensitivity::SexualAndReproductiveHealth),
    ("N97", Sensitivity::SexualAndReproductiveHealth),
    ("A5", Sensitivity::SexualAndReproductiveHealth),
    ("A60", Sensitivity::SexualAndReproductiveHealth),
    ("A63", Sensitivity::SexualAndReproductiveHealth),
    ("A64", Sensitivity::SexualAndReproductiveHealth),
    ("B20", Sensitivity::SexualAndReproductiveHealth),
    ("Z21", Sensitivity::SexualAndReproductiveHealth),
    ("Z114", Sensitivity::SexualAndReproductiveHealth),
];

/// Individual codes in other systems.
const CODES: &[(&str, &str, Sensitivity)] = &[
    // SNOMED CT disorders and procedures.
    (SNOMED, "35489007", Sensitivity::BehaviouralHealth), // depressive disorder
    (SNOMED, "370143000", Sensitivity::BehaviouralHealth), // major depressive disorder
    (SNOMED, "21897009", Sensitivity::BehaviouralHealth), // generalized anxiety disorder
    (SNOMED, "13746004", Sensitivity::BehaviouralHealth), // bipolar disorder
    (SNOMED, "58214004", Sensitivity::BehaviouralHealth), // schizophrenia
    (SNOMED, "47505003", Sensitivity::BehaviouralHealth), // posttraumatic stress disorder
    (SNOMED, "75516001", Sensitivity::BehaviouralHealth), // psychotherapy
    (SNOMED, "66590003", Sensitivity::SubstanceUse),      // alcohol dependence
    (SNOMED, "7200002", Sensitivity::SubstanceUse),       // alcoholism
    (SNOMED, "5602001", Sensitivity::SubstanceUse),       // opioid abuse
    (SNOMED, "75544000", Sensitivity::SubstanceUse),      // opioid dependence
    (SNOMED, "72892002", Sensitivity::SexualAndReproductiveHealth), // normal pregnancy
    (SNOMED, "77386006", Sensitivity::SexualAndReproductiveHealth), // pregnancy
    (SNOMED, "15628003", Sensitivity::SexualAndReproductiveHealth), // gonorrhea
    (SNOMED, "86406008", Sensitivity::SexualAndReproductiveHealth), // HIV infection
    (SNOMED, "8098009", Sensitivity::SexualAndReproductiveHealth), // sexually transmitted infectious disease
    // RxNorm: medicines that reveal the condition.
    (RXNORM, "312940", Sensitivity::BehaviouralHealth), // sertraline 50 MG
    (RXNORM, "312941", Sensitivity::BehaviouralHealth), // sertraline 100 MG
    (RXNORM, "1010600", Sensitivity::SubstanceUse),     // buprenorphine / naloxone film
    (RXNORM, "864706", Sensitivity::SubstanceUse),      // methadone
    (RXNORM, "1483744", Sensitivity::SubstanceUse),     // naltrexone ER injection
    // CPT: psychotherapy and psychiatric services.
    (CPT, "90791", Sensitivity::BehaviouralHealth),
    (CPT, "90792", Sensitivity::BehaviouralHealth),
    (CPT, "90832", Sensitivity::BehaviouralHealth),
    (CPT, "90834", Sensitivity::BehaviouralHealth),
    (CPT, "90837", Sensitivity::BehaviouralHealth),
    (CPT, "90847", Sensitivity::BehaviouralHealth),
    (CPT, "90853", Sensitivity::BehaviouralHealth),
    // LOINC: HIV and pregnancy tests.
    (LOINC, "75622-1", Sensitivity::SexualAndReproductiveHealth), // HIV 1+2 Ag+Ab
    (LOINC, "2106-3", Sensitivity::SexualAndReproductiveHealth),  // hCG, urine
];

/// v3-ActCode sensitivity codes and v3-Confidentiality levels that restrict sharing.
const SECURITY_CODES: &[&str] = &[
    "R", "V", "ETH", "ETHUD", "SUD", "OPIOIDUD", "PSY", "MH", "BH", "SEX", "STD", "HIV", "SDV",
    "GDIS", "SICKLE", "TBOO", "PRS", "PSYTHPN", "SUDTHPN",
];

/// Why `resource` (with its normalised `codes`) is sensitive; empty when it is not.
pub fn assess(resource: &Value, codes: &[Code]) -> Vec<Sensitivity> {
    let mut out: Vec<Sensitivity> = Vec::new();
    let mut add = |s: Sensitivity| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    for code in codes {
        let (Some(system), Some(value)) = (code.system.as_deref(), code.code.as_deref()) else {
            continue;
        };
        if system == ICD10CM {
            let compact: String =
                value.chars().filter(|c| *c != '.').collect::<String>().to_ascii_uppercase();
            if let Some((_, s)) =
                ICD10_PREFIXES.iter().find(|(prefix, _)| compact.starts_with(prefix))
            {
                add(s.clone());
            }
        } else if let Some((_, _, s)) =
            CODES.iter().find(|(sys, c, _)| *sys == system && *c == value)
        {
            add(s.clone());
        }
    }
    for label in resource.pointer("/meta/security").and_then(Value::as_array).into_iter().flatten()
    {
        if let Some(code) = label.get("code").and_then(Value::as_str) {
            if SECURITY_CODES.contains(&code) {
                add(Sensitivity::SecurityLabel(code.to_owned()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(system: &str, value: &str) -> Code {
        Code {
            system: Some(system.into()),
            system_name: None,
            code: Some(value.into()),
            display: None,
        }
    }

    #[test]
    fn flags_by_code_set() {
        assert_eq!(
            assess(&json!({}), &[code(ICD10CM, "F32.9")]),
            vec![Sensitivity::BehaviouralHealth]
        );
        assert_eq!(assess(&json!({}), &[code(ICD10CM, "F10.20")]), vec![Sensitivity::SubstanceUse]);
        assert_eq!(
            assess(&json!({}), &[code(ICD10CM, "Z34.00")]),
            vec![Sensitivity::SexualAndReproductiveHealth]
        );
        assert_eq!(
            assess(&json!({}), &[code(ICD10CM, "O09.90")]),
            vec![Sensitivity::SexualAndReproductiveHealth]
        );
        assert_eq!(assess(&json!({}), &[code(RXNORM, "1010600")]), vec![Sensitivity::SubstanceUse]);
        assert_eq!(assess(&json!({}), &[code(CPT, "90834")]), vec![Sensitivity::BehaviouralHealth]);
        assert!(assess(&json!({}), &[code(ICD10CM, "I10"), code(SNOMED, "59621000")]).is_empty());
    }

    #[test]
    fn flags_by_security_label() {
        let r = json!({"meta": {"security": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"},
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"},
            {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}
        ]}});
        assert_eq!(
            assess(&r, &[]),
            vec![Sensitivity::SecurityLabel("R".into()), Sensitivity::SecurityLabel("PSY".into())]
        );
    }
}
