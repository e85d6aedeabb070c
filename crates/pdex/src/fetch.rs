//! Fetching a member's history from the plan's FHIR API: `Patient/{id}/$everything` (paged
//! through `Bundle.link[next]`, with `_since`, `start`/`end`, `_type`), or one search per type
//! when the plan's CapabilityStatement does not offer `$everything`.

use fhir::{FhirClient, FhirError};
use futures::StreamExt;
use serde_json::Value;

use crate::model::history_resource_types;

/// What to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Only resources changed since this instant (`_since`).
    pub since: Option<String>,
    /// Care dates from / to (`start` / `end`, `YYYY-MM-DD`).
    pub start: Option<String>,
    pub end: Option<String>,
    /// Resource types (`_type`); empty means the review's types.
    pub types: Vec<String>,
    /// Page size asked for (`_count`).
    pub page_size: usize,
    /// Safety stop: pages followed at most.
    pub max_pages: usize,
    /// Per-type searches run at once (without `$everything`).
    pub concurrent_searches: usize,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            since: None,
            start: None,
            end: None,
            types: Vec::new(),
            page_size: 500,
            max_pages: 200,
            concurrent_searches: 4,
        }
    }
}

/// What came back.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// The pages (Bundles) as received: flatten them with [`crate::normalise::flatten`].
    pub pages: Vec<Value>,
    pub used_everything: bool,
    /// Types that could not be searched (per-type mode), with why.
    pub skipped_types: Vec<(String, String)>,
    /// True when `max_pages` stopped the paging.
    pub truncated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Fhir(#[from] FhirError),
}

/// Whether a CapabilityStatement offers `Patient/[id]/$everything`.
pub fn supports_everything(capability: &Value) -> bool {
    let named = |ops: Option<&Value>| {
        ops.and_then(Value::as_array).is_some_and(|ops| {
            ops.iter().any(|op| {
                op.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.trim_start_matches('$') == "everything")
                    || op
                        .get("definition")
                        .and_then(Value::as_str)
                        .is_some_and(|d| d.contains("Patient-everything"))
            })
        })
    };
    capability.get("rest").and_then(Value::as_array).into_iter().flatten().any(|rest| {
        named(rest.get("operation"))
            || rest.get("resource").and_then(Value::as_array).into_iter().flatten().any(|r| {
                r.get("type").and_then(Value::as_str) == Some("Patient")
                    && named(r.get("operation"))
            })
    })
}

/// Fetches `patient`'s history. `capability` decides between `$everything` and per-type
/// searches (read it once per plan and keep it).
pub async fn fetch_history(
    client: &FhirClient,
    token: Option<&str>,
    patient: &str,
    capability: &Value,
    options: &FetchOptions,
) -> Result<Fetched, FetchError> {
    let types: Vec<String> = if options.types.is_empty() {
        history_resource_types().into_iter().map(str::to_owned).collect()
    } else {
        options.types.clone()
    };
    if supports_everything(capability) {
        everything(Source { client, token, patient }, &types, options).await
    } else {
        per_type(Source { client, token, patient }, &types, options).await
    }
}

/// Whose history, from which server, with which token.
#[derive(Clone, Copy)]
struct Source<'a> {
    client: &'a FhirClient,
    token: Option<&'a str>,
    patient: &'a str,
}

/// `Patient/{id}/$everything`, with `_type` always explicit (servers differ on the default).
async fn everything(
    Source { client, token, patient }: Source<'_>,
    types: &[String],
    options: &FetchOptions,
) -> Result<Fetched, FetchError> {
    let mut params: Vec<(&str, String)> = vec![("_count", options.page_size.to_string())];
    if let Some(since) = &options.since {
        params.push(("_since", since.clone()));
    }
    if let Some(start) = &options.start {
        params.push(("start", start.clone()));
    }
    if let Some(end) = &options.end {
        params.push(("end", end.clone()));
    }
    let mut with_context = types.to_vec();
    with_context.extend(crate::kinds::CONTEXT_TYPES.iter().map(|t| (*t).to_owned()));
    params.push(("_type", with_context.join(",")));
    let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (pages, truncated) = pages(
        client,
        token,
        &format!("Patient/{patient}/$everything"),
        &borrowed,
        options.max_pages,
    )
    .await?;
    Ok(Fetched { pages, used_everything: true, skipped_types: Vec::new(), truncated })
}

/// No `$everything`: one search per type, a few side by side; a type the server refuses is
/// skipped and said.
async fn per_type(
    Source { client, token, patient }: Source<'_>,
    types: &[String],
    options: &FetchOptions,
) -> Result<Fetched, FetchError> {
    let searches = types.iter().map(|resource_type| {
        let mut params: Vec<(&str, String)> =
            vec![("patient", patient.to_owned()), ("_count", options.page_size.to_string())];
        if let Some(since) = &options.since {
            params.push(("_lastUpdated", format!("ge{since}")));
        }
        async move {
            let mut borrowed: Vec<(&str, &str)> =
                params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            // The plan's Provenance for each resource, where the server can include it; one
            // that refuses `_revinclude` is asked again without it.
            borrowed.push(("_revinclude", "Provenance:target"));
            let mut result =
                pages(client, token, resource_type, &borrowed, options.max_pages).await;
            if matches!(result, Err(FhirError::Status { status: 400, .. })) {
                borrowed.pop();
                result = pages(client, token, resource_type, &borrowed, options.max_pages).await;
            }
            (resource_type.clone(), result)
        }
    });
    let mut fetched = Fetched::default();
    let results: Vec<_> = futures::stream::iter(searches.collect::<Vec<_>>())
        .buffered(options.concurrent_searches.max(1))
        .collect()
        .await;
    for (resource_type, result) in results {
        match result {
            Ok((mut pages, truncated)) => {
                fetched.pages.append(&mut pages);
                fetched.truncated |= truncated;
            }
            Err(
                e @ (FhirError::Forbidden { .. }
                | FhirError::NotFound { .. }
                | FhirError::Status { status: 400, .. }),
            ) => {
                fetched.skipped_types.push((resource_type, e.to_string()));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Ok(patient) = client.read(token, "Patient", patient).await {
        fetched.pages.push(patient);
    }
    Ok(fetched)
}

/// Follows `next` links from the first page; returns the pages and whether `max_pages` cut it short.
async fn pages(
    client: &FhirClient,
    token: Option<&str>,
    path: &str,
    params: &[(&str, &str)],
    max_pages: usize,
) -> Result<(Vec<Value>, bool), FhirError> {
    let first = client.search(token, path, params).await?;
    let mut next = first.link("next").map(str::to_owned);
    let mut out = vec![serde_json::to_value(first).unwrap_or(Value::Null)];
    while let Some(link) = next.take() {
        if out.len() >= max_pages {
            return Ok((out, true));
        }
        let page = client.get_bundle(token, &client.checked_link(&link)?).await?;
        next = page.link("next").map(str::to_owned);
        out.push(serde_json::to_value(page).unwrap_or(Value::Null));
    }
    Ok((out, false))
}
