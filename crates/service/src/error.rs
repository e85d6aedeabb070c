//! Errors at the service boundary. Internal detail goes to the log (never tokens or patient
//! data); the browser gets a stable code and a message that says what to do.

use api::{ApiError, ErrorCode, LaunchErrorCode};
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
    Session(String),
}

impl LaunchError {
    pub fn code(&self) -> LaunchErrorCode {
        match self {
            LaunchError::MissingIssuer => LaunchErrorCode::MissingIssuer,
            LaunchError::UnknownIssuer => LaunchErrorCode::UnknownIssuer,
            LaunchError::NoPatient => LaunchErrorCode::NoPatient,
            LaunchError::Session(_) => LaunchErrorCode::Internal,
            LaunchError::Smart(e) => {
                LaunchErrorCode::parse(e.code()).unwrap_or(LaunchErrorCode::Internal)
            }
        }
    }
}

/// Errors of the server functions.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("the launch is not part of this session")]
    NotInSession,
    #[error("the EHR could not be used: {0}")]
    Ehr(#[from] fhir::FhirError),
    #[error("the EHR refused to refresh the access token: {0}")]
    Refresh(SmartError),
    #[error("the request was not valid: {0}")]
    BadRequest(String),
    /// The plan could not be asked; the message names the plan and says what to do.
    #[error("plan: {0}")]
    Plan(String),
    /// The plan's member did not pass the identity check; the message says what did not
    /// match and what to do.
    #[error("member identity: {0}")]
    MemberMismatch(String),
    /// The write-back did not happen; the message says why and that retrying is safe.
    #[error("write: {0}")]
    Write(String),
    /// The launch changed (in another tab) while this request waited; nothing was changed.
    #[error("stale: {0}")]
    Stale(String),
    #[error("session store: {0}")]
    Session(String),
    #[error("{0}")]
    Internal(String),
}

impl From<tower_sessions::session::Error> for ServiceError {
    fn from(e: tower_sessions::session::Error) -> Self {
        ServiceError::Session(e.to_string())
    }
}

impl From<tower_sessions::session::Error> for LaunchError {
    fn from(e: tower_sessions::session::Error) -> Self {
        LaunchError::Session(e.to_string())
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match &e {
            ServiceError::NotInSession => ApiError::new(
                ErrorCode::SessionExpired,
                "This patient is no longer open in Member History. Launch it again from the patient's chart.",
            ),
            ServiceError::Refresh(_) | ServiceError::Ehr(fhir::FhirError::Unauthorized { .. }) => {
                tracing::warn!(error = %e, "EHR access ended");
                ApiError::new(
                    ErrorCode::SessionExpired,
                    "The EHR ended Member History's access to this chart. Launch it again from the patient's chart.",
                )
            }
            ServiceError::Ehr(fhir::FhirError::Forbidden { .. }) => ApiError::new(
                ErrorCode::EhrRefused,
                "The EHR did not allow Member History to read this part of the chart. Ask your EHR administrator to grant the app's scopes.",
            ),
            ServiceError::Ehr(fhir::FhirError::Timeout) => {
                tracing::warn!("EHR request timed out");
                ApiError::new(ErrorCode::UpstreamTimeout, "The EHR did not answer in time. Try again in a moment.")
            }
            ServiceError::Ehr(inner) => {
                tracing::warn!(error = %inner, "EHR request failed");
                ApiError::new(ErrorCode::EhrUnavailable, "The EHR did not answer as expected. Try again in a moment.")
            }
            ServiceError::BadRequest(m) => ApiError::new(ErrorCode::BadRequest, m.clone()),
            ServiceError::Plan(m) => ApiError::new(ErrorCode::PlanUnavailable, m.clone()),
            ServiceError::MemberMismatch(m) => ApiError::new(ErrorCode::MemberMismatch, m.clone()),
            ServiceError::Write(m) => ApiError::new(ErrorCode::EhrUnavailable, m.clone()),
            ServiceError::Stale(m) => ApiError::new(ErrorCode::Stale, m.clone()),
            ServiceError::Session(_) | ServiceError::Internal(_) => {
                tracing::error!(error = %e, "internal error");
                ApiError::new(ErrorCode::Internal, "Something went wrong on Member History's server. Try again.")
            }
        }
    }
}
