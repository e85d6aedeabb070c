//! Why a launch failed, and what the clinician should do about it. The server picks the
//! code; the app's error page (and the server's no-script fallback) say the words.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LaunchErrorCode {
    /// `/launch` named an issuer that is not configured.
    UnknownIssuer,
    /// `/launch` without `iss`.
    MissingIssuer,
    /// The user (or the EHR on their behalf) declined.
    ConsentDenied,
    /// The EHR answered the authorization with another error.
    AuthorizationFailed,
    /// The callback's `state` is missing or not ours.
    StateMismatch,
    /// The browser session ended (or the launch is too old).
    SessionExpired,
    /// The EHR could not be reached.
    EhrUnreachable,
    /// The EHR's SMART configuration is unusable.
    EhrMisconfigured,
    /// The EHR refused to exchange the code (expired, replayed, or client not accepted).
    TokenRefused,
    /// The EHR launched without a patient in context.
    NoPatient,
    /// Member History is at capacity, or this address started too many launches.
    Busy,
    /// A fault on our side.
    Internal,
}

impl LaunchErrorCode {
    pub const ALL: [LaunchErrorCode; 12] = [
        LaunchErrorCode::UnknownIssuer,
        LaunchErrorCode::MissingIssuer,
        LaunchErrorCode::ConsentDenied,
        LaunchErrorCode::AuthorizationFailed,
        LaunchErrorCode::StateMismatch,
        LaunchErrorCode::SessionExpired,
        LaunchErrorCode::EhrUnreachable,
        LaunchErrorCode::EhrMisconfigured,
        LaunchErrorCode::TokenRefused,
        LaunchErrorCode::NoPatient,
        LaunchErrorCode::Busy,
        LaunchErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LaunchErrorCode::UnknownIssuer => "unknown_issuer",
            LaunchErrorCode::MissingIssuer => "missing_issuer",
            LaunchErrorCode::ConsentDenied => "consent_denied",
            LaunchErrorCode::AuthorizationFailed => "authorization_failed",
            LaunchErrorCode::StateMismatch => "state_mismatch",
            LaunchErrorCode::SessionExpired => "session_expired",
            LaunchErrorCode::EhrUnreachable => "ehr_unreachable",
            LaunchErrorCode::EhrMisconfigured => "ehr_misconfigured",
            LaunchErrorCode::TokenRefused => "token_refused",
            LaunchErrorCode::NoPatient => "no_patient",
            LaunchErrorCode::Busy => "busy",
            LaunchErrorCode::Internal => "internal",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// A short heading.
    pub fn title(self) -> &'static str {
        match self {
            LaunchErrorCode::UnknownIssuer | LaunchErrorCode::MissingIssuer => {
                "This EHR is not set up for Member History"
            }
            LaunchErrorCode::ConsentDenied => "Access was not granted",
            LaunchErrorCode::AuthorizationFailed => "The EHR did not authorize Member History",
            LaunchErrorCode::StateMismatch => "This sign-in could not be verified",
            LaunchErrorCode::SessionExpired => "Your session has expired",
            LaunchErrorCode::EhrUnreachable => "The EHR could not be reached",
            LaunchErrorCode::EhrMisconfigured => "The EHR's SMART settings are not usable",
            LaunchErrorCode::TokenRefused => "The EHR refused to complete the sign-in",
            LaunchErrorCode::NoPatient => "No patient was selected",
            LaunchErrorCode::Busy => "Member History is busy",
            LaunchErrorCode::Internal => "Member History could not start",
        }
    }

    /// What went wrong, in plain words.
    pub fn what_happened(self) -> &'static str {
        match self {
            LaunchErrorCode::UnknownIssuer => "The app was opened from an EHR whose address is not in Member History's configuration, so Member History did not contact it.",
            LaunchErrorCode::MissingIssuer => "The app was opened without the EHR address (the iss parameter) that a SMART launch carries.",
            LaunchErrorCode::ConsentDenied => "The request to open the patient's record was declined in the EHR's sign-in screen.",
            LaunchErrorCode::AuthorizationFailed => "The EHR answered the sign-in request with an error.",
            LaunchErrorCode::StateMismatch => "The answer from the EHR does not belong to a sign-in started in this browser. This happens with an old or copied link, or a sign-in started in another browser.",
            LaunchErrorCode::SessionExpired => "Member History no longer has this patient open, because the browser session ended or the sign-in took too long.",
            LaunchErrorCode::EhrUnreachable => "Member History could not connect to the EHR's authorization or FHIR service.",
            LaunchErrorCode::EhrMisconfigured => "The EHR's SMART configuration is missing something Member History needs (such as PKCE S256 support).",
            LaunchErrorCode::TokenRefused => "The EHR did not accept the sign-in code. It may have expired or been used already.",
            LaunchErrorCode::NoPatient => "The EHR opened Member History without a patient in context.",
            LaunchErrorCode::Busy => "Member History is serving as many sessions as it is set up for, or too many launches came from this network address in the last minute.",
            LaunchErrorCode::Internal => "An unexpected fault occurred on Member History's server. It has been logged.",
        }
    }

    /// What to do next.
    pub fn what_to_do(self) -> &'static str {
        match self {
            LaunchErrorCode::UnknownIssuer | LaunchErrorCode::MissingIssuer | LaunchErrorCode::EhrMisconfigured => {
                "Ask your EHR administrator to register this EHR with Member History, then launch again."
            }
            LaunchErrorCode::ConsentDenied => "If this was a mistake, launch Member History again and allow access.",
            LaunchErrorCode::AuthorizationFailed | LaunchErrorCode::TokenRefused | LaunchErrorCode::StateMismatch => {
                "Close this window and launch Member History again from the patient's chart."
            }
            LaunchErrorCode::SessionExpired => "Launch Member History again from the patient's chart.",
            LaunchErrorCode::EhrUnreachable => "Wait a moment and launch again. If it keeps happening, tell your EHR administrator.",
            LaunchErrorCode::NoPatient => "Open a patient's chart in the EHR and launch Member History from there.",
            LaunchErrorCode::Busy => "Wait half a minute and launch again from the patient's chart.",
            LaunchErrorCode::Internal => "Try again. If it keeps happening, contact support with the time of the error.",
        }
    }

    /// The HTTP status of the error page.
    pub fn http_status(self) -> u16 {
        match self {
            LaunchErrorCode::UnknownIssuer
            | LaunchErrorCode::MissingIssuer
            | LaunchErrorCode::StateMismatch
            | LaunchErrorCode::NoPatient => 400,
            LaunchErrorCode::ConsentDenied
            | LaunchErrorCode::AuthorizationFailed
            | LaunchErrorCode::TokenRefused => 403,
            LaunchErrorCode::SessionExpired => 401,
            LaunchErrorCode::Busy => 503,
            LaunchErrorCode::EhrUnreachable | LaunchErrorCode::EhrMisconfigured => 502,
            LaunchErrorCode::Internal => 500,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in LaunchErrorCode::ALL {
            assert_eq!(LaunchErrorCode::parse(code.as_str()), Some(code));
            assert!(!code.what_to_do().is_empty());
        }
        assert_eq!(LaunchErrorCode::parse("nope"), None);
    }
}
