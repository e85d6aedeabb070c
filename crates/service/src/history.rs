//! The member's history for review: fetched from the plan once (or on refresh), checked
//! against the EMR's chart, and kept with the launch together with the clinician's selection,
//! so a reload or a second tab finds both as they were.

use std::collections::HashSet;

use api::{HistoryView, ItemDetail, SelectionSummary};
use fhir::ResourceExt;
use futures::StreamExt;
use pdex::dedupe::ChartIndex;
use pdex::filter::Own;
use pdex::{Category, HistoryItem};
use serde_json::Value;

use crate::clock::now_rfc3339;
use crate::error::{PlanFailure, Refusal, ServiceError};
use crate::launch_state::{HistoryState, PlanAccess, PlanState};
use crate::owned::OwnedLaunch;
use crate::plan::access::{confirmed_access, follow_if_needed, plan_token};
use crate::state::PayerRuntime;

/// How long a plan's CapabilityStatement is reused.
const CAPABILITY_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// The review list of a launch: the plan's history, fetched now unless already held (or
/// `refresh` asks for it again, keeping the selection of items still there).
pub async fn load(owned: &OwnedLaunch, refresh: bool) -> Result<HistoryView, ServiceError> {
    let (plan, payer) = owned.plan().await?;
    let plan = follow_if_needed(owned, &payer, plan).await;
    let access = confirmed_access(&payer, &plan)?;
    if !refresh {
        let held = owned.snapshot().await.history;
        if let Some(history) = held.filter(|h| h.is_for(&plan.payer_id, &access.patient)) {
            let items = owned.items(&history).await?;
            return Ok(history.view(&items, &payer.config.name));
        }
    }
    let _turn = owned
        .state()
        .history_reads
        .acquire()
        .await
        .map_err(|e| ServiceError::Task(e.to_string()))?;
    let (read, access) = read_history(owned, &payer, access).await?;
    keep(owned, &payer, &plan, access, read).await
}

/// What one read of the plan's history found.
pub(crate) struct Read {
    items: Vec<HistoryItem>,
    own: Own,
    notes: Vec<String>,
    view_only: bool,
}

/// Items the plan sent by another route (a Provider Access export), checked against the
/// patient's chart as a read here is: what the chart holds is marked, newest first.
pub(crate) async fn checked_against_chart(
    owned: &OwnedLaunch,
    mut items: Vec<HistoryItem>,
    notes: Vec<String>,
    view_only: bool,
) -> Read {
    let ((chart_resources, chart_notes), own) = tokio::join!(chart(owned), own_parties(owned));
    let index = ChartIndex::new(&chart_resources);
    pdex::dedupe::mark_duplicates(&mut items, &index);
    let mut notes = notes;
    notes.extend(chart_notes);
    Read { items: pdex::newest_first(items), own, notes, view_only }
}

/// Reads the member's history at the plan and the patient's chart at the EMR together, and
/// marks what the chart already holds.
async fn read_history(
    owned: &OwnedLaunch,
    payer: &PayerRuntime,
    mut access: PlanAccess,
) -> Result<(Read, PlanAccess), ServiceError> {
    let state = owned.state();
    let failed = |cause| ServiceError::Plan { plan: payer.config.name.clone(), cause };
    let token = plan_token(state, payer, &mut access)
        .await
        .map_err(|problem| failed(PlanFailure::Data(problem)))?;
    let client = state.plan_fhir_client(payer, &access.fhir_base);
    let token = token.as_ref().map(|t| t.expose());
    let capability = capability(payer, &client, token).await;
    let options = pdex::fetch::FetchOptions {
        concurrent_searches: state.config.limits.searches_per_load,
        ..Default::default()
    };
    let (fetched, (chart_resources, mut notes), own) = tokio::join!(
        pdex::fetch::fetch_history(&client, token, &access.patient, &capability, &options),
        chart(owned),
        own_parties(owned),
    );
    let fetched = fetched.map_err(|e| failed(PlanFailure::History(e.to_string())))?;
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
    Ok((Read { items, own, notes, view_only: false }, access))
}

