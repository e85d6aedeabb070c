//! A FHIR server's base URL, normalised once, so "is this the configured server?" is asked
//! one way everywhere (an `iss`, a plan's answer pointing at a FHIR server, a token's `aud`).

use std::fmt;

use url::Url;

/// A FHIR base: http or https, no query, fragment or credentials, no trailing slash. The
/// `url` crate lower-cases the scheme and host and drops a default port, so two spellings of
/// one server compare equal and nothing else does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FhirBase(String);

/// Why a string is not a usable FHIR base.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidFhirBase {
    #[error("not a URL")]
    NotAUrl,
    #[error("a FHIR base must be http or https")]
    Scheme,
    #[error("a FHIR base has no query, fragment or credentials")]
    Extra,
}

impl FhirBase {
    pub fn parse(s: &str) -> Result<Self, InvalidFhirBase> {
        Self::from_url(&Url::parse(s.trim()).map_err(|_| InvalidFhirBase::NotAUrl)?)
    }

    pub fn from_url(url: &Url) -> Result<Self, InvalidFhirBase> {
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(InvalidFhirBase::Scheme);
        }
        if url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(InvalidFhirBase::Extra);
        }
        Ok(Self(url.as_str().trim_end_matches('/').to_owned()))
    }

    /// The base, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `other` (a URL as some party wrote it) names this same server; false for
    /// anything that is not a FHIR base.
    pub fn is(&self, other: &str) -> bool {
        FhirBase::parse(other).is_ok_and(|o| o == *self)
    }

    /// Whether `url` is this base or under it (a paging link, a resource's full URL).
    pub fn contains(&self, url: &str) -> bool {
        let Ok(parsed) = Url::parse(url) else { return false };
        let (Ok(candidate), base) = (FhirBase::from_url(&strip_query(parsed)), &self.0) else {
            return false;
        };
        candidate.0 == *base
            || candidate.0.strip_prefix(base.as_str()).is_some_and(|rest| rest.starts_with('/'))
    }
}

fn strip_query(mut url: Url) -> Url {
    url.set_query(None);
    url.set_fragment(None);
    url
}

impl fmt::Display for FhirBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether two written URLs name the same FHIR server (both must be FHIR bases).
pub fn same_server(a: &str, b: &str) -> bool {
    FhirBase::parse(a).is_ok_and(|a| a.is(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_server_are_the_same_and_nothing_else_is() {
        let base =
            FhirBase::parse("https://EHR.example:443/fhir/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(base.as_str(), "https://ehr.example/fhir");
        for same in
            ["https://ehr.example/fhir", "https://ehr.example/fhir/", "HTTPS://ehr.EXAMPLE/fhir"]
        {
            assert!(base.is(same), "{same}");
        }
        for other in [
            "https://ehr.example/fhir2",
            "https://ehr.example/fhi",
            "https://ehr.example.evil/fhir",
            "https://ehr.example:8443/fhir",
            "http://ehr.example/fhir",
            "https://ehr.example/fhir?x=1",
            "https://user@ehr.example/fhir",
            "ehr.example/fhir",
            "",
        ] {
            assert!(!base.is(other), "{other}");
        }
        assert!(same_server("http://a.example/r4", "http://A.example/r4/"));
        assert!(!same_server("javascript:alert(1)", "javascript:alert(1)"));
    }

    #[test]
    fn urls_under_the_base_are_contained() {
        let base = FhirBase::parse("https://plan.example/fhir").unwrap_or_else(|e| panic!("{e}"));
        assert!(base.contains("https://plan.example/fhir/Patient?page=2"));
        assert!(base.contains("https://plan.example/fhir"));
        assert!(!base.contains("https://plan.example/fhirx/Patient"));
        assert!(!base.contains("https://plan.example.evil/fhir/Patient"));
        assert!(!base.contains("not a url"));
    }
}
