//! Errors at the service boundary, with typed causes, and the one place where they become the
//! words a clinician reads. Internal detail is logged once, where an error leaves the server
//! (`From<ServiceError> for ApiError`), never tokens or patient data; the browser gets a
//! stable code and a message that says what to do.

use api::{ApiError, ErrorCode, LaunchErrorCode};
use cds_hooks::CdsError;
use smart::SmartError;

/// Why a launch (`/launch` or `/callback`) failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("no iss parameter")]
    MissingIssuer,
    #[error("the issuer is not configured")]
    UnknownIssuer,
    #[error("the EHR launched without a patient")]
    NoPatient,
    #[error(transparent)]
    Smart(#[from] SmartError),
    #[error("session store: {0}")]
    Session(#[from] tower_sessions::session::Error),
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
}

impl LaunchError {
    pub fn code(&self) -> LaunchErrorCode {
        match self {
            LaunchError::MissingIssuer => LaunchErrorCode::MissingIssuer,
            LaunchError::UnknownIssuer => LaunchErrorCode::UnknownIssuer,
            LaunchError::NoPatient => LaunchErrorCode::NoPatient,
            LaunchError::Session(_) | LaunchError::Store(_) => LaunchErrorCode::Internal,
            LaunchError::Smart(e) => {
                LaunchErrorCode::parse(e.code()).unwrap_or(LaunchErrorCode::Internal)
            }
        }
    }
}

/// Errors of the use cases behind the server functions.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("the launch is not part of this session")]
    NotInSession,
    /// The launch's EHR or plan was removed from the configuration since it started.
    #[error("the launch's {0} is no longer configured")]
    NotConfigured(&'static str),
    #[error("the EHR could not be used: {0}")]
    Ehr(#[from] fhir::FhirError),
    #[error("the EHR refused to refresh the access token: {0}")]
    Refresh(SmartError),
    #[error("refused: {0:?}")]
    Refused(Refusal),
    #[error("plan `{plan}`: {cause}")]
    Plan { plan: String, cause: PlanFailure },
    /// The plan's member did not pass the identity check.
    #[error("member identity check failed ({:?})", .0.fields)]
    MemberMismatch(api::MemberMismatch),
    /// The write-back did not happen.
    #[error("write into `{ehr}`: {cause}")]
    Write { ehr: String, cause: WriteFailure },
    /// The launch changed (in another tab) while this request waited; nothing was recorded.
    #[error("the plan's answer was replaced while the request waited")]
    Stale,
    #[error("session store: {0}")]
    Session(#[from] tower_sessions::session::Error),
    /// The launch's saved state could not be read or written.
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    /// Work handed to a task of its own ended without an answer (it panicked, or the server
    /// is shutting down).
    #[error("background task: {0}")]
    Task(String),
}

/// A request that cannot be carried out as asked (the page's order of steps, or a crafted
/// call): 400 with what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    AskPlanFirst,
    LoadHistoryFirst,
    SelectSomething,
    MemberIdFromCoverage,
    UnknownPlan,
    PlanNotIdentified,
    NoFhirUser,
    NoSuchCard,
    NoSuchSuggestion,
    NoSuchReason,
    CardTakesNoFeedback,
    NoHookCall,
    NoSuchItem,
    AnswerChanged,
    PlanDataUnavailable,
    WriteInProgress,
    RouteNotOffered,
    NoCoverageToMatch,
    NoNpi,
    NothingImportedYet,
    AccessRequestRunning,
    NoAccessResult,
    NoPushedHistory,
    MemberAccessNotOffered,
    ViewOnly,
}

impl From<Refusal> for ServiceError {
    fn from(r: Refusal) -> Self {
        ServiceError::Refused(r)
    }
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::AskPlanFirst => "Ask the plan for the patient's history first.",
            Refusal::LoadHistoryFirst => "Load the plan's history first.",
            Refusal::SelectSomething => "Select at least one item to add to the chart.",
            Refusal::MemberIdFromCoverage => "The patient's coverage already gives the member id, so Member History asks the plan with it. If it is wrong, correct the coverage in the EHR.",
            Refusal::UnknownPlan => "Choose one of the plans offered.",
            Refusal::PlanNotIdentified => "Member History could not tell which plan covers this patient. Choose the plan and enter the member id.",
            Refusal::NoFhirUser => "The EHR did not say who is signed in (fhirUser), which the plan needs. Ask your EHR administrator to grant Member History the openid and fhirUser scopes.",
            Refusal::NoSuchCard => "No such card.",
            Refusal::NoSuchSuggestion => "No such suggestion on this card.",
            Refusal::NoSuchReason => "Choose one of the plan's reasons.",
            Refusal::CardTakesNoFeedback => "The plan did not make this card one it can take feedback on.",
            Refusal::NoHookCall => "No hook call to give feedback on.",
            Refusal::NoSuchItem => "That item is not in the plan's history.",
            Refusal::AnswerChanged => "The plan's answer changed since the history was loaded. Reload the history and select again.",
            Refusal::PlanDataUnavailable => "The plan's data is not available.",
            Refusal::WriteInProgress => "This patient's selection is already being added to the chart (from another tab, or a moment ago). Wait a moment and reload the page to see the result.",
            Refusal::RouteNotOffered => "This plan does not offer the Provider Access API to Member History. Ask it by the other route offered.",
            Refusal::NoCoverageToMatch => "The plan's Provider Access API matches members by their coverage, and the chart has none for this plan. Add the patient's coverage in the EHR, then ask again.",
            Refusal::NoNpi => "The plan needs the treating clinician's NPI for the treatment attestation, and the EHR's record of the signed-in user has none. Ask your EHR administrator to add it.",
            Refusal::NothingImportedYet => "Nothing was imported from this plan for this patient yet: ask for the full history first.",
            Refusal::AccessRequestRunning => "A request to this plan for this patient is already running. Its progress is shown; it does not need asking again.",
            Refusal::ViewOnly => "This history was asked of the plan to view only (a snapshot): nothing of it can be added to the chart. Ask the plan for the full history to import it.",
            Refusal::MemberAccessNotOffered => "This patient's plan does not let its members sign in to share their records with Member History. Ask the plan by one of the routes offered.",
            Refusal::NoPushedHistory => "The plan has pushed no history for this patient (or it was deleted after the retention time). Ask the plan by one of the routes offered.",
            Refusal::NoAccessResult => "The plan's answer for this patient is not ready yet (or was deleted after the retention time). Ask the plan again.",
        }
    }
}

