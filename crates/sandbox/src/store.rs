//! An in-memory FHIR resource store: the EHR's chart and the plan's claims-derived history.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use serde_json::{json, Value};

use crate::search::{self, Filter};

/// A stored resource version.
#[derive(Debug, Clone)]
struct Stored {
    resource: Value,
}

#[derive(Debug, Default)]
struct Inner {
    /// type → id → resource. BTreeMaps keep search results in a stable order.
    by_type: BTreeMap<String, BTreeMap<String, Stored>>,
    version: u64,
    /// `type|param|system|value` → ids, for `identifier` and `_tag` tokens: what conditional
    /// creates look up (a real server has an index for this too).
    tokens: HashMap<String, Vec<String>>,
    /// The timestamp of the write in progress (one for a whole transaction).
    now: Option<String>,
}

/// The index key of one token (`type|param|system|value`).
fn token_key(resource_type: &str, param: &str, system: &str, value: &str) -> String {
    [resource_type, param, system, value].join("|")
}

/// The index keys of a resource's identifiers and tags.
fn token_keys(resource_type: &str, resource: &Value) -> Vec<String> {
    fn text<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
        v.get(field).and_then(Value::as_str)
    }
    let identifiers = resource.get("identifier").and_then(Value::as_array).into_iter().flatten();
    let tags = resource.get("meta").and_then(|m| m.get("tag")).and_then(Value::as_array);
    identifiers
        .filter_map(|i| {
            Some(token_key(resource_type, "identifier", text(i, "system")?, text(i, "value")?))
        })
        .chain(tags.into_iter().flatten().filter_map(|t| {
            Some(token_key(resource_type, "_tag", text(t, "system")?, text(t, "code")?))
        }))
        .collect()
}

/// Errors of store operations, each with the HTTP status a FHIR server answers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the conditional create matched {0} resources; make the criteria more selective")]
    MultipleMatches(usize),
}

impl StoreError {
    pub fn status(&self) -> u16 {
        match self {
            StoreError::Invalid(_) => 400,
            StoreError::NotFound(_) => 404,
            StoreError::MultipleMatches(_) => 412,
        }
    }
}

/// Where a stored resource went.
#[derive(Debug, Clone)]
struct Stamp {
    resource_type: String,
    id: String,
    version: String,
    last_updated: Value,
}

impl Stamp {
    /// The stamp of a resource already in the store.
    fn of(stored: &Value) -> Self {
        let meta = stored.get("meta");
        let text = |v: Option<&Value>, field: &str, default: &str| {
            v.and_then(|v| v.get(field)).and_then(Value::as_str).unwrap_or(default).to_owned()
        };
        Stamp {
            resource_type: text(Some(stored), "resourceType", ""),
            id: text(Some(stored), "id", ""),
            version: text(meta, "versionId", "1"),
            last_updated: meta.and_then(|m| m.get("lastUpdated")).cloned().unwrap_or(Value::Null),
        }
    }
}

/// The outcome of a create.
#[derive(Debug, Clone)]
pub enum Created {
    New(Value),
    /// A conditional create matched this resource; nothing was written.
    Existing(Value),
}

#[derive(Debug, Default)]
pub struct FhirStore {
    inner: RwLock<Inner>,
}

