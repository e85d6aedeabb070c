//! Launches live server side, keyed by an opaque random id. The browser session only records
//! which launch ids it owns; everything a launch accumulates (tokens, later the plan's answer
//! and the clinician's selection) sits behind the launch's own lock, so concurrent requests
//! from two tabs never overwrite each other's changes.

use std::collections::HashMap;
use std::sync::Arc;

use api::LaunchKind;
use smart::TokenSet;
use tokio::sync::{Mutex, RwLock};

/// Everything known about one SMART launch.
#[derive(Debug, Clone)]
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
    pub identification: Option<(api::Identification, Option<crate::plan::Identified>)>,
    /// What the health plan said, and how to reach its data.
    pub plan: Option<crate::plan::PlanState>,
    /// The plan's history under review, with the clinician's selection.
    pub history: Option<crate::history::HistoryState>,
    /// What was written into the chart, oldest first.
    pub writes: Vec<api::WriteResult>,
}

#[derive(Debug)]
struct Entry {
    launch: Arc<Mutex<Launch>>,
    last_used: std::time::Instant,
}

/// The server's launches, dropped after `idle` without use.
#[derive(Debug)]
pub struct LaunchStore {
    idle: std::time::Duration,
    entries: RwLock<HashMap<String, Entry>>,
}

impl LaunchStore {
    pub fn new(idle: std::time::Duration) -> Self {
        Self { idle, entries: RwLock::default() }
    }

    pub async fn insert(&self, launch: Launch) {
        let mut entries = self.entries.write().await;
        let idle = self.idle;
        entries.retain(|_, e| e.last_used.elapsed() < idle);
        entries.insert(
            launch.id.clone(),
            Entry { launch: Arc::new(Mutex::new(launch)), last_used: std::time::Instant::now() },
        );
    }

    /// The launch, if it exists and has not idled out; touching it keeps it alive.
    pub async fn get(&self, id: &str) -> Option<Arc<Mutex<Launch>>> {
        let mut entries = self.entries.write().await;
        let entry = entries.get_mut(id)?;
        if entry.last_used.elapsed() >= self.idle {
            entries.remove(id);
            return None;
        }
        entry.last_used = std::time::Instant::now();
        Some(entry.launch.clone())
    }

    pub async fn len(&self) -> usize {
        self.entries.read().await.len()
    }

    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
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
