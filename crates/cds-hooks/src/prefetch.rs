//! Prefetch templates (CDS Hooks 2.0 §Prefetch Template): fill the tokens from the hook
//! context, run the queries against the EMR, and send only the keys that could be satisfied —
//! `null` for a query that found nothing, no key at all for one that could not be run.

use std::collections::BTreeMap;
use std::future::Future;

use serde_json::{json, Value};

/// Why a template could not be filled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`{{{{{0}}}}}` is not a prefetch token this client supports")]
    Unsupported(String),
    #[error("the context has no value for `{{{{{0}}}}}`")]
    Missing(String),
    #[error("`{{{{{0}}}}}` is not a root-level primitive context field")]
    NotPrimitive(String),
    #[error("an unclosed `{{{{` in the template")]
    Unclosed,
}

/// The user tokens and the resource type each one stands for.
const USER_TOKENS: [(&str, &str); 4] = [
    ("userPractitionerId", "Practitioner"),
    ("userPractitionerRoleId", "PractitionerRole"),
    ("userPatientId", "Patient"),
    ("userRelatedPersonId", "RelatedPerson"),
];

/// Fills `{{context.X}}` (root-level primitive fields only) and the user tokens
/// (`{{userPractitionerId}}` … the id part of `context.userId` when its type matches).
pub fn render(template: &str, context: &Value) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
        let token = after[..end].trim();
        out.push_str(&resolve(token, context)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve(token: &str, context: &Value) -> Result<String, TemplateError> {
    // `contexts.X` (the several-sources proposal, [`crate::phr`]) is the context of the one
    // source a client fulfilling prefetch itself reads from: its own.
    let field = token.strip_prefix("context.").or_else(|| token.strip_prefix("contexts."));
    if let Some(field) = field {
        if field.contains('.') {
            return Err(TemplateError::NotPrimitive(token.to_owned()));
        }
        return match context.get(field) {
            None | Some(Value::Null) => Err(TemplateError::Missing(token.to_owned())),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(Value::Bool(b)) => Ok(b.to_string()),
            Some(_) => Err(TemplateError::NotPrimitive(token.to_owned())),
        };
    }
    let (_, resource_type) = USER_TOKENS
        .iter()
        .find(|(name, _)| *name == token)
        .ok_or_else(|| TemplateError::Unsupported(token.to_owned()))?;
    let user = context
        .get("userId")
        .and_then(Value::as_str)
        .ok_or_else(|| TemplateError::Missing(token.to_owned()))?;
    match user.split_once('/') {
        Some((t, id)) if t == *resource_type && !id.is_empty() => Ok(id.to_owned()),
        _ => Err(TemplateError::Missing(token.to_owned())),
    }
}

/// The result of one prefetch query.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// A resource, or a searchset Bundle with at least one entry.
    Data(Value),
    /// The query ran and found nothing (a 404 read, an empty search): sent as `null`.
    Nothing,
}

/// Fills every template, runs the queries with `fetch`, and returns the prefetch object:
/// unfillable templates and failed queries are left out, empty results are `null`.
pub async fn fulfill<F, Fut, E>(
    templates: &BTreeMap<String, String>,
    context: &Value,
    fetch: F,
) -> BTreeMap<String, Value>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Fetched, E>>,
    E: std::fmt::Display,
{
    let queries: Vec<(String, String)> = templates
        .iter()
        .filter_map(|(key, template)| match render(template, context) {
            Ok(query) => Some((key.clone(), query)),
            Err(e) => {
                tracing::info!(key, reason = %e, "prefetch template not filled; key omitted");
                None
            }
        })
        .collect();
    let results = futures::future::join_all(queries.iter().map(|(_, q)| fetch(q.clone()))).await;
    let mut out = BTreeMap::new();
    for ((key, _), result) in queries.into_iter().zip(results) {
        match result {
            Ok(Fetched::Data(value)) => {
                out.insert(key, value);
            }
            Ok(Fetched::Nothing) => {
                out.insert(key, Value::Null);
            }
            Err(e) => tracing::warn!(key, error = %e, "prefetch query failed; key omitted"),
        }
    }
    out
}

/// Runs prefetch queries against a FHIR server: `Type/id` is a read, anything else a
/// search whose pages are all followed and returned as one searchset Bundle.
#[derive(Debug, Clone)]
pub struct FhirPrefetcher {
    pub client: fhir::FhirClient,
    pub token: Option<String>,
    pub max_pages: usize,
}