impl FhirStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn read_lock(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a resource half-written (writes replace
        // whole values), so a poisoned lock is still consistent.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `resource` under its own id (seeding), stamping `meta.versionId`/`lastUpdated`.
    pub fn put(&self, resource: Value) -> Result<Value, StoreError> {
        let mut inner = self.write_lock();
        Self::put_locked(&mut inner, resource)
    }

    /// Stores many resources under one lock.
    pub fn put_all(&self, resources: impl IntoIterator<Item = Value>) -> Result<(), StoreError> {
        let mut inner = self.write_lock();
        for r in resources {
            Self::put_locked(&mut inner, r)?;
        }
        Ok(())
    }

    fn put_locked(inner: &mut Inner, resource: Value) -> Result<Value, StoreError> {
        let stamp = Self::store_locked(inner, resource)?;
        inner
            .by_type
            .get(&stamp.resource_type)
            .and_then(|m| m.get(&stamp.id))
            .map(|s| s.resource.clone())
            .ok_or(StoreError::NotFound(stamp.id))
    }

    /// Stores `resource` (stamping `meta.versionId`/`lastUpdated`) without copying it back.
    fn store_locked(inner: &mut Inner, mut resource: Value) -> Result<Stamp, StoreError> {
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .ok_or_else(|| StoreError::Invalid("the resource has no resourceType".into()))?
            .to_owned();
        let id = match resource.get("id").and_then(Value::as_str) {
            Some(id) if fhir::resource::is_fhir_id(id) => id.to_owned(),
            Some(_) => {
                return Err(StoreError::Invalid("the resource id is not a valid FHIR id".into()))
            }
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                resource["id"] = json!(id);
                id
            }
        };
        inner.version += 1;
        let version = inner.version.to_string();
        let last_updated = Value::String(inner.now.clone().unwrap_or_else(now_instant));
        let meta = resource
            .as_object_mut()
            .ok_or_else(|| StoreError::Invalid("the resource is not a JSON object".into()))?
            .entry("meta")
            .or_insert_with(|| json!({}));
        let meta = meta.as_object_mut().ok_or_else(|| {
            StoreError::Invalid("the resource's meta is not a JSON object".into())
        })?;
        meta.insert("versionId".into(), Value::String(version.clone()));
        meta.insert("lastUpdated".into(), last_updated.clone());
        let previous = inner
            .by_type
            .get(&resource_type)
            .and_then(|m| m.get(&id))
            .map(|s| token_keys(&resource_type, &s.resource));
        for key in previous.into_iter().flatten() {
            if let Some(ids) = inner.tokens.get_mut(&key) {
                ids.retain(|i| i != &id);
            }
        }
        for key in token_keys(&resource_type, &resource) {
            inner.tokens.entry(key).or_default().push(id.clone());
        }
        let stored = Stored { resource };
        match inner.by_type.get_mut(&resource_type) {
            Some(resources) => {
                resources.insert(id.clone(), stored);
            }
            None => {
                inner.by_type.insert(resource_type.clone(), BTreeMap::from([(id.clone(), stored)]));
            }
        }
        Ok(Stamp { resource_type, id, version, last_updated })
    }

    pub fn read(&self, resource_type: &str, id: &str) -> Option<Value> {
        self.read_lock().by_type.get(resource_type)?.get(id).map(|s| s.resource.clone())
    }

    /// Resources of `resource_type` matching `filters`, in id order.
    pub fn search(&self, resource_type: &str, filters: &[Filter]) -> Vec<Value> {
        let inner = self.read_lock();
        inner
            .by_type
            .get(resource_type)
            .map(|m| {
                m.values()
                    .filter(|s| search::matches(&s.resource, filters))
                    .map(|s| s.resource.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many resources of each type are stored.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.read_lock().by_type.iter().map(|(t, m)| (t.clone(), m.len())).collect()
    }

    /// Every resource in `patient_id`'s compartment (the Patient itself first).
    pub fn compartment(&self, patient_id: &str) -> Vec<Value> {
        let inner = self.read_lock();
        let mut out = Vec::new();
        if let Some(p) = inner.by_type.get("Patient").and_then(|m| m.get(patient_id)) {
            out.push(p.resource.clone());
        }
        for (resource_type, resources) in &inner.by_type {
            if resource_type == "Patient" || search::compartment_paths(resource_type).is_none() {
                continue;
            }
            out.extend(
                resources
                    .values()
                    .filter(|s| search::patients_of(&s.resource).iter().any(|p| p == patient_id))
                    .map(|s| s.resource.clone()),
            );
        }
        out
    }

    /// The one resource matching a conditional-create query, if any (several is an error).
    fn find_existing<'a>(
        inner: &'a Inner,
        resource_type: &str,
        query: &str,
    ) -> Result<Option<&'a Value>, StoreError> {
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        // One `identifier` or `_tag` token with a system: answered from the index.
        if let [(name, value)] = params.as_slice() {
            let indexed = (name == "identifier" || name == "_tag") && !value.contains(',');
            if let (true, Some((system, code))) = (indexed, value.split_once('|')) {
                if !system.is_empty() && !code.is_empty() {
                    let ids = inner.tokens.get(&token_key(resource_type, name, system, code));
                    let found: Vec<&Stored> = ids
                        .into_iter()
                        .flatten()
                        .filter_map(|id| inner.by_type.get(resource_type)?.get(id))
                        .collect();
                    if search::known_token(resource_type, name) {
                        return match found.as_slice() {
                            [] => Ok(None),
                            [one] => Ok(Some(&one.resource)),
                            many => Err(StoreError::MultipleMatches(many.len())),
                        };
                    }
                }
            }
        }
        let filters = search::parse_filters(resource_type, &params).map_err(StoreError::Invalid)?;
        let found: Vec<&Stored> = inner
            .by_type
            .get(resource_type)
            .map(|m| m.values().filter(|s| search::matches(&s.resource, &filters)).collect())
            .unwrap_or_default();
        match found.len() {
            0 => Ok(None),
            1 => Ok(Some(&found[0].resource)),
            n => Err(StoreError::MultipleMatches(n)),
        }
    }

    /// Creates `resource` with a server-assigned id; with `if_none_exist` (a search query
    /// string) it first searches, and answers with the match instead of creating.
    pub fn create(
        &self,
        mut resource: Value,
        if_none_exist: Option<&str>,
    ) -> Result<Created, StoreError> {
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .ok_or_else(|| StoreError::Invalid("the resource has no resourceType".into()))?
            .to_owned();
        // Hold the write lock across the check and the write so two racing conditional
        // creates cannot both create.
        let mut inner = self.write_lock();
        if let Some(query) = if_none_exist {
            if let Some(existing) = Self::find_existing(&inner, &resource_type, query)? {
                return Ok(Created::Existing(existing.clone()));
            }
        }
        if let Some(obj) = resource.as_object_mut() {
            obj.insert("id".into(), json!(uuid::Uuid::new_v4().to_string()));
        }
        Self::put_locked(&mut inner, resource).map(Created::New)
    }

    /// Applies a transaction Bundle all-or-nothing (FHIR R4 §3.1.0.11.2): POST entries only,
    /// conditional creates resolved against the store as it was, `urn:uuid` references
    /// rewritten to the assigned (or matched) ids. Nothing is written unless every entry is
    /// valid. Returns the transaction-response Bundle. Long on purpose: the two passes
    /// (check everything, then write) stay side by side so nothing is written half.
    pub fn transaction(&self, mut bundle: Value) -> Result<Value, StoreError> {
        if bundle.get("type").and_then(Value::as_str) != Some("transaction") {
            return Err(StoreError::Invalid("the Bundle is not of type transaction".into()));
        }
        let entries = match bundle.get_mut("entry").map(Value::take) {
            Some(Value::Array(entries)) => entries,
            _ => Vec::new(),
        };
        let mut inner = self.write_lock();
        enum Step {
            Create(Value),
            Existing(Stamp),
        }
        let mut mapping: HashMap<String, String> = HashMap::new();
        let mut steps = Vec::with_capacity(entries.len());
        for (i, entry) in entries.into_iter().enumerate() {
            let invalid = |m: String| StoreError::Invalid(format!("Bundle.entry[{i}]: {m}"));
            let Value::Object(mut entry) = entry else {
                return Err(invalid("the entry is not a JSON object".into()));
            };
            let (resource, full_url) = (entry.remove("resource"), entry.remove("fullUrl"));
            let request = entry.get("request");
            let request_text =
                |field: &str| request.and_then(|r| r.get(field)).and_then(Value::as_str);
            let method = request_text("method").unwrap_or("");
            if method != "POST" {
                return Err(invalid(format!(
                    "only POST (create) entries are supported, not `{method}`"
                )));
            }
            let mut resource =
                resource.filter(Value::is_object).ok_or_else(|| invalid("no resource".into()))?;
            let resource_type = resource
                .get("resourceType")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("the resource has no resourceType".into()))?
                .to_owned();
            if resource.get("meta").is_some_and(|m| !m.is_object()) {
                return Err(invalid("the resource's meta is not a JSON object".into()));
            }
            let url = request_text("url").unwrap_or("");
            if url.split('?').next() != Some(resource_type.as_str()) {
                return Err(invalid(format!(
                    "request.url `{url}` does not match the resource type"
                )));
            }
            let existing = match request_text("ifNoneExist") {
                Some(query) => Self::find_existing(&inner, &resource_type, query)
                    .map_err(|e| match e {
                        StoreError::MultipleMatches(n) => StoreError::MultipleMatches(n),
                        other => invalid(other.to_string()),
                    })?
                    .map(Stamp::of),
                None => None,
            };
            let (step, id) = match existing {
                Some(found) => {
                    let id = found.id.clone();
                    (Step::Existing(found), id)
                }
                None => {
                    let id = uuid::Uuid::new_v4().to_string();
                    resource["id"] = Value::String(id.clone());
                    (Step::Create(resource), id)
                }
            };
            if let Some(Value::String(full_url)) = full_url {
                mapping.insert(full_url, format!("{resource_type}/{id}"));
            }
            steps.push(step);
        }
        // Every urn:uuid reference must name an entry of this transaction.
        for (i, step) in steps.iter_mut().enumerate() {
            if let Step::Create(resource) = step {
                rewrite_urns(resource, &mapping).map_err(|r| {
                    StoreError::Invalid(format!(
                        "Bundle.entry[{i}]: {r} is not an entry of this transaction"
                    ))
                })?;
            }
        }
        // Every entry was checked above, so storing cannot fail half way; one timestamp for all.
        inner.now = Some(now_instant());
        let stamps: Result<Vec<_>, StoreError> = steps
            .into_iter()
            .map(|step| match step {
                Step::Create(resource) => {
                    Self::store_locked(&mut inner, resource).map(|s| ("201 Created", s))
                }
                Step::Existing(stamp) => Ok(("200 OK", stamp)),
            })
            .collect();
        inner.now = None;
        let response: Vec<Value> = stamps?
            .into_iter()
            .map(|(status, stamp)| {
                let location =
                    format!("{}/{}/_history/{}", stamp.resource_type, stamp.id, stamp.version);
                json!({"response": {"status": status, "location": location, "lastModified": stamp.last_updated}})
            })
            .collect();
        Ok(json!({"resourceType": "Bundle", "type": "transaction-response", "entry": response}))
    }
}

