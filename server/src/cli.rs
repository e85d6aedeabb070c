//! Command line and environment. Parsed once at start; `--help` documents every option.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use url::Url;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "server",
    version,
    about = "Member History: payer data in the chart (SMART on FHIR app server)"
)]
pub struct Cli {
    /// TOML configuration file (see config/member-history.sample.toml). The demo's is
    /// written by the sandbox (`sandbox --app server`, which `scripts/demo` runs).
    #[arg(long, env = "MH_CONFIG")]
    pub config: PathBuf,

    /// Address to listen on.
    #[arg(long, env = "MH_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Overrides `public_url` of the file.
    #[arg(long, env = "MH_PUBLIC_URL")]
    pub public_url: Option<Url>,

    /// Overrides `data_dir` of the file (where the generated signing key is kept).
    #[arg(long, env = "MH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Overrides `signing_key` of the file: a PKCS#8 PEM private key.
    #[arg(long, env = "MH_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,

    /// The Trunk-built browser app (index.html, WASM, CSS).
    #[arg(long, env = "MH_DIST_DIR", default_value = "dist")]
    pub dist_dir: PathBuf,

    /// The application log's format: `text` (colours only on a terminal) or `json` (one
    /// object per line, for log shippers).
    #[arg(long, env = "MH_LOG_FORMAT", value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
}

impl Cli {
    /// Defaults for a test: the given configuration file, any free port, a given data and
    /// dist directory.
    pub fn for_tests(config: PathBuf, data_dir: PathBuf, dist_dir: PathBuf) -> Self {
        Cli {
            config,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: None,
            data_dir: Some(data_dir),
            signing_key: None,
            dist_dir,
            log_format: crate::logging::LogFormat::Text,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_log_format_is_text_unless_json_is_asked_for() {
        let cli = Cli::try_parse_from(["server", "--config", "c.toml"]).unwrap();
        assert_eq!(cli.log_format, crate::logging::LogFormat::Text);
        let cli =
            Cli::try_parse_from(["server", "--config", "c.toml", "--log-format", "json"]).unwrap();
        assert_eq!(cli.log_format, crate::logging::LogFormat::Json);
        assert!(
            Cli::try_parse_from(["server", "--config", "c.toml", "--log-format", "xml"]).is_err()
        );
        // The app never starts without a configuration (the sandbox writes the demo's).
        assert!(Cli::try_parse_from(["server"]).is_err());
    }
}
