//! The plan's Provider Access API (Da Vinci PDex STU 2.2, CMS-0057-F), as a request that
//! outlives the launch that made it: the clinician attests a treatment relationship, the
//! plan matches the member (`$provider-member-match`) and exports their data
//! (`$davinci-data-export`), which may take seconds or a business day. The request is a job
//! in the store, about this EHR's patient at this plan: its progress is saved at every
//! poll, a restart resumes it ([`resume`]), and a later launch of the same patient finds it
//! ([`status`]) and opens its result for review ([`open`]) after the same identity check as
//! every route.

pub(crate) mod collect;
mod drive;

use api::{ExportPurpose, HistoryView, PlanMember, ProviderAccessStage};
use api::{PlanRoute, ProviderAccessView};
use fhir::ResourceExt;
use pdex::provider_access::{self as pa, Attestation, ExportType};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::now_rfc3339;
use crate::error::{Refusal, ServiceError};
use crate::launch_state::{MemberState, PlanAccess, PlanState};
use crate::launches::StoredItems;
use crate::owned::OwnedLaunch;
use crate::plan::identify::covering_plan;
use crate::state::{AppState, PayerRuntime};

pub use drive::resume;

/// How far a request is, with what the next step needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Stage {
    /// The member match, not yet sent (or to send again: the matched Group expired).
    Match,
    /// The plan is matching: poll here.
    Matching {
        status: bulk::StatusUrl,
    },
    /// Matched: the export, not yet asked for.
    Export {
        group_id: String,
        member: Option<String>,
    },
    /// The plan is exporting: poll here.
    Exporting {
        group_id: String,
        member: Option<String>,
        status: bulk::StatusUrl,
    },
    /// Done; the items are the job's result.
    Ready {
        member: Option<String>,
        resources: usize,
        transaction_time: Option<String>,
    },
    NotMatched,
    OptedOut,
    Failed {
        message: String,
    },
}

impl Stage {
    fn is_final(&self) -> bool {
        matches!(
            self,
            Stage::Ready { .. } | Stage::NotMatched | Stage::OptedOut | Stage::Failed { .. }
        )
    }

    fn view(&self) -> ProviderAccessStage {
        match self {
            Stage::Match | Stage::Matching { .. } => ProviderAccessStage::Matching,
            Stage::Export { .. } | Stage::Exporting { .. } => ProviderAccessStage::Exporting,
            Stage::Ready { resources, .. } => ProviderAccessStage::Ready { resources: *resources },
            Stage::NotMatched => ProviderAccessStage::NotMatched,
            Stage::OptedOut => ProviderAccessStage::OptedOut,
            Stage::Failed { message } => ProviderAccessStage::Failed { message: message.clone() },
        }
    }
}

/// A Provider Access request as the job saves it (sealed in the store; no token).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AccessRequest {
    pub ehr_id: String,
    /// The EMR's Patient id.
    pub patient_id: String,
    pub payer_id: String,
    /// `fhirUser` of the clinician who asked.
    pub asked_by: Option<String>,
    pub asked_at: String,
    pub purpose: ExportPurpose,
    /// `_since` of a delta export.
    pub since: Option<String>,
    /// The `$provider-member-match` Parameters (the EMR's demographics, coverage and the
    /// attestation), kept to match again when a Group expires.
    pub match_request: Value,
    pub stage: Stage,
    /// The plan's own words on its progress (`X-Progress`).
    pub progress: Option<String>,
    /// Polls (and retries after a passing failure) since the stage began.
    pub polls: u32,
    /// Member matches made: a Group that expired before its export is matched again, once.
    pub matches: u32,
    pub updated_at: String,
}

impl AccessRequest {
    fn subject(&self) -> String {
        subject(&self.ehr_id, &self.patient_id, &self.payer_id)
    }