/// Replaces `urn:uuid:` values of `reference` fields using `mapping`; returns the first one
/// it cannot resolve.
fn rewrite_urns(value: &mut Value, mapping: &HashMap<String, String>) -> Result<(), String> {
    match value {
        // One pass over each object's fields (no separate lookup of `reference`).
        Value::Object(map) => map.iter_mut().try_for_each(|(field, v)| match v {
            Value::String(reference) if field == "reference" => {
                if reference.starts_with("urn:uuid:") || reference.starts_with("urn:oid:") {
                    let target =
                        mapping.get(reference.as_str()).ok_or_else(|| reference.clone())?;
                    *reference = target.clone();
                }
                Ok(())
            }
            _ => rewrite_urns(v, mapping),
        }),
        Value::Array(items) => items.iter_mut().try_for_each(|v| rewrite_urns(v, mapping)),
        _ => Ok(()),
    }
}

/// The current time as a FHIR instant.
pub fn now_instant() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn transaction(entries: Vec<Value>) -> Value {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    }

    #[test]
    fn transactions_are_all_or_nothing_and_rewrite_references() {
        let store = FhirStore::new();
        let ok = transaction(vec![
            json!({"fullUrl": "urn:uuid:a", "resource": {"resourceType": "Encounter", "identifier": [{"system": "s", "value": "e1"}]},
                   "request": {"method": "POST", "url": "Encounter", "ifNoneExist": "identifier=s|e1"}}),
            json!({"fullUrl": "urn:uuid:b", "resource": {"resourceType": "Condition", "encounter": {"reference": "urn:uuid:a"}},
                   "request": {"method": "POST", "url": "Condition"}}),
        ]);
        let response = store.transaction(ok.clone()).unwrap();
        assert_eq!(response["entry"][0]["response"]["status"], "201 Created");
        let condition = &store.search("Condition", &[])[0];
        let encounter = &store.search("Encounter", &[])[0];
        assert_eq!(
            condition["encounter"]["reference"],
            format!("Encounter/{}", encounter["id"].as_str().unwrap())
        );
        // Again: the conditional entry matches, and the new reference points at the match.
        let response = store.transaction(ok).unwrap();
        assert_eq!(response["entry"][0]["response"]["status"], "200 OK");
        assert_eq!(store.counts()["Encounter"], 1);
        // A bad entry anywhere: nothing at all is written.
        let bad = transaction(vec![
            json!({"fullUrl": "urn:uuid:c", "resource": {"resourceType": "Condition"}, "request": {"method": "POST", "url": "Condition"}}),
            json!({"resource": {"resourceType": "Condition", "encounter": {"reference": "urn:uuid:nowhere"}}, "request": {"method": "POST", "url": "Condition"}}),
        ]);
        assert!(store.transaction(bad).is_err());
        assert_eq!(store.counts()["Condition"], 2);
        let bad_meta = transaction(vec![
            json!({"resource": {"resourceType": "Condition"}, "request": {"method": "POST", "url": "Condition"}}),
            json!({"resource": {"resourceType": "Condition", "meta": "x"}, "request": {"method": "POST", "url": "Condition"}}),
        ]);
        assert!(store.transaction(bad_meta).is_err());
        assert_eq!(store.counts()["Condition"], 2);
    }

    #[test]
    fn put_read_search_and_compartment() {
        let store = FhirStore::new();
        store.put(json!({"resourceType": "Patient", "id": "p1"})).unwrap();
        store
            .put(json!({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}}))
            .unwrap();
        store.put(json!({"resourceType": "Organization", "id": "o1"})).unwrap();
        assert_eq!(store.read("Patient", "p1").unwrap()["meta"]["versionId"], "1");
        assert_eq!(store.compartment("p1").len(), 2);
        let filters =
            search::parse_filters("Condition", &[("patient".into(), "p1".into())]).unwrap();
        assert_eq!(store.search("Condition", &filters).len(), 1);
    }

    #[test]
    fn conditional_create_does_not_duplicate() {
        let store = FhirStore::new();
        let r = json!({"resourceType": "Condition", "identifier": [{"system": "urn:plan", "value": "x1"}]});
        let first = store.create(r.clone(), Some("identifier=urn:plan|x1")).unwrap();
        assert!(matches!(first, Created::New(_)));
        let second = store.create(r.clone(), Some("identifier=urn:plan%7Cx1")).unwrap();
        assert!(matches!(second, Created::Existing(_)));
        assert_eq!(store.counts()["Condition"], 1);
        store.create(r.clone(), None).unwrap();
        assert!(matches!(
            store.create(r, Some("identifier=urn:plan|x1")),
            Err(StoreError::MultipleMatches(2))
        ));
    }
}
