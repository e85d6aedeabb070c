//! FHIR Bundle, typed at the Bundle level only (entries keep their resources as JSON).

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    pub resource_type: BundleTag,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub bundle_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link: Vec<BundleLink>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry: Vec<BundleEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// Serialises as the constant `"Bundle"` and refuses anything else, so a non-Bundle JSON body
/// fails to parse as a Bundle with a clear error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BundleTag;

impl Serialize for BundleTag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("Bundle")
    }
}

impl<'de> Deserialize<'de> for BundleTag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "Bundle" {
            Ok(BundleTag)
        } else {
            Err(serde::de::Error::custom(format!("expected a Bundle, got resourceType `{s}`")))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleLink {
    pub relation: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<BundleRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<BundleResponse>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleRequest {
    pub method: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub if_none_exist: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub if_match: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleResponse {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Value>,
}

impl Bundle {
    /// An empty Bundle of `bundle_type` (`searchset`, `collection`, `transaction`, …).
    pub fn new(bundle_type: &str) -> Self {
        Bundle {
            resource_type: BundleTag,
            id: None,
            bundle_type: bundle_type.to_owned(),
            total: None,
            link: Vec::new(),
            entry: Vec::new(),
            timestamp: None,
        }
    }

    /// The URL of the link with `relation` (`next`, `self`, …).
    pub fn link(&self, relation: &str) -> Option<&str> {
        self.link.iter().find(|l| l.relation == relation).map(|l| l.url.as_str())
    }

    /// The entries' resources.
    pub fn resources(&self) -> impl Iterator<Item = &Value> {
        self.entry.iter().filter_map(|e| e.resource.as_ref())
    }

    /// Consumes the Bundle, returning its resources.
    pub fn into_resources(self) -> impl Iterator<Item = Value> {
        self.entry.into_iter().filter_map(|e| e.resource)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_searchset_with_next_link() {
        let b: Bundle = serde_json::from_value(json!({
            "resourceType": "Bundle", "type": "searchset", "total": 2,
            "link": [{"relation": "self", "url": "a"}, {"relation": "next", "url": "b"}],
            "entry": [{"fullUrl": "x", "resource": {"resourceType": "Patient", "id": "1"}}, {"search": {"mode": "outcome"}}]
        }))
        .unwrap();
        assert_eq!(b.link("next"), Some("b"));
        assert_eq!(b.resources().count(), 1);
    }

    #[test]
    fn refuses_other_resource_types() {
        let err = serde_json::from_value::<Bundle>(json!({"resourceType": "Patient", "type": "x"}))
            .unwrap_err();
        assert!(err.to_string().contains("expected a Bundle"));
    }
}