/// Keeps a fresh read with the launch (its items as a new snapshot in the store): a refresh
/// keeps the clinician's choices for items still there; new items get the default.
pub(crate) async fn keep(
    owned: &OwnedLaunch,
    payer: &PayerRuntime,
    plan: &PlanState,
    access: PlanAccess,
    read: Read,
) -> Result<HistoryView, ServiceError> {
    let previous =
        owned.snapshot().await.history.filter(|h| h.is_for(&plan.payer_id, &access.patient));
    let known: HashSet<String> = match &previous {
        // A snapshot already purged leaves nothing to carry over.
        Some(old) => owned
            .items(old)
            .await
            .map(|items| items.iter().map(|i| i.key.clone()).collect())
            .unwrap_or_default(),
        None => HashSet::new(),
    };
    let selected: HashSet<String> = read
        .items
        .iter()
        .filter(|i| match &previous {
            Some(old) if known.contains(&i.key) => old.selected.contains(&i.key),
            _ => i.selected_by_default(),
        })
        .map(|i| i.key.clone())
        .collect();
    let item_count = read.items.len();
    crate::audit::record(
        owned,
        crate::audit::Access {
            action: store::AuditAction::PlanHistoryRead,
            outcome: store::AuditOutcome::Success,
            plan: Some(&plan.payer_id),
            count: item_count,
            references: read.items.iter().map(|i| i.key.clone()).collect(),
            note: None,
        },
    )
    .await?;
    let (items_id, items) = owned.state().launches.put_items(owned.id(), read.items).await?;
    let history = HistoryState {
        payer_id: plan.payer_id.clone(),
        member_patient: access.patient.clone(),
        items_id,
        selected,
        written: Default::default(),
        own: read.own,
        notes: read.notes,
        fetched_at: now_rfc3339(),
        view_only: read.view_only,
    };
    let view = history.view(&items, &payer.config.name);
    owned
        .update(|launch| {
            launch.history = Some(history.clone());
            // The token may have been renewed for this read: keep it with the same member.
            if let Some(held) = launch.plan.as_mut().and_then(|p| p.member.access_mut()) {
                if held.patient == access.patient && held.fhir_base == access.fhir_base {
                    *held = access.clone();
                }
            }
            Ok(())
        })
        .await?;
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
async fn chart(owned: &OwnedLaunch) -> (Vec<Value>, Vec<String>) {
    let patient = owned.snapshot().await.patient_id;
    let emr = owned.emr();
    let searches =
        pdex::model::history_resource_types().into_iter().map(|resource_type| {
            let patient = patient.as_str();
            async move {
                (resource_type, emr.search_all(resource_type, &[("patient", patient)], 50).await)
            }
        });
    // A few at a time: 13 searches per load, times every clinician loading, is more than an
    // EHR should be asked at once (the EHR's gate bounds the total too).
    let results: Vec<_> = futures::stream::iter(searches.collect::<Vec<_>>())
        .buffered(owned.state().config.limits.searches_per_load)
        .collect()
        .await;
    let mut resources = Vec::new();
    let mut notes = Vec::new();
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

/// The signed-in clinician and their organisation as the exclusion filter knows them.
async fn own_parties(owned: &OwnedLaunch) -> Own {
    let mut own = Own::default();
    for entry in &owned.ehr().config.own_organization {
        if entry.contains('|') {
            own.organization_identifiers.push(entry.clone());
        } else {
            own.organization_names.push(entry.clone());
        }
    }
    let fhir_user = owned.snapshot().await.fhir_user;
    let Some(reference) = fhir_user.as_deref().and_then(|u| fhir::Reference::parse(u).local())
    else {
        return own;
    };
    if let Ok(user) = owned.emr().read_reference(&reference).await {
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
    owned: &OwnedLaunch,
    keys: &[String],
    selected: bool,
) -> Result<SelectionSummary, ServiceError> {
    let held = owned.snapshot().await.history.ok_or(Refusal::LoadHistoryFirst)?;
    let items = owned.items(&held).await?;
    let known: HashSet<&str> = items.iter().map(|i| i.key.as_str()).collect();
    owned
        .update(|launch| {
            let history = launch.history.as_mut().ok_or(Refusal::LoadHistoryFirst)?;
            // The history was read again (another tab) since: these keys were of the old one.
            if history.items_id != held.items_id {
                return Err(Refusal::AnswerChanged.into());
            }
            for key in keys.iter().filter(|k| known.contains(k.as_str())) {
                if selected {
                    history.selected.insert(key.clone());
                } else {
                    history.selected.remove(key);
                }
            }
            Ok(SelectionSummary { selected: history.selected.len() })
        })
        .await
}

/// Everything about one item, raw resource included.
pub async fn item_detail(owned: &OwnedLaunch, key: &str) -> Result<ItemDetail, ServiceError> {
    let history = owned.snapshot().await.history.ok_or(Refusal::LoadHistoryFirst)?;
    let items = owned.items(&history).await?;
    let item = items.iter().find(|i| i.key == key).ok_or(Refusal::NoSuchItem)?;
    Ok(ItemDetail {
        raw_json: serde_json::to_string_pretty(&item.resource).unwrap_or_default(),
        item: history.current(item),
    })
}
