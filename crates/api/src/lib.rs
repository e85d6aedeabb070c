//! What the browser app and the server say to each other.
//!
//! Everything here crosses to the browser: it carries what a clinician may see about the
//! launched patient and never a token. Compiled for both the server and the WASM app.

pub mod history;
pub mod ids;
pub mod launch_error;
pub mod plan;
pub mod write;

use serde::{Deserialize, Serialize};

pub use history::*;
pub use ids::{InvalidId, LaunchId, MemberId, PayerId};
pub use launch_error::LaunchErrorCode;
pub use plan::*;
pub use write::*;

/// An EHR the clinician can start a standalone launch with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EhrChoice {
    pub id: String,
    pub name: String,
    /// The EHR's FHIR base: the `iss` a standalone launch starts with.
    pub issuer: String,
}

/// The patient as the banner shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PatientSummary {
    pub name: String,
    pub gender: Option<String>,
    pub birth_date: Option<String>,
    /// Medical record number (the identifier typed `MR`).
    pub mrn: Option<String>,
}

/// The signed-in user (`fhirUser`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSummary {
    pub name: String,
    /// `Practitioner`, `PractitionerRole`, `Patient`, …
    pub resource_type: String,
}

/// SMART `smart_style_url` values the app applies as CSS custom properties. The server keeps
/// only values that are safe as CSS (colours, lengths, font lists).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SmartStyle {
    pub properties: Vec<(String, String)>,
}

/// What the review page needs about its launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewContext {
    pub launch_id: String,
    pub ehr_name: String,
    /// SMART `need_patient_banner`: false when the EHR already shows one around the app.
    pub need_patient_banner: bool,
    pub patient: PatientSummary,
    pub user: Option<UserSummary>,
    pub style: Option<SmartStyle>,
    /// How the app was opened.
    pub launch_kind: LaunchKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LaunchKind {
    /// From the EHR's app menu.
    Ehr,
    /// From a CDS Hooks card link (with `appContext`).
    CardLink,
    /// Opened directly, with the EHR's patient picker.
    Standalone,
}

/// Stable error codes of server functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No session, or the launch is not part of this browser's session.
    SessionExpired,
    /// The EHR could not be reached or answered with an error.
    EhrUnavailable,
    /// The EHR refused the app's access (token no longer valid, scope missing).
    EhrRefused,
    /// The health plan could not be reached or answered with an error.
    PlanUnavailable,
    /// The request was not valid.
    BadRequest,
    /// The plan's member is not the patient in the chart: nothing is shown or written.
    MemberMismatch,
    /// What the request acted on changed meanwhile (in another tab): reload.
    Stale,
    /// The EHR or the plan did not answer in time.
    UpstreamTimeout,
    /// Too many requests from this browser or in all: try again shortly.
    Busy,
    /// Something failed on our side; details are in the server log.
    Internal,
}

impl ErrorCode {
    /// The HTTP status a server function answers with for this code: the one table the
    /// server's status mapping and its tests read. 500 only for our own faults.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::SessionExpired => 401,
            ErrorCode::EhrRefused => 403,
            ErrorCode::BadRequest => 400,
            ErrorCode::MemberMismatch => 422,
            ErrorCode::Stale => 409,
            ErrorCode::Busy => 429,
            ErrorCode::EhrUnavailable | ErrorCode::PlanUnavailable => 502,
            ErrorCode::UpstreamTimeout => 504,
            ErrorCode::Internal => 500,
        }
    }
}

/// The error every server function returns: a stable code and a message safe to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl From<InvalidId> for ApiError {
    fn from(e: InvalidId) -> Self {
        ApiError::new(ErrorCode::BadRequest, e.to_string())
    }
}

#[cfg(feature = "server-fn")]
impl server_fn::error::FromServerFnError for ApiError {
    type Encoder = server_fn::codec::JsonEncoding;

    fn from_server_fn_error(value: server_fn::error::ServerFnErrorErr) -> Self {
        use server_fn::error::ServerFnErrorErr as E;
        match value {
            E::Request(_) => ApiError::new(
                ErrorCode::Internal,
                "Member History's server could not be reached. Check your connection and try again.",
            ),
            E::Args(_) | E::MissingArg(_) => {
                ApiError::new(ErrorCode::BadRequest, "The request was not understood. Reload the page.")
            }
            _ => ApiError::new(ErrorCode::Internal, "Something went wrong. Reload the page to try again."),
        }
    }
}
