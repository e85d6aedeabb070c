//! Background jobs: work that must outlive the request (and the server) that started it.
//! A job is leased to one worker at a time; a lease that runs out (the server died) lets
//! another worker take the job over.

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Writing a launch's selection into the EMR.
    WriteBack,
    /// A Provider Access request at a plan: member match, then a bulk export, polled until
    /// done (minutes to a business day).
    ProviderAccess,
    /// A member's history a plan pushed (`Patient/$everything`), waiting in the queue for a
    /// clinician to open that patient; never run by a worker.
    PushedHistory,
    /// The index from a member sign-in's handle to its launch (the member's device has no
    /// session); never run, deleted with the launch.
    MemberAccess,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::WriteBack => "write-back",
            JobKind::ProviderAccess => "provider-access",
            JobKind::PushedHistory => "pushed-history",
            JobKind::MemberAccess => "member-access",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "write-back" => Some(JobKind::WriteBack),
            "provider-access" => Some(JobKind::ProviderAccess),
            "pushed-history" => Some(JobKind::PushedHistory),
            "member-access" => Some(JobKind::MemberAccess),
            _ => None,
        }
    }
}

/// A job to queue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: JobKind,
    /// Queuing the same key again while the job is not finished returns the queued job.
    pub dedupe_key: Option<String>,
    pub launch_id: Option<String>,
    /// What the job is about, for finding it again from a later launch (`None`: only by id).
    pub subject: Option<String>,
    pub payload: Vec<u8>,
    pub run_after: i64,
    /// Leased at once to this worker for this many seconds (the request runs it itself, and
    /// the queue takes over only if it never finishes).
    pub leased_to: Option<(String, i64)>,
}

/// What queuing gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub id: String,
    /// `false` when a job with the same dedupe key was already queued or running.
    pub new: bool,
}

/// A job as a worker holds it.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub kind: JobKind,
    pub launch_id: Option<String>,
    pub payload: Vec<u8>,
    /// How many times it was leased, this time included.
    pub attempts: i64,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    Done,
    Failed,
}

/// Where a job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    Queued,
    Running { attempts: i64 },
    Done { result: Vec<u8> },
    Failed { result: Vec<u8> },
}

/// A job as a lookup by subject finds it.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: String,
    pub status: JobStatus,
    /// The payload as last saved (a running job saves its progress in it).
    pub payload: Vec<u8>,
    pub created_at: i64,
    pub updated_at: i64,
}