/// Why a plan could not be asked, or its data not used.
#[derive(Debug, thiserror::Error)]
pub enum PlanFailure {
    #[error("hook call: {0}")]
    Hook(#[from] CdsError),
    #[error("data: {0}")]
    Data(DataProblem),
    #[error("history read: {0}")]
    History(String),
    #[error("member re-check: {0}")]
    Unconfirmed(fhir::FhirError),
}

/// Why a plan that matched the member gives no data to review: kept with the answer and
/// shown on the page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum DataProblem {
    #[error("no pointer to the member's data")]
    NoPointer,
    #[error("the pointer names an unconfigured FHIR server")]
    OtherServer,
    #[error("the member id is not a FHIR id")]
    BadMemberId,
    #[error("SMART configuration unreadable: {0}")]
    SmartConfiguration(String),
    #[error("access token refused: {0}")]
    AccessRefused(String),
    #[error("member record unreadable: {0}")]
    Unreadable(String),
    #[error("the EMR patient could not be read for the identity check")]
    EmrPatientUnreadable,
}

impl DataProblem {
    /// The page's sentence: what happened, naming the plan.
    pub fn message(&self, plan: &str) -> String {
        match self {
            DataProblem::NoPointer => format!("{plan} did not say where the member's data is."),
            DataProblem::OtherServer => format!("{plan} pointed to a FHIR server that is not configured for it; Member History did not follow it."),
            DataProblem::BadMemberId => format!("{plan} named the member with an id that is not valid."),
            DataProblem::SmartConfiguration(e) => format!("{plan}'s SMART configuration could not be read ({e})."),
            DataProblem::AccessRefused(code) => format!("{plan} refused Member History's request for access ({code})."),
            DataProblem::Unreadable(e) => format!("Member History could not read {plan}'s data: {e}."),
            DataProblem::EmrPatientUnreadable => "Member History could not read the patient's record in the EHR to check it is the plan's member. Try again.".into(),
        }
    }
}

/// Why nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum WriteFailure {
    #[error("{0}")]
    Refused(fhir::FhirError),
    #[error("none of the selected kinds is accepted")]
    NothingAccepted,
}

