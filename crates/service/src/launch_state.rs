//! What a launch holds, as data: the launch, the plan's answer (in the states it really goes
//! through), the history under review and the selection. No use case lives here.
//!
//! Launches live in the store (`crate::launches`), keyed by an opaque random id, as one
//! sealed record each; the history's items are a record of their own, read only when a
//! request needs them. The browser session only records which launch ids it owns.

use std::collections::{BTreeMap, HashMap, HashSet};

use api::{CardFeedback, HistoryView, LaunchKind, MemberIdSource, PlanMember};
use cds_hooks::CheckedCard;
use pdex::filter::Own;
use pdex::HistoryItem;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use smart::{Secret, TokenSet};
use url::Url;

/// Everything known about one SMART launch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    pub id: String,
    pub ehr_id: String,
    pub kind: LaunchKind,
    pub tokens: TokenSet,
    pub patient_id: String,
    pub encounter_id: Option<String>,
    /// `fhirUser` (absolute or relative to the FHIR base).
    pub fhir_user: Option<String>,
    pub need_patient_banner: bool,
    pub smart_style_url: Option<String>,
    /// CDS Hooks card-link `appContext`, verbatim.
    pub app_context: Option<String>,
    /// The Appointment the EHR launched us for (SMART `fhirContext`): the appointment sent in
    /// the `appointment-book` request instead of a proposed one made up here.
    pub appointment_id: Option<String>,
    /// SMART `intent` (e.g. `reconcile`), as the EHR sent it.
    pub intent: Option<String>,
    /// SMART `tenant`: the healthcare organisation of the launch, passed to the plan as the
    /// CDS Hooks JWT `tenant`.
    pub tenant: Option<String>,
    /// The style fetched from `smart_style_url`, once.
    pub style: Option<api::SmartStyle>,
    /// Which plan covers the patient and how the member is named (read once).
    pub identification: Option<(api::Identification, Option<Identified>)>,
    /// What the health plan said, and how to reach its data.
    pub plan: Option<PlanState>,
    /// The plan's history under review, with the clinician's selection.
    pub history: Option<HistoryState>,
    /// What was written into the chart, oldest first.
    pub writes: Vec<api::WriteResult>,
    /// The member's sign-in at the plan, when the clinician handed it to them.
    #[serde(default)]
    pub member_access: Option<MemberAccessState>,
}

/// Who the member is, once identified from the EMR's coverage (or typed by the clinician).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identified {
    pub payer_id: String,
    pub coverage: Option<Value>,
    pub member_id: Option<String>,
    pub source: MemberIdSource,
}

/// Access to the member's data at the plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanAccess {
    pub fhir_base: Url,
    /// The member's Patient id at the plan.
    pub patient: String,
    pub member_id: Option<String>,
    pub token: Option<Secret>,
    pub expires_at: Option<u64>,
    /// The token is the member's own (member-authorized access): it is never replaced by a
    /// Backend Services token, which would see what the member withheld.
    #[serde(default)]
    pub member_authorized: bool,
}

/// How far Member History got with the member the plan answered about. Only `Confirmed`
/// lets anything of the plan's be shown or written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MemberState {
    /// The plan did not match the member (its hook answered other than 200).
    NotMatched,
    /// Where the member's data is, not yet checked against the launched patient.
    Unchecked(PlanAccess),
    /// The plan's member passed the identity check against the launched patient.
    Confirmed { access: PlanAccess, member: PlanMember },
    /// The identity check failed: nothing of the plan's is shown or written.
    Mismatch(api::MemberMismatch),
    /// The plan matched, but its data cannot be reached; the message says why. `access` is
    /// kept when the plan named it (a later ask may reuse its token).
    NoData { problem: crate::error::DataProblem, access: Option<PlanAccess> },
}

impl MemberState {
    /// Where the member's data is, in any state that named it.
    pub fn access(&self) -> Option<&PlanAccess> {
        match self {
            MemberState::Unchecked(access)
            | MemberState::Confirmed { access, .. }
            | MemberState::NoData { access: Some(access), .. } => Some(access),
            _ => None,
        }
    }

