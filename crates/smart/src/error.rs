//! The errors of the SMART flow, apart from the flow (discovery and the client both raise them).

/// Errors of the SMART flow. Each maps to a stable code the app shows a page for; none carries
/// a token, code or verifier.
#[derive(Debug, thiserror::Error)]
pub enum SmartError {
    #[error("the EHR could not be reached: {0}")]
    Unreachable(String),
    #[error("the EHR's SMART configuration is unusable: {reason}")]
    Discovery { reason: String },
    #[error("the authorization response carried no state")]
    StateMissing,
    #[error("the authorization response's state does not match any launch in this session")]
    StateMismatch,
    #[error("the launch took too long and its authorization request has expired")]
    AuthorizationExpired,
    #[error("the EHR did not authorize the app: {error}")]
    Denied { error: String, description: Option<String> },
    #[error("the authorization response carried no code")]
    CodeMissing,
    #[error("the EHR refused the token request: {error}")]
    TokenRefused { error: String },
    #[error("the EHR's token response was not valid: {0}")]
    InvalidTokenResponse(String),
    #[error("the id_token could not be verified: {0}")]
    IdToken(String),
    #[error("the client assertion could not be signed: {0}")]
    Signing(#[from] jose::JoseError),
}

impl SmartError {
    /// A stable machine-readable code for pages and logs.
    pub fn code(&self) -> &'static str {
        match self {
            SmartError::Unreachable(_) => "ehr_unreachable",
            SmartError::Discovery { .. } => "ehr_misconfigured",
            SmartError::StateMissing | SmartError::StateMismatch => "state_mismatch",
            SmartError::AuthorizationExpired => "session_expired",
            SmartError::Denied { error, .. } if error == "access_denied" => "consent_denied",
            SmartError::Denied { .. } => "authorization_failed",
            SmartError::CodeMissing
            | SmartError::TokenRefused { .. }
            | SmartError::InvalidTokenResponse(_)
            | SmartError::IdToken(_) => "token_refused",
            SmartError::Signing(_) => "internal",
        }
    }
}