/// A sentence naming the plan, saying what went wrong with the hook call and what to do.
pub fn hook_message(e: &CdsError, plan: &str) -> String {
    match e {
        CdsError::Timeout(d) => format!("{plan} did not answer within {} seconds. Try again in a moment.", d.as_secs()),
        CdsError::Unreachable(_) => format!("{plan} could not be reached. Check the connection and try again."),
        CdsError::Refused(_) => format!("{plan} did not accept Member History's credentials. Ask your administrator to check the plan's registration of Member History."),
        CdsError::PreconditionFailed => format!("{plan} could not get the data it needs about this patient. Check the patient's coverage and try again."),
        CdsError::Status(code) if *code >= 500 => format!("{plan} had a problem answering (HTTP {code}). Try again later."),
        CdsError::Status(code) => format!("{plan} refused the request (HTTP {code}). Ask your administrator to check the plan's settings."),
        CdsError::TooLarge(_) => format!("{plan} sent an answer too large to show safely. Tell your administrator."),
        CdsError::NotJson(ct) => format!("{plan} sent an answer Member History cannot read (it was {ct}, not JSON). Tell your administrator."),
        CdsError::Malformed(what) => format!("{plan} sent an answer Member History cannot read: {what}. Tell your administrator."),
        CdsError::NoService(hook) => format!("{plan} does not offer a {hook} service. Ask your administrator to check the plan's settings."),
        CdsError::Signing(_) => "Member History could not sign its request. Tell your administrator.".into(),
    }
}

/// A failed write: what happened and that retrying is safe.
pub fn write_failure_message(ehr: &str, e: &fhir::FhirError) -> String {
    match e {
        fhir::FhirError::Timeout | fhir::FhirError::Transport(_) => format!(
            "{ehr} did not confirm the write. Your selection is kept: try again. Anything {ehr} did write is recognised and not duplicated."
        ),
        e if e.status() == Some(413) => format!(
            "{ehr} refused the write as too large (HTTP 413). Nothing was written and your selection is kept: add it to the chart in smaller parts."
        ),
        e if e.is_transient() => format!(
            "{ehr} could not write right now ({e}). Nothing was written and your selection is kept: try again."
        ),
        e => format!(
            "{ehr} refused the write ({}){}. Nothing was written and your selection is kept.",
            e.status().map(|s| format!("HTTP {s}")).unwrap_or_else(|| e.to_string()),
            e.outcome_text().map(|t| format!(": {t}")).unwrap_or_default()
        ),
    }
}

/// The identity check's failure as the page shows it: which parts differ, never the values.
pub fn mismatch(plan: &str, fields: Vec<pdex::identity::IdentityField>) -> api::MemberMismatch {
    use pdex::identity::IdentityField as F;
    let words = |f: &F| match f {
        F::BirthDate => "birth date",
        F::Name => "name",
        F::Sex => "sex",
    };
    let parts: Vec<&str> = fields.iter().map(words).collect();
    let differ = match parts.as_slice() {
        [one] => format!("the {one} differs"),
        [init @ .., last] => format!("the {} and {last} differ", init.join(", ")),
        [] => "it differs".to_owned(),
    };
    let message = format!(
        "{plan}'s member record does not match this patient: {differ}. Nothing from {plan} is shown or written into this chart. Check the member id on the patient's insurance card and the patient's name, birth date and sex in the EHR, then ask again; if they are right, contact {plan}."
    );
    api::MemberMismatch { fields, message }
}