    fn view(&self, payer: &PayerRuntime) -> ProviderAccessView {
        ProviderAccessView {
            payer: payer.summary(),
            purpose: self.purpose,
            asked_at: self.asked_at.clone(),
            asked_by: self.asked_by.clone(),
            stage: self.stage.view(),
            progress: self.progress.clone(),
            updated_at: self.updated_at.clone(),
        }
    }
}

/// What a finished export left: the plan's member and their normalised items (not yet
/// checked against the chart, which may change before the clinician opens them).
#[derive(Serialize, Deserialize)]
pub(crate) struct AccessResult {
    pub member: Option<String>,
    /// The member's Patient at the plan, as exported (for the identity check).
    pub plan_patient: Option<Value>,
    pub items: StoredItems,
    pub notes: Vec<String>,
}

/// The key requests are found by: one EHR's patient at one plan.
fn subject(ehr_id: &str, patient_id: &str, payer_id: &str) -> String {
    format!("{ehr_id}|{patient_id}|{payer_id}")
}

/// The plan a launch's Provider Access requests go to: the one covering the patient, if it
/// offers the route.
async fn payer_for(
    owned: &OwnedLaunch,
) -> Result<(std::sync::Arc<PayerRuntime>, Option<Value>), ServiceError> {
    let (payer, who) = covering_plan(owned).await?.ok_or(Refusal::PlanNotIdentified)?;
    if !payer.config.routes.contains(&PlanRoute::ProviderAccess) {
        return Err(Refusal::RouteNotOffered.into());
    }
    Ok((payer, who.coverage))
}

/// The requests about this launch's patient at `payer`, newest first.
async fn requests(
    owned: &OwnedLaunch,
    payer: &PayerRuntime,
    limit: i64,
) -> Result<Vec<(store::JobRecord, AccessRequest)>, ServiceError> {
    let snapshot = owned.snapshot().await;
    let key = subject(&snapshot.ehr_id, &snapshot.patient_id, &payer.config.id);
    let records = owned
        .state()
        .launches
        .store()
        .jobs_about(store::JobKind::ProviderAccess, &key, limit)
        .await?;
    Ok(records
        .into_iter()
        .filter_map(|record| {
            let request: AccessRequest = serde_json::from_slice(&record.payload).ok()?;
            // The subject names the patient; the payload must agree (never another's).
            (request.subject() == key).then_some((record, request))
        })
        .collect())
}

/// The latest Provider Access request about this launch's patient at their plan, if any.
pub async fn status(owned: &OwnedLaunch) -> Result<Option<ProviderAccessView>, ServiceError> {
    let (payer, _) = payer_for(owned).await?;
    Ok(requests(owned, &payer, 1).await?.into_iter().next().map(|(record, request)| {
        let mut view = request.view(&payer);
        // The last step is saved a moment before its result: until the job is closed, it is
        // not ready to open.
        let closed = matches!(
            record.status,
            store::JobStatus::Done { .. } | store::JobStatus::Failed { .. }
        );
        if !closed && request.stage.is_final() {
            view.stage = ProviderAccessStage::Exporting;
            view.progress = Some("saving the plan's data".into());
        }
        view
    }))
}

