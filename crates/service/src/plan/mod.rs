//! Asking the patient's health plan, in place of the EMR, by job: which plan and member
//! ([`identify`]), the `appointment-book` hook call ([`ask`]), following the answer to the
//! plan's FHIR API with the identity check ([`access`]), card feedback ([`feedback`]), and
//! what the page shows ([`views`]).

pub mod access;
pub mod ask;
pub mod feedback;
pub mod identify;
pub mod views;

pub use access::from_app_context;
pub use ask::request_history;
pub use feedback::{send_feedback, FeedbackInput};
pub use identify::HistoryRequest;
pub use views::{answer_view, status};
