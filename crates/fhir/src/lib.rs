//! FHIR R4 JSON helpers and a small REST client.
//!
//! Resources stay `serde_json::Value`: Member History reads a handful of elements from many
//! resource types and must pass everything else through untouched (write-back copies the
//! plan's resources), so a full typed model would cost compile time and lose unknown elements.
//! The helpers here read the elements we need in one place.

#[cfg(feature = "client")]
pub mod base;
pub mod bundle;
#[cfg(feature = "client")]
pub mod client;
pub mod date;
#[cfg(feature = "client")]
pub mod http;
pub mod resource;

pub use bundle::{Bundle, BundleEntry, BundleLink};
#[cfg(feature = "client")]
pub use client::{FhirClient, FhirError};
pub use date::FhirDate;
pub use resource::{
    display_name, first_identifier_of_type, reference_id, Coding, Reference, ResourceExt,
};

/// The FHIR JSON media type.
pub const FHIR_JSON: &str = "application/fhir+json";