    pub fn access_mut(&mut self) -> Option<&mut PlanAccess> {
        match self {
            MemberState::Unchecked(access)
            | MemberState::Confirmed { access, .. }
            | MemberState::NoData { access: Some(access), .. } => Some(access),
            _ => None,
        }
    }

    /// Whether the plan matched its member.
    pub fn outcome(&self) -> api::AnswerOutcome {
        match self {
            MemberState::NotMatched => api::AnswerOutcome::NotMatched,
            _ => api::AnswerOutcome::Matched,
        }
    }

    /// The confirmed member's access: what history and write-back may use.
    pub fn confirmed(&self) -> Option<&PlanAccess> {
        match self {
            MemberState::Confirmed { access, .. } => Some(access),
            _ => None,
        }
    }
}

/// What a launch knows of the plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanState {
    pub payer_id: String,
    /// The CDS service asked; `None` for a launch from a card link (no hook call of ours).
    pub service_id: Option<String>,
    pub hook_instance: Option<String>,
    pub cards: Vec<CheckedCard>,
    pub notes: Vec<String>,
    pub member: MemberState,
    /// Feedback sent, by card index.
    pub feedback: HashMap<usize, CardFeedback>,
}

/// The history of a launch, as reviewed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryState {
    pub payer_id: String,
    /// The member's Patient id at the plan the items came from.
    pub member_patient: String,
    /// The stored snapshot of the items (`crate::launches::Launches::items`): new with every
    /// read of the plan, so a request never mixes one read's selection with another's items.
    pub items_id: String,
    pub selected: HashSet<String>,
    /// Items written into the chart since the read, with the chart's reference when known.
    #[serde(default)]
    pub written: BTreeMap<String, Option<String>>,
    pub own: Own,
    pub notes: Vec<String>,
    pub fetched_at: String,
    /// Asked of the plan to view only (a Provider Access snapshot): never written.
    #[serde(default)]
    pub view_only: bool,
}

impl HistoryState {
    /// Whether this history was read for `member_patient` at `payer_id`.
    pub fn is_for(&self, payer_id: &str, member_patient: &str) -> bool {
        self.payer_id == payer_id && self.member_patient == member_patient
    }

    /// An item as the review shows it now: once written, it is in the chart.
    pub fn current(&self, item: &HistoryItem) -> HistoryItem {
        let mut item = item.clone();
        if let Some(reference) = self.written.get(&item.key) {
            item.duplicate_of = reference.clone().or_else(|| Some("written".into()));
        }
        item
    }

    pub fn view(&self, items: &[HistoryItem], payer: &str) -> HistoryView {
        HistoryView {
            payer: payer.to_owned(),
            items: items
                .iter()
                .map(|i| match self.written.contains_key(&i.key) {
                    true => pdex::ReviewRow::new(&self.current(i), &self.own),
                    false => pdex::ReviewRow::new(i, &self.own),
                })
                .collect(),
            selected: items
                .iter()
                .filter(|i| self.selected.contains(&i.key))
                .map(|i| i.key.clone())
                .collect(),
            own_organization_known: !self.own.organization_identifiers.is_empty()
                || !self.own.organization_names.is_empty(),
            notes: self.notes.clone(),
            fetched_at: self.fetched_at.clone(),
            view_only: self.view_only,
        }
    }
}

/// A new launch id: 256 random bits, URL-safe.
pub fn new_launch_id() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A member sign-in at the plan as the launch keeps it (sealed in the store with the
/// launch; `member_access.rs` drives it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberAccessState {
    pub payer_id: String,
    /// SHA-256 of the OAuth `state`, hex: what the link and the callback find the launch by.
    pub(crate) handle_hash: String,
    pub(crate) authorize_url: String,
    /// Spent at the callback (a second use finds nothing).
    pub(crate) pending: Option<smart::PendingAuthorization>,
    pub(crate) requested_scope: String,
    pub(crate) outcome: MemberAccessOutcome,
}

/// How far a member sign-in is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MemberAccessOutcome {
    Waiting,
    /// The member signed in; not yet checked against the EMR patient.
    SignedIn {
        token: smart::Secret,
        expires_at: Option<u64>,
        patient: String,
        granted: String,
    },
    Shared {
        withheld: Vec<String>,
    },
    Refused {
        message: String,
    },
}