impl FhirPrefetcher {
    pub async fn fetch(&self, query: String) -> Result<Fetched, fhir::FhirError> {
        let token = self.token.as_deref();
        let (path, params) = match query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (query.as_str(), None),
        };
        let path = path.trim_matches('/');
        match (path.split_once('/'), params) {
            (Some((resource_type, id)), None) if !id.contains('/') => {
                match self.client.read(token, resource_type, id).await {
                    Ok(resource) => Ok(Fetched::Data(resource)),
                    Err(fhir::FhirError::NotFound { .. }) => Ok(Fetched::Nothing),
                    Err(e) => Err(e),
                }
            }
            _ => {
                let pairs: Vec<(String, String)> =
                    url::form_urlencoded::parse(params.unwrap_or("").as_bytes())
                        .into_owned()
                        .collect();
                let borrowed: Vec<(&str, &str)> =
                    pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let resources =
                    self.client.search_all(token, path, &borrowed, self.max_pages).await?;
                if resources.is_empty() {
                    return Ok(Fetched::Nothing);
                }
                let entries: Vec<Value> = resources
                    .into_iter()
                    .map(|r| {
                        let full_url = fhir::ResourceExt::local_reference(&r)
                            .map(|l| format!("{}/{l}", self.client.base()));
                        json!({"fullUrl": full_url, "resource": r})
                    })
                    .collect();
                Ok(Fetched::Data(json!({
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "total": entries.len(),
                    "entry": entries,
                })))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn context() -> Value {
        json!({"userId": "Practitioner/prac-1", "patientId": "pat-1", "encounterId": "enc-9",
               "count": 3, "flag": true, "appointments": {"resourceType": "Bundle"}})
    }

    #[test]
    fn renders_context_and_user_tokens() {
        let c = context();
        assert_eq!(render("Patient/{{context.patientId}}", &c).unwrap(), "Patient/pat-1");
        assert_eq!(
            render("Coverage?patient={{context.patientId}}&status=active", &c).unwrap(),
            "Coverage?patient=pat-1&status=active"
        );
        assert_eq!(render("{{context.userId}}", &c).unwrap(), "Practitioner/prac-1");
        assert_eq!(render("Patient/{{contexts.patientId}}", &c).unwrap(), "Patient/pat-1");
        assert_eq!(
            render("Practitioner/{{userPractitionerId}}", &c).unwrap(),
            "Practitioner/prac-1"
        );
        assert_eq!(
            render("X?n={{ context.count }}&f={{context.flag}}", &c).unwrap(),
            "X?n=3&f=true"
        );
    }

    #[test]
    fn refuses_what_it_cannot_fill() {
        let c = context();
        assert_eq!(
            render("{{userPatientId}}", &c),
            Err(TemplateError::Missing("userPatientId".into()))
        );
        assert_eq!(
            render("{{context.appointments}}", &c),
            Err(TemplateError::NotPrimitive("context.appointments".into()))
        );
        assert_eq!(
            render("{{context.medication.id}}", &c),
            Err(TemplateError::NotPrimitive("context.medication.id".into()))
        );
        assert_eq!(
            render("{{context.missing}}", &c),
            Err(TemplateError::Missing("context.missing".into()))
        );
        assert_eq!(render("{{today}}", &c), Err(TemplateError::Unsupported("today".into())));
        assert_eq!(render("Patient/{{context.patientId", &c), Err(TemplateError::Unclosed));
    }

    #[tokio::test]
    async fn fulfil_sends_only_what_it_could_satisfy() {
        let templates: BTreeMap<String, String> = [
            ("patient", "Patient/{{context.patientId}}"),
            ("nothing", "Condition?patient={{context.patientId}}"),
            ("broken", "Observation?patient={{context.patientId}}"),
            ("unfillable", "RelatedPerson/{{userRelatedPersonId}}"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let prefetch = fulfill(&templates, &context(), |q: String| async move {
            match q.split('?').next().unwrap() {
                "Patient/pat-1" => {
                    Ok(Fetched::Data(json!({"resourceType": "Patient", "id": "pat-1"})))
                }
                "Condition" => Ok(Fetched::Nothing),
                _ => Err("connection reset"),
            }
        })
        .await;
        assert_eq!(prefetch.keys().collect::<Vec<_>>(), vec!["nothing", "patient"]);
        assert_eq!(prefetch["nothing"], Value::Null);
        assert_eq!(prefetch["patient"]["id"], "pat-1");
    }
}
