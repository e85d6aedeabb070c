//! Is the plan's member the patient in the chart? Checked before any plan data is shown or
//! written, whatever route the data came by (coverage, typed member id, card link).
//!
//! The rule, deliberately simple and documented in the README:
//! - the birth dates are equal (both present);
//! - the family names, or the given names, are equal after normalising case, accents,
//!   hyphens, spaces and other punctuation (any of the patient's names against any of the
//!   member's: a maiden name or a name order the other system lacks still matches);
//! - the administrative sex does not conflict when both records give it (`unknown` counts as
//!   not given).
//!
//! The result names what did not match, never the values: the page must not show one
//! person's details in another person's chart, and logs carry no names.

use serde_json::Value;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// A part of the identity that did not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum IdentityField {
    /// The birth dates differ, or one record has none.
    BirthDate,
    /// Neither the family nor any given name agrees (or one record has no name).
    Name,
    /// Both give a sex, and they differ.
    Sex,
}

impl IdentityField {
    /// A stable code for logs and the audit record.
    pub fn code(self) -> &'static str {
        match self {
            IdentityField::BirthDate => "birth-date",
            IdentityField::Name => "name",
            IdentityField::Sex => "sex",
        }
    }
}

/// The verdict on a plan member against the EMR patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityMatch {
    Confirmed,
    /// What did not match, in the order birth date, name, sex.
    Mismatch(Vec<IdentityField>),
}

impl IdentityMatch {
    pub fn is_confirmed(&self) -> bool {
        matches!(self, IdentityMatch::Confirmed)
    }
}

/// Compares the EMR's Patient with the plan's Patient by the rule above.
pub fn check(emr_patient: &Value, plan_patient: &Value) -> IdentityMatch {
    let mut failed = Vec::new();
    match (birth_date(emr_patient), birth_date(plan_patient)) {
        (Some(a), Some(b)) if !a.is_empty() && a == b => {}
        _ => failed.push(IdentityField::BirthDate),
    }
    if !names_agree(emr_patient, plan_patient) {
        failed.push(IdentityField::Name);
    }
    if let (Some(a), Some(b)) = (sex(emr_patient), sex(plan_patient)) {
        if a != b {
            failed.push(IdentityField::Sex);
        }
    }
    if failed.is_empty() {
        IdentityMatch::Confirmed
    } else {
        IdentityMatch::Mismatch(failed)
    }
}

fn birth_date(patient: &Value) -> Option<&str> {
    patient.get("birthDate").and_then(Value::as_str).map(str::trim)
}

/// `Patient.gender` when it says something (`unknown` does not).
fn sex(patient: &Value) -> Option<&str> {
    patient
        .get("gender")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|g| !g.is_empty() && !g.eq_ignore_ascii_case("unknown"))
}

/// The normalised family and given names of every `Patient.name`.
struct Names {
    family: Vec<String>,
    given: Vec<String>,
}

fn names(patient: &Value) -> Names {
    let mut out = Names { family: Vec::new(), given: Vec::new() };
    for name in patient.get("name").and_then(Value::as_array).into_iter().flatten() {
        if let Some(family) = name.get("family").and_then(Value::as_str) {
            out.family.push(normalise(family));
        }
        let given: Vec<&str> = name
            .get("given")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        // Each given name alone ("Mary" of "Mary Ann") and all together ("Mary-Ann" = "Mary Ann").
        out.given.extend(given.iter().map(|g| normalise(g)));
        if given.len() > 1 {
            out.given.push(normalise(&given.concat()));
        }
        // A name sent only as text: its first and last words.
        if name.get("family").is_none() && given.is_empty() {
            if let Some(text) = name.get("text").and_then(Value::as_str) {
                let words: Vec<&str> = text.split_whitespace().collect();
                if let Some(last) = words.last() {
                    out.family.push(normalise(last));
                }
                if words.len() > 1 {
                    out.given.push(normalise(words[0]));
                }
            }
        }
    }
    out.family.retain(|n| !n.is_empty());
    out.given.retain(|n| !n.is_empty());
    out
}

fn names_agree(a: &Value, b: &Value) -> bool {
    let (a, b) = (names(a), names(b));
    let any_equal = |x: &[String], y: &[String]| x.iter().any(|n| y.contains(n));
    any_equal(&a.family, &b.family) || any_equal(&a.given, &b.given)
}

/// Lower case, accents removed (NFD without combining marks), only letters and digits kept:
/// "Núñez-García" and "nunez garcia" are the same name.
pub fn normalise(name: &str) -> String {
    name.nfd()
        .filter(|c| !is_combining_mark(*c))
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patient(family: &str, given: &[&str], birth: &str, gender: &str) -> Value {
        json!({"resourceType": "Patient", "name": [{"family": family, "given": given}], "birthDate": birth, "gender": gender})
    }

    #[test]
    fn the_same_person_written_differently_matches() {
        let emr = patient("Núñez-García", &["María", "José"], "1970-01-02", "female");
        let plan = patient("NUNEZ GARCIA", &["Maria"], "1970-01-02", "female");
        assert_eq!(check(&emr, &plan), IdentityMatch::Confirmed);
        // Family name changed (marriage), given name still agrees.
        let renamed = patient("Smith", &["maria jose"], "1970-01-02", "unknown");
        assert_eq!(check(&emr, &renamed), IdentityMatch::Confirmed);
    }

    #[test]
    fn a_different_birth_date_or_name_or_sex_is_named() {
        let emr = patient("Lee", &["Ann"], "1980-05-05", "female");
        assert_eq!(
            check(&emr, &patient("Lee", &["Ann"], "1980-05-06", "female")),
            IdentityMatch::Mismatch(vec![IdentityField::BirthDate])
        );
        assert_eq!(
            check(&emr, &patient("Park", &["Joon"], "1980-05-05", "male")),
            IdentityMatch::Mismatch(vec![IdentityField::Name, IdentityField::Sex])
        );
    }

    #[test]
    fn missing_birth_date_or_name_cannot_confirm() {
        let emr = patient("Lee", &["Ann"], "1980-05-05", "female");
        let bare = json!({"resourceType": "Patient"});
        assert_eq!(
            check(&emr, &bare),
            IdentityMatch::Mismatch(vec![IdentityField::BirthDate, IdentityField::Name])
        );
    }

    #[test]
    fn a_name_given_only_as_text_is_read() {
        let emr = patient("Okafor", &["Chidi"], "1991-03-04", "male");
        let plan = json!({"name": [{"text": "Chidi  Okafor"}], "birthDate": "1991-03-04"});
        assert!(check(&emr, &plan).is_confirmed());
    }

    #[test]
    fn normalising_keeps_letters_of_every_script() {
        assert_eq!(normalise("O'Brien-Smith Jr."), "obriensmithjr");
        assert_eq!(normalise("Zoë"), "zoe");
        assert_eq!(normalise("王"), "王");
    }
}
