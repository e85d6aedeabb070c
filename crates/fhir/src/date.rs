//! FHIR `date`, `dateTime` and `instant` values as they come from outside.
//!
//! A plan or an EHR may send any string where a date belongs. Code that wants "the day" of a
//! value must not cut the string by bytes (one multi-byte character panics a slice): it asks
//! [`FhirDate`], which only exists for strings with the FHIR shape, all ASCII.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How much of a date the value gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Precision {
    Year,
    Month,
    Day,
    /// A `dateTime` with a time (and, as FHIR requires then, a zone) or an `instant`.
    Time,
}

/// A checked FHIR `date`, `dateTime` or `instant`: `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, or
/// `YYYY-MM-DDThh:mm:ss[.fff][Z|±hh:mm]`. Comparing two values compares their text, which
/// orders days correctly (times only when they share a zone).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FhirDate(String);

/// The value is not a FHIR date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAFhirDate;

impl fmt::Display for NotAFhirDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a FHIR date (expected YYYY, YYYY-MM, YYYY-MM-DD or a dateTime)")
    }
}

impl std::error::Error for NotAFhirDate {}

impl FhirDate {
    pub fn parse(s: &str) -> Result<Self, NotAFhirDate> {
        precision_of(s).map(|_| Self(s.to_owned())).ok_or(NotAFhirDate)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn precision(&self) -> Precision {
        precision_of(&self.0).unwrap_or(Precision::Year)
    }

    /// The day (`YYYY-MM-DD`), or the month or year when that is all the value gives.
    pub fn day(&self) -> &str {
        // All ASCII, checked at construction: byte indices are character boundaries.
        &self.0[..self.0.len().min(10)]
    }
}

/// The first `n` characters of `s` (all of it when shorter), cut on a character boundary:
/// for comparing an outside value with a prefix of known length.
pub fn prefix(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

impl TryFrom<String> for FhirDate {
    type Error = NotAFhirDate;

    fn try_from(s: String) -> Result<Self, NotAFhirDate> {
        precision_of(&s).map(|_| Self(s)).ok_or(NotAFhirDate)
    }
}

impl From<FhirDate> for String {
    fn from(d: FhirDate) -> Self {
        d.0
    }
}

impl fmt::Display for FhirDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks the FHIR shape; `None` when `s` has none of them.
fn precision_of(s: &str) -> Option<Precision> {
    let b = s.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range.clone()).is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    };
    let number = |range: std::ops::Range<usize>| {
        b[range].iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
    };
    if !digits(0..4) {
        return None;
    }
    if b.len() == 4 {
        return Some(Precision::Year);
    }
    if b.get(4) != Some(&b'-') || !digits(5..7) || !(1..=12).contains(&number(5..7)) {
        return None;
    }
    if b.len() == 7 {
        return Some(Precision::Month);
    }
    if b.get(7) != Some(&b'-') || !digits(8..10) || !(1..=31).contains(&number(8..10)) {
        return None;
    }
    if b.len() == 10 {
        return Some(Precision::Day);
    }
    time_ok(&b[10..]).then_some(Precision::Time)
}

/// `Thh:mm:ss[.f{1,9}][Z|±hh:mm]`.
fn time_ok(t: &[u8]) -> bool {
    let two = |at: usize, max: u32| {
        t.get(at..at + 2).is_some_and(|d| {
            d.iter().all(u8::is_ascii_digit)
                && u32::from(d[0] - b'0') * 10 + u32::from(d[1] - b'0') <= max
        })
    };
    if t.first() != Some(&b'T')
        || !two(1, 23)
        || t.get(3) != Some(&b':')
        || !two(4, 59)
        || t.get(6) != Some(&b':')
        || !two(7, 60)
    {
        return false;
    }
    let mut rest = &t[9..];
    if rest.first() == Some(&b'.') {
        let fraction = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&fraction) {
            return false;
        }
        rest = &rest[1 + fraction..];
    }
    match rest {
        // FHIR asks for a zone with a time, but its own regex and real servers leave it out.
        [] | [b'Z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
                && (*h1 - b'0') * 10 + (*h2 - b'0') <= 14
                && (*m1 - b'0') * 10 + (*m2 - b'0') <= 59
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fhir_shapes_are_accepted() {
        for (s, p) in [
            ("2024", Precision::Year),
            ("2024-03", Precision::Month),
            ("2024-03-07", Precision::Day),
            ("2024-03-07T10:15:00Z", Precision::Time),
            ("2024-03-07T10:15:00.123+05:30", Precision::Time),
            ("2024-03-07T23:59:60-14:00", Precision::Time),
            ("2024-03-07T10:15:00", Precision::Time),
        ] {
            let d = FhirDate::parse(s).unwrap_or_else(|_| panic!("{s}"));
            assert_eq!(d.precision(), p, "{s}");
            assert!(s.starts_with(d.day()));
        }
        let day = |s: &str| FhirDate::parse(s).map(|d| d.day().to_owned()).ok();
        assert_eq!(day("2024-03-07T10:15:00Z").as_deref(), Some("2024-03-07"));
        assert_eq!(day("2024-03").as_deref(), Some("2024-03"));
    }

    #[test]
    fn anything_else_is_refused_without_panicking() {
        for s in [
            "",
            "24",
            "2024-",
            "2024-13",
            "2024-00-01",
            "2024-01-32",
            "2024-01-01T",
            "2024-01-01T10:15Z",
            "2024-01-01T10:15:00.Z",
            "2024-01-01T25:00:00Z",
            "2024-01-01 10:15:00Z",
            "2024-01-01T10:15:00+1:00",
            "2024-é1-01",
            "202é-01-01",
            "2024-01-0é",
            "2024-01-01Té",
            "ééééééééééé",
        ] {
            assert!(FhirDate::parse(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn prefix_cuts_on_character_boundaries() {
        assert_eq!(prefix("2024-01-01", 4), "2024");
        assert_eq!(prefix("é2024", 2), "é2");
        assert_eq!(prefix("ab", 10), "ab");
        assert_eq!(prefix("", 3), "");
    }

    #[test]
    fn serde_checks_the_shape() {
        let d: FhirDate = serde_json::from_str("\"2024-03-07\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.day(), "2024-03-07");
        assert!(serde_json::from_str::<FhirDate>("\"March\"").is_err());
    }
}
