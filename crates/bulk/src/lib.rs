//! A FHIR Bulk Data Access 2.0 client, as the Da Vinci PDex Provider Access API uses it:
//!
//! - [`BulkClient::kick_off`]: `POST` an operation with `Prefer: respond-async` and a
//!   Parameters body; the `202` answer's `Content-Location` is the only status URL followed
//!   (never one built from the request);
//! - [`BulkClient::status`]: one poll; `202` with `X-Progress` and `Retry-After` (seconds or an
//!   HTTP date), `429` read as "slow down", the completion body handed back as it came;
//! - [`Manifest`]: the completion manifest read tolerantly (`error` or `outcome`,
//!   `requiresAccessToken` as a boolean or a string);
//! - [`NdjsonReader`]: an output file streamed line by line with a per-line cap, never whole;
//! - [`BulkClient::cancel`]: `DELETE` on the status URL (cancel, or "done, clean up").
//!
//! Tokens are the caller's (SMART Backend Services, fresh for each call: a request may run for
//! a business day). They go only to the server's own origin.

mod client;
mod error;
mod manifest;
mod ndjson;

pub use client::{next_poll, BulkClient, BulkLimits, Started, Status, StatusUrl};
pub use error::BulkError;
pub use manifest::{Manifest, OutputFile};
pub use ndjson::NdjsonReader;

/// The NDJSON media type of Bulk Data output files.
pub const FHIR_NDJSON: &str = "application/fhir+ndjson";
