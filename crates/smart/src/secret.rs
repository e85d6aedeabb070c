//! A string that must never be printed: access and refresh tokens, code verifiers.

use serde::{Deserialize, Serialize};

/// Serialises as the plain string (it is stored in the server-side session) but prints as
/// `Secret(***)` in `Debug`, so a token cannot reach a log through `{:?}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_does_not_reveal() {
        let s = Secret::new("eyJhbGciOi");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "eyJhbGciOi");
    }
}
