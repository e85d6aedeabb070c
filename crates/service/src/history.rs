//! The member's history for review: fetched from the plan once (or on refresh), checked
//! against the EMR's chart, and kept with the launch together with the clinician's selection,
//! so a reload or a second tab finds both as they were.

use std::collections::HashSet;
use std::sync::Arc;

use api::{HistoryView, ItemDetail, SelectionSummary};
use fhir::ResourceExt;
use futures::StreamExt;
use pdex::dedupe::ChartIndex;
use pdex::filter::Own;
use pdex::{Category, HistoryItem};
use serde_json::Value;
use tokio::sync::Mutex;
use tower_sessions::Session;

use crate::context::owned_launch;
use crate::emr::with_emr;
use crate::error::ServiceError;
use crate::launches::Launch;
use crate::plan::plan_token;
use crate::state::{AppState, PayerRuntime};

/// How long a plan's CapabilityStatement is reused.
const CAPABILITY_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// The history of a launch, as reviewed.
#[derive(Debug, Clone)]
pub struct HistoryState {
    pub payer_id: String,
    /// The member's Patient id at the plan the items came from.
    pub member_patient: String,
    pub items: Arc<Vec<HistoryItem>>,
    pub selected: HashSet<String>,
    pub own: Own,
    pub notes: Vec<String>,
    pub fetched_at: String,
}

impl HistoryState {
    fn view(&self, payer: &str) -> HistoryView {
        HistoryView {
            payer: payer.to_owned(),
            items: self.items.iter().map(|i| pdex::ReviewRow::new(i, &self.own)).collect(),
            selected: self
                .items
                .iter()
                .filter(|i| self.selected.contains(&i.key))
                .map(|i| i.key.clone())
                .collect(),
            own_organization_known: !self.own.organization_identifiers.is_empty()
                || !self.own.organization_names.is_empty(),
            notes: self.notes.clone(),
            fetched_at: self.fetched_at.clone(),
        }
    }
}

