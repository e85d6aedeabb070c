//! CDS Hooks 2.0, client side, for an app that calls a health plan's service in place of
//! the EMR (Da Vinci PDex ad-hoc member history request).
//!
//! - [`model`]: discovery, request, response, card, suggestion, action, link, feedback.
//! - [`prefetch`]: template tokens and fulfilment against the EMR.
//! - [`client`]: signed-JWT discovery, hook calls and feedback with limits.
//! - [`cards`]: card-by-card checks of what a service sent.
//! - [`markdown`]: card detail rendered to safe HTML.
//! - [`appointment_book`]: the `appointment-book` hook's context.
//! - [`pdex`]: how PDex names the member in a request and points at the data in an answer.

pub mod appointment_book;
pub mod cards;
pub mod client;
pub mod markdown;
pub mod model;
pub mod pdex;
pub mod phr;
pub mod prefetch;

pub use cards::{CheckedCard, CheckedResponse};
pub use client::{CdsClient, CdsError, CdsLimits, ClientIdentity, HookAnswer};
pub use model::*;