/// Asks the patient's plan for their history by the Provider Access API, attesting the
/// signed-in clinician's treatment relationship. A request already running is shown, not
/// made again.
pub async fn ask(
    owned: &OwnedLaunch,
    purpose: ExportPurpose,
) -> Result<ProviderAccessView, ServiceError> {
    let (payer, coverage) = payer_for(owned).await?;
    let coverage = coverage.ok_or(Refusal::NoCoverageToMatch)?;
    let earlier = requests(owned, &payer, 20).await?;
    if let Some((record, running)) = earlier.first() {
        if !matches!(record.status, store::JobStatus::Done { .. } | store::JobStatus::Failed { .. })
        {
            return Ok(running.view(&payer));
        }
    }
    let since = match purpose {
        ExportPurpose::Delta => Some(last_import(&earlier).ok_or(Refusal::NothingImportedYet)?),
        _ => None,
    };
    let match_request = match_parameters(owned, &coverage).await?;
    let snapshot = owned.snapshot().await;
    let now = now_rfc3339();
    let request = AccessRequest {
        ehr_id: snapshot.ehr_id.clone(),
        patient_id: snapshot.patient_id.clone(),
        payer_id: payer.config.id.clone(),
        asked_by: snapshot.fhir_user.clone(),
        asked_at: now.clone(),
        purpose,
        since,
        match_request,
        stage: Stage::Match,
        progress: None,
        polls: 0,
        matches: 0,
        updated_at: now,
    };
    let state = owned.state();
    let store = state.launches.store();
    let queued = store
        .enqueue(
            store::NewJob {
                kind: store::JobKind::ProviderAccess,
                dedupe_key: Some(format!("provider-access:{}", request.subject())),
                // A request outlives its launch: found again by subject.
                launch_id: None,
                subject: Some(request.subject()),
                payload: serde_json::to_vec(&request).expect("a request serialises"),
                run_after: store::now(),
                leased_to: Some((state.worker_id.clone(), state.job_lease_secs())),
            },
            store::now(),
        )
        .await?;
    if !queued.new {
        // Another tab or server asked a moment ago.
        let view =
            requests(owned, &payer, 1).await?.into_iter().next().map(|(_, r)| r.view(&payer));
        return view.ok_or_else(|| Refusal::AccessRequestRunning.into());
    }
    let view = request.view(&payer);
    tokio::spawn(drive::drive(state.clone(), queued.id, request));
    Ok(view)
}

/// The transaction time of the newest export imported in full (what a delta starts from).
fn last_import(requests: &[(store::JobRecord, AccessRequest)]) -> Option<String> {
    requests.iter().find_map(|(_, r)| match (&r.stage, r.purpose) {
        (
            Stage::Ready { transaction_time: Some(at), .. },
            ExportPurpose::Download | ExportPurpose::Delta,
        ) => Some(at.clone()),
        _ => None,
    })
}

