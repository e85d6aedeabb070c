//! The state of the plan's Provider Access API: requests in progress, matched Groups, the
//! members who opted out, and the switches tests and the demo use to make it behave as the
//! strictest or the loosest plan would.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How the plan's Provider Access API behaves (tests and the demo switch these).
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// How long each request runs before its answer is ready.
    pub delay: Duration,
    /// Opted-out members answered in `ConsentConstrainedMembers` (else as not matched).
    pub report_opt_outs: bool,
    /// Exports fail half-way through with an OperationOutcome.
    pub fail_exports: bool,
    /// Resources per NDJSON file (a type with more is split over several files).
    pub lines_per_file: usize,
    /// How long a matched Group can be exported from.
    pub group_lifetime: Duration,
    /// The match answers in a manifest of NDJSON Group files instead of a Parameters body.
    pub match_as_manifest: bool,
    /// Output files listed per manifest page (Bulk Data `link` `next` to the rest); 0 lists
    /// them all in one.
    pub files_per_manifest: usize,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(300),
            report_opt_outs: true,
            fail_exports: false,
            lines_per_file: 500,
            group_lifetime: Duration::from_secs(600),
            match_as_manifest: false,
            files_per_manifest: 0,
        }
    }
}

/// A request in progress or done.
#[derive(Debug)]
pub(crate) struct Request {
    pub started: Instant,
    pub ready_at: Instant,
    pub answer: Answer,
}

#[derive(Debug)]
pub(crate) enum Answer {
    /// The match result (Parameters with the three Groups).
    Match(Value),
    /// The export's files, by type, and its transaction time.
    Export { files: Vec<(String, Vec<Value>)>, transaction_time: String, fail: bool },
}

#[derive(Debug)]
pub(crate) struct MatchedGroup {
    pub members: Vec<String>,
    pub expires: Instant,
}

/// The Provider Access API's state.
#[derive(Debug, Default)]
pub struct ProviderAccess {
    pub behaviour: Mutex<Behaviour>,
    /// Plan Patient ids of members who opted out of Provider Access.
    pub opted_out: Mutex<HashSet<String>>,
    pub(crate) requests: Mutex<HashMap<String, Request>>,
    pub(crate) groups: Mutex<HashMap<String, MatchedGroup>>,
    /// Every operation's Parameters, for the tests.
    pub received: Mutex<Vec<(String, Value)>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ProviderAccess {
    pub fn behaviour(&self) -> Behaviour {
        lock(&self.behaviour).clone()
    }

    pub fn set_behaviour(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut lock(&self.behaviour));
    }

    /// Requests the plan still holds (not cancelled or cleaned up).
    pub fn open_requests(&self) -> usize {
        lock(&self.requests).len()
    }

    pub(crate) fn start(&self, answer: Answer) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let now = Instant::now();
        let delay = self.behaviour().delay;
        lock(&self.requests)
            .insert(id.clone(), Request { started: now, ready_at: now + delay, answer });
        id
    }
}