impl ServiceError {
    /// The stable code and the clinician's sentence.
    fn for_clinician(&self) -> (ErrorCode, String) {
        use fhir::FhirError as F;
        let internal = (
            ErrorCode::Internal,
            "Something went wrong on Member History's server. Try again.".into(),
        );
        match self {
            ServiceError::NotInSession => (ErrorCode::SessionExpired, "This patient is no longer open in Member History. Launch it again from the patient's chart.".into()),
            ServiceError::Refresh(_) | ServiceError::Ehr(F::Unauthorized { .. }) => (ErrorCode::SessionExpired, "The EHR ended Member History's access to this chart. Launch it again from the patient's chart.".into()),
            ServiceError::Ehr(F::Forbidden { .. }) => (ErrorCode::EhrRefused, "The EHR did not allow Member History to read this part of the chart. Ask your EHR administrator to grant the app's scopes.".into()),
            ServiceError::Ehr(F::Timeout) => (ErrorCode::UpstreamTimeout, "The EHR did not answer in time. Try again in a moment.".into()),
            ServiceError::Ehr(_) => (ErrorCode::EhrUnavailable, "The EHR did not answer as expected. Try again in a moment.".into()),
            ServiceError::Refused(r) => (ErrorCode::BadRequest, r.message().into()),
            ServiceError::Plan { plan, cause } => (ErrorCode::PlanUnavailable, match cause {
                PlanFailure::Hook(e) => hook_message(e, plan),
                PlanFailure::Data(problem) => problem.message(plan),
                PlanFailure::History(e) => format!("Member History could not read {plan}'s history: {e}. Try again."),
                PlanFailure::Unconfirmed(_) => format!("Member History could not confirm with {plan} that its member is this patient, so nothing was written. Try again."),
            }),
            ServiceError::MemberMismatch(m) => (ErrorCode::MemberMismatch, m.message.clone()),
            ServiceError::Write { ehr, cause: WriteFailure::Refused(e) } => (ErrorCode::EhrUnavailable, write_failure_message(ehr, e)),
            ServiceError::Write { ehr, cause: WriteFailure::NothingAccepted } => (ErrorCode::EhrUnavailable, format!("{ehr} accepts none of the selected kinds of record.")),
            ServiceError::Stale => (ErrorCode::Stale, "The plan's answer was replaced in another tab while this was sent, so it is not recorded here. Reload the page to see the current cards.".into()),
            ServiceError::Store(_) => (ErrorCode::Internal, "Member History could not read or save this patient's review just now. Nothing was lost: try again in a moment.".into()),
            ServiceError::NotConfigured(_) | ServiceError::Session(_) | ServiceError::Task(_) => internal,
        }
    }

    /// Logged once, where the error leaves the server: what an operator needs, at the level
    /// it deserves (a clinician's mis-step is not a warning).
    fn log(&self) {
        match self {
            ServiceError::NotInSession | ServiceError::Refused(_) | ServiceError::Stale => {
                tracing::info!(error = %self, "request refused")
            }
            ServiceError::NotConfigured(_)
            | ServiceError::Session(_)
            | ServiceError::Store(_)
            | ServiceError::Task(_) => {
                tracing::error!(error = %self, "internal error")
            }
            _ => tracing::warn!(error = %self, "request failed"),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        e.log();
        let (code, message) = e.for_clinician();
        ApiError::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pdex::identity::IdentityField;

    #[test]
    fn the_mismatch_message_names_the_parts_and_what_to_do() {
        let m = mismatch("Acme Health", vec![IdentityField::BirthDate, IdentityField::Name]);
        assert!(m.message.contains("the birth date and name differ"), "{}", m.message);
        assert!(m.message.contains("Nothing from Acme Health is shown or written"));
        assert!(m.message.contains("insurance card"));
        let one = mismatch("Acme Health", vec![IdentityField::Sex]);
        assert!(one.message.contains("the sex differs"));
    }

    #[test]
    fn write_failures_say_what_happened_and_what_to_do() {
        let status = |status: u16| fhir::FhirError::Status { status, outcome: None };
        let too_large = write_failure_message("Sandbox EHR", &status(413));
        assert!(too_large.contains("too large") && too_large.contains("smaller parts"));
        assert!(write_failure_message("Sandbox EHR", &status(503)).contains("try again"));
        let timeout = write_failure_message("Sandbox EHR", &fhir::FhirError::Timeout);
        assert!(timeout.contains("not duplicated"));
        let refused = write_failure_message("Sandbox EHR", &status(422));
        assert!(refused.contains("HTTP 422") && refused.contains("selection is kept"));
    }

    #[test]
    fn every_error_has_a_code_and_a_sentence() {
        let errors = [
            ServiceError::NotInSession,
            ServiceError::NotConfigured("EHR"),
            ServiceError::Refused(Refusal::NoSuchItem),
            ServiceError::Stale,
            ServiceError::Plan {
                plan: "Acme".into(),
                cause: PlanFailure::Data(DataProblem::NoPointer),
            },
        ];
        for e in errors {
            let (_, message) = e.for_clinician();
            assert!(message.ends_with('.'), "{message}");
        }
    }
}
