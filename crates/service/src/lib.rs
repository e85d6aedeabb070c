//! Member History's use cases, shared by the axum routes and the Leptos server functions:
//! the SMART launch, access to the clinician's EMR, and what the review page shows.
//!
//! Layers, each importing only those above it: data ([`launch_state`], [`config`],
//! [`error`]), runtime ([`state`]: the one `AppState`; [`launches`]: launches in the store), handles ([`emr`], [`owned`]: a launch
//! resolved once at the edge), use cases ([`launch`], [`context`], [`plan`],
//! [`provider_access`], [`push`], [`member_access`], [`history`], [`writeback`]; [`jobs`]: what runs between requests). Knows tower-sessions' `Session` type (only [`launch`] and
//! [`owned::OwnedLaunch::resolve`] touch it), not axum or Leptos.

pub mod audit;
pub mod clock;
pub mod config;
pub mod context;
pub mod emr;
pub mod error;
pub mod history;
pub mod jobs;
pub mod launch;
pub mod launch_state;
pub mod launches;
pub mod member_access;
pub mod owned;
pub mod plan;
pub mod provider_access;
pub mod push;
pub mod session;
pub mod state;
pub mod writeback;

pub use config::AppConfig;
pub use error::{LaunchError, ServiceError};
pub use owned::OwnedLaunch;
pub use state::AppState;

/// The EHRs offered on the start page (standalone launch).
pub fn configured_ehrs(state: &AppState) -> Vec<api::EhrChoice> {
    state
        .config
        .ehrs
        .iter()
        .map(|e| api::EhrChoice {
            id: e.id.clone(),
            name: e.name.clone(),
            issuer: e.issuer.to_string(),
        })
        .collect()
}