/// The review list of a launch: the plan's history, fetched now unless already held (or
/// `refresh` asks for it again, keeping the selection of items still there).
pub async fn load(
    state: &AppState,
    session: &Session,
    launch_id: &str,
    refresh: bool,
) -> Result<HistoryView, ServiceError> {
    let launch = owned_launch(state, session, launch_id).await?;
    let snapshot = launch.lock().await.clone();
    let plan = snapshot.plan.clone().ok_or_else(|| {
        ServiceError::BadRequest("Ask the plan for the patient's history first.".into())
    })?;
    let payer = state
        .payer(&plan.payer_id)
        .ok_or_else(|| ServiceError::Internal("payer no longer configured".into()))?;
    // Nothing of the plan's is read for review until its member is confirmed as this patient.
    let plan = crate::plan::follow_if_needed(state, &launch, payer, plan).await;
    if let Some(mismatch) = &plan.mismatch {
        return Err(ServiceError::MemberMismatch(mismatch.message.clone()));
    }
    let mut access = match (&plan.access, &plan.member) {
        (Some(access), Some(_)) => access.clone(),
        _ => {
            return Err(ServiceError::Plan(plan.data_problem.clone().unwrap_or_else(|| {
                format!("{} did not say where the member's data is.", payer.config.name)
            })))
        }
    };
    let member_patient = access.patient.clone();
    let same_member =
        |h: &HistoryState| h.payer_id == plan.payer_id && h.member_patient == member_patient;
    if let Some(history) = snapshot.history.as_ref().filter(|h| same_member(h)) {
        if !refresh {
            return Ok(history.view(&payer.config.name));
        }
    }
    let token = plan_token(state, payer, &mut access).await.map_err(ServiceError::Plan)?;
    let client = state.plan_fhir_client(payer, &access.fhir_base);
    let token_str = token.as_ref().map(|t| t.expose().to_owned());
    let plan_error = |e: &dyn std::fmt::Display| {
        tracing::warn!(payer = %payer.config.id, error = %e, "reading the plan's history failed");
        ServiceError::Plan(format!(
            "Member History could not read {}'s history: {e}. Try again.",
            payer.config.name
        ))
    };
    let capability = capability(payer, &client, token_str.as_deref()).await;
    let options = pdex::fetch::FetchOptions {
        concurrent_searches: state.config.limits.searches_per_load,
        ..Default::default()
    };
    let (fetched, chart) = tokio::join!(
        pdex::fetch::fetch_history(
            &client,
            token_str.as_deref(),
            &access.patient,
            &capability,
            &options
        ),
        chart(state, &launch, &snapshot),
    );
    let fetched = fetched.map_err(|e| plan_error(&e))?;
    let (chart_resources, mut notes) = chart;
    let mut own = own_parties(state, &launch, &snapshot).await;
    if let Some(ehr) = state.ehr(&snapshot.ehr_id) {
        for entry in &ehr.config.own_organization {
            if entry.contains('|') {
                own.organization_identifiers.push(entry.clone());
            } else {
                own.organization_names.push(entry.clone());
            }
        }
    }
    for (resource_type, why) in &fetched.skipped_types {
        notes.push(format!(
            "{}'s {resource_type} records could not be read ({why}).",
            payer.config.name
        ));
    }
    if fetched.truncated {
        notes.push(format!(
            "{} has more records than Member History reads at once; the newest are shown.",
            payer.config.name
        ));
    }
    let index = ChartIndex::new(&chart_resources);
    let items = pdex::review_items(fetched.pages, &index);
    tracing::info!(payer = %payer.config.id, items = items.len(), "plan history read");

    let mut guard = launch.lock().await;
    let previous = guard.history.take();
    let selected: HashSet<String> = match previous {
        // A refresh keeps the clinician's choices for items still there; new items get the default.
        Some(old) if same_member(&old) => {
            let known: HashSet<&String> = old.items.iter().map(|i| &i.key).collect();
            items
                .iter()
                .filter(|i| {
                    if known.contains(&i.key) {
                        old.selected.contains(&i.key)
                    } else {
                        i.selected_by_default()
                    }
                })
                .map(|i| i.key.clone())
                .collect()
        }
        _ => items.iter().filter(|i| i.selected_by_default()).map(|i| i.key.clone()).collect(),
    };
    let history = HistoryState {
        payer_id: plan.payer_id.clone(),
        member_patient: member_patient.clone(),
        items: Arc::new(items),
        selected,
        own,
        notes,
        fetched_at: crate::plan::now_rfc3339(),
    };
    let view = history.view(&payer.config.name);
    guard.history = Some(history);
    if let Some(p) = guard.plan.as_mut() {
        p.access = Some(access);
    }
    Ok(view)
}

async fn capability(payer: &PayerRuntime, client: &fhir::FhirClient, token: Option<&str>) -> Value {
    let mut cached = payer.capability.lock().await;
    if let Some((at, value)) = cached.as_ref() {
        if at.elapsed() < CAPABILITY_TTL {
            return value.clone();
        }
    }
    match client.capabilities(token).await {
        Ok(value) => {
            *cached = Some((std::time::Instant::now(), value.clone()));
            value
        }
        Err(e) => {
            // Without it, per-type searches still work.
            tracing::warn!(payer = %payer.config.id, error = %e, "plan CapabilityStatement unreadable");
            Value::Null
        }
    }
}

