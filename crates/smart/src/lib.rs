//! SMART App Launch 2.2, client side (plus the scope grammar, which the sandbox EHR shares).
//!
//! - [`discovery`]: `.well-known/smart-configuration`, fetched once per issuer and cached.
//! - [`client`]: the authorize URL (PKCE S256, `state`, `aud`, `launch`), callback checks,
//!   the code exchange as a confidential client (`private_key_jwt` with ES384/RS384, or
//!   `client_secret_basic`), refresh, and SMART Backend Services.
//! - [`http`]: the reads of a server's published JSON (configuration, JWKS).
//! - [`token`]: the typed token response with the SMART launch context fields.
//! - [`scopes`]: SMART v2 scopes (`patient/Observation.rs`), with v1 mapped.

pub mod client;
pub mod discovery;
pub mod error;
pub mod http;
pub mod scopes;
pub mod secret;
pub mod token;

pub use client::{
    CallbackParams, ClientAuth, LaunchRequest, PendingAuthorization, SmartClient, SmartError,
};
pub use discovery::{Discovery, SmartConfiguration};
pub use secret::Secret;
pub use token::{FhirContextItem, TokenResponse, TokenSet};
