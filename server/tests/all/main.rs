//! The server's integration tests, in one binary: as separate test files, each linked the
//! whole app on its own.
//!
//! `cargo test -p server --test all` runs them; a module name filters (`… --test all edge`).
//! The Helios suite (`real_fhir_server`) is ignored unless asked for with `--ignored`.

mod common;

mod browser;
mod browser_plan;
mod browser_review;
mod browser_write;
mod durable;
mod edge;
mod history;
mod hostile_plan;
mod launch;
mod member_access;
mod plan;
mod provider_access;
mod pushed;
mod real_fhir_server;
mod writeback;
