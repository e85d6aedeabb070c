//! Identifiers the browser sends back: checked when they are read (a server function's
//! arguments, or the form that builds them), so nothing past the edge handles a raw string.

use serde::{Deserialize, Serialize};

/// Why an identifier was refused; the text is for the clinician.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(&'static str);

/// Letters, digits, `-` and `_`, 1 to `max` of them (URL-safe base64 and configuration ids).
fn url_safe(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $check:expr, $why:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `value` (surrounding blanks removed).
            pub fn parse(value: &str) -> Result<Self, InvalidId> {
                let value = value.trim();
                let check: fn(&str) -> bool = $check;
                if check(value) {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(InvalidId($why))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, InvalidId> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A launch, as the server named it (256 random bits, URL-safe base64). Only the shape is
    /// checked here; whether the caller owns it is checked by the server.
    LaunchId,
    |v| url_safe(v, 128),
    "That is not a Member History launch. Launch the app again from the patient's chart."
);

id_type!(
    /// A configured health plan's id.
    PayerId,
    |v| url_safe(v, 64),
    "Choose one of the plans offered."
);

id_type!(
    /// A member id typed by the clinician (from the patient's insurance card).
    MemberId,
    |v| {
        !v.is_empty()
            && v.len() <= 64
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    },
    "A member id has only letters, digits, '-', '_' and '.', at most 64 of them."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_when_read() {
        assert_eq!(LaunchId::parse(" abc-_9 ").expect("valid").as_str(), "abc-_9");
        assert!(LaunchId::parse("").is_err());
        assert!(LaunchId::parse("a/b").is_err());
        assert!(LaunchId::parse(&"a".repeat(129)).is_err());
        assert!(MemberId::parse("M-100.2_x").is_ok());
        assert!(MemberId::parse("M 100").is_err());
        assert!(MemberId::parse(&"1".repeat(65)).is_err());
        assert!(PayerId::parse("acme.health").is_err());
        let parsed: Result<LaunchId, _> = serde_json::from_str("\"<script>\"");
        assert!(parsed.is_err());
        let json =
            serde_json::to_string(&PayerId::parse("acme").expect("valid")).expect("serialises");
        assert_eq!(json, "\"acme\"");
    }
}