/// The EMR's own resources of the review's types for the patient (to find what the chart
/// already holds), and notes on what could not be read.
async fn chart(
    state: &AppState,
    launch: &Arc<Mutex<Launch>>,
    snapshot: &Launch,
) -> (Vec<Value>, Vec<String>) {
    let mut resources = Vec::new();
    let mut notes = Vec::new();
    let searches = pdex::model::history_resource_types().into_iter().map(|resource_type| {
        let patient = snapshot.patient_id.clone();
        async move {
            let result = with_emr(state, launch, |client, token| {
                let patient = patient.clone();
                async move {
                    client
                        .search_all(
                            Some(token.expose()),
                            resource_type,
                            &[("patient", &patient)],
                            50,
                        )
                        .await
                }
            })
            .await;
            (resource_type, result)
        }
    });
    // A few at a time: 13 searches per load, times every clinician loading, is more than an
    // EHR should be asked at once (the EHR's gate bounds the total too).
    let results: Vec<_> = futures::stream::iter(searches.collect::<Vec<_>>())
        .buffered(state.config.limits.searches_per_load)
        .collect()
        .await;
    for (resource_type, result) in results {
        match result {
            Ok(found) => resources.extend(found),
            Err(ServiceError::Ehr(e)) if matches!(e.status(), Some(400 | 403 | 404)) => {
                let group =
                    Category::of(resource_type).map(Category::label).unwrap_or(resource_type);
                let note = format!("{group} could not be checked against the chart (the EHR did not allow reading {resource_type}).");
                if !notes.contains(&note) {
                    notes.push(note);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, resource_type, "chart read failed");
                notes.push(format!("{resource_type} could not be checked against the chart; possible duplicates are not marked."));
            }
        }
    }
    (resources, notes)
}

/// The signed-in clinician as the exclusion filter knows them.
async fn own_parties(state: &AppState, launch: &Arc<Mutex<Launch>>, snapshot: &Launch) -> Own {
    let mut own = Own::default();
    let Some(reference) =
        snapshot.fhir_user.as_deref().and_then(|u| fhir::Reference::parse(u).local())
    else {
        return own;
    };
    let user = with_emr(state, launch, |client, token| {
        let reference = reference.clone();
        async move { client.read_reference(Some(token.expose()), &reference).await }
    })
    .await;
    if let Ok(user) = user {
        for identifier in user.get("identifier").and_then(Value::as_array).into_iter().flatten() {
            if let (Some(system), Some(value)) =
                (identifier.str_at("system"), identifier.str_at("value"))
            {
                own.practitioner_identifiers.push(format!("{system}|{value}"));
            }
        }
        own.practitioner_names.extend(fhir::display_name(&user));
    }
    own
}

/// Selects or deselects `keys` (items not in the history are ignored).
pub async fn set_selection(
    state: &AppState,
    session: &Session,
    launch_id: &str,
    keys: &[String],
    selected: bool,
) -> Result<SelectionSummary, ServiceError> {
    let launch = owned_launch(state, session, launch_id).await?;
    let mut guard = launch.lock().await;
    let history = guard
        .history
        .as_mut()
        .ok_or_else(|| ServiceError::BadRequest("Load the plan's history first.".into()))?;
    let known: HashSet<&str> = history.items.iter().map(|i| i.key.as_str()).collect();
    for key in keys.iter().filter(|k| known.contains(k.as_str())) {
        if selected {
            history.selected.insert(key.clone());
        } else {
            history.selected.remove(key);
        }
    }
    Ok(SelectionSummary { selected: history.selected.len() })
}

/// Everything about one item, raw resource included.
pub async fn item_detail(
    state: &AppState,
    session: &Session,
    launch_id: &str,
    key: &str,
) -> Result<ItemDetail, ServiceError> {
    let launch = owned_launch(state, session, launch_id).await?;
    let guard = launch.lock().await;
    let history = guard
        .history
        .as_ref()
        .ok_or_else(|| ServiceError::BadRequest("Load the plan's history first.".into()))?;
    let item = history.items.iter().find(|i| i.key == key).ok_or_else(|| {
        ServiceError::BadRequest("That item is not in the plan's history.".into())
    })?;
    Ok(ItemDetail {
        raw_json: serde_json::to_string_pretty(&item.resource).unwrap_or_default(),
        item: item.clone(),
    })
}