/// The `$provider-member-match` Parameters: the EMR's patient, its Coverage, and the
/// clinician's treatment attestation (by NPI, from the EMR's record of the signed-in user).
async fn match_parameters(owned: &OwnedLaunch, coverage: &Value) -> Result<Value, ServiceError> {
    let fhir_user = owned.snapshot().await.fhir_user;
    let reference = fhir_user
        .as_deref()
        .and_then(|u| fhir::Reference::parse(u).local())
        .ok_or(Refusal::NoFhirUser)?;
    let emr = owned.emr();
    let (user, patient) = tokio::join!(emr.read_reference(&reference), emr.patient());
    let (user, patient) = (user?, patient?);
    let npi = user
        .get("identifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|i| i.str_at("system") == Some(pa::NPI_SYSTEM))
        .and_then(|i| i.str_at("value"))
        .filter(|npi| npi.len() == 10 && npi.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(Refusal::NoNpi)?
        .to_owned();
    let name = fhir::display_name(&user);
    let now = time::OffsetDateTime::now_utc();
    let date = |d: time::OffsetDateTime| d.date().to_string();
    let at = now_rfc3339();
    let (start, end) = (date(now), date(now + time::Duration::days(365)));
    let attestation = Attestation {
        npi: &npi,
        clinician_name: name.as_deref(),
        at: &at,
        period_start: &start,
        period_end: &end,
    };
    Ok(pa::member_match_request(&patient, coverage, &attestation))
}

/// Opens the newest finished export of this patient for review ([`review_result`]).
pub async fn open(owned: &OwnedLaunch) -> Result<HistoryView, ServiceError> {
    let (payer, _) = payer_for(owned).await?;
    let found =
        requests(owned, &payer, 20).await?.into_iter().find_map(|(record, request)| {
            match (&record.status, &request.stage) {
                (store::JobStatus::Done { result }, Stage::Ready { .. }) => {
                    Some((record.id.clone(), result.clone(), request.purpose))
                }
                _ => None,
            }
        });
    let (job_id, result, purpose) = found.ok_or(Refusal::NoAccessResult)?;
    let result: AccessResult = serde_json::from_slice(&result)
        .map_err(|e| store::StoreError::Seal(format!("Provider Access result unreadable: {e}")))?;
    let view_only = purpose == ExportPurpose::Snapshot;
    review_result(owned, &payer, format!("provider-access:{job_id}"), result, view_only).await
}

/// Opens what a plan sent by a route other than the hook (an export, a push) for review: the
/// plan's member must be the launched patient (else nothing is shown, and the refusal is
/// audited); what the chart already holds is marked, as on every route. `origin` names
/// the request or push the data came from (in place of the hook instance).
pub(crate) async fn review_result(
    owned: &OwnedLaunch,
    payer: &PayerRuntime,
    origin: String,
    result: AccessResult,
    view_only: bool,
) -> Result<HistoryView, ServiceError> {
    let member = result.member.clone().ok_or(Refusal::NoAccessResult)?;
    let mut access = PlanAccess {
        fhir_base: payer.config.fhir_base.clone(),
        patient: member.clone(),
        member_id: None,
        token: None,
        expires_at: None,
        member_authorized: false,
    };
    // The export's own Patient, else read now (an export may leave it out).
    let plan_patient = match result.plan_patient.clone() {
        Some(patient) => patient,
        None => crate::plan::access::read_plan_patient(owned.state(), payer, &access).await?,
    };
    access.member_id = cds_hooks::pdex::member_id(&plan_patient).map(str::to_owned);
    let emr_patient = owned.emr().patient().await?;
    let checked = crate::plan::access::check_identity(payer, &emr_patient, &plan_patient);
    let items = result.items.into_items();
    let member_state = match &checked {
        Ok(()) => MemberState::Confirmed {
            access: access.clone(),
            member: PlanMember {
                name: fhir::display_name(&plan_patient).unwrap_or_else(|| "Unnamed member".into()),
                birth_date: plan_patient.str_at("birthDate").map(str::to_owned),
                member_id: access.member_id.clone(),
                records: Some(items.len() as u64),
            },
        },
        Err(mismatch) => MemberState::Mismatch(mismatch.clone()),
    };
    let plan = PlanState {
        payer_id: payer.config.id.clone(),
        service_id: None,
        hook_instance: Some(origin),
        cards: Vec::new(),
        notes: result.notes.clone(),
        member: member_state,
        feedback: Default::default(),
    };
    owned
        .update(|launch| {
            if launch.history.as_ref().is_some_and(|h| !h.is_for(&plan.payer_id, &member)) {
                launch.history = None;
            }
            launch.plan = Some(plan.clone());
            Ok(())
        })
        .await?;
    if let Err(mismatch) = checked {
        crate::plan::access::audit_refused(owned, &plan.payer_id, &mismatch).await;
        return Err(ServiceError::MemberMismatch(mismatch));
    }
    let read = crate::history::checked_against_chart(owned, items, result.notes, view_only).await;
    crate::history::keep(owned, payer, &plan, access, read).await
}

/// How `purpose` is asked of the plan.
fn export_type(purpose: ExportPurpose) -> ExportType {
    match purpose {
        ExportPurpose::Download => ExportType::Download,
        ExportPurpose::Snapshot => ExportType::Snapshot,
        ExportPurpose::Delta => ExportType::Delta,
    }
}

/// Whose request this is, for the audit log.
fn who<'a>(state: &'a AppState, request: &'a AccessRequest) -> Option<crate::audit::Who<'a>> {
    let ehr = state.ehr(&request.ehr_id)?;
    Some(crate::audit::Who {
        user: request.asked_by.as_deref(),
        ehr: &ehr.config,
        patient: &request.patient_id,
    })
}
