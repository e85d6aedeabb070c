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
    /// TOML configuration file (see config/member-history.sample.toml). Without one, the
    /// embedded sandbox EHR starts and the server configures itself against it: the demo.
    #[arg(long, env = "MH_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on.
    #[arg(long, env = "MH_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Overrides `public_url` of the file; in sandbox mode defaults to http://{listen}.
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

    /// Sandbox mode: the sandbox EHR's port (0 picks a free one).
    #[arg(long, env = "MH_SANDBOX_EHR_PORT", default_value_t = 8081)]
    pub sandbox_ehr_port: u16,

    /// Sandbox mode: lifetime of the sandbox EHR's access tokens, in seconds.
    #[arg(long, env = "MH_SANDBOX_TOKEN_TTL", default_value_t = 3600)]
    pub sandbox_token_ttl: u64,

    /// Sandbox mode: how many synthetic patients the sandbox holds.
    #[arg(long, env = "MH_SANDBOX_PATIENTS", default_value_t = 12)]
    pub sandbox_patients: usize,

    /// Sandbox mode: the sandbox health plan's port (0 picks a free one).
    #[arg(long, env = "MH_SANDBOX_PLAN_PORT", default_value_t = 8082)]
    pub sandbox_plan_port: u16,

    /// Sandbox mode: resources in each member's history at the plan (10000 for a big one).
    #[arg(long, env = "MH_SANDBOX_HISTORY_SIZE", default_value_t = 150)]
    pub sandbox_history_size: usize,

    /// Sandbox mode: how the plan points at the member's data: `pdex2` (a smart link with
    /// appContext; Member History reads the data with SMART Backend Services) or `stu1` (a
    /// card with the FHIR base and an access token).
    #[arg(long, env = "MH_SANDBOX_PLAN_STYLE", default_value = "pdex2", value_parser = ["pdex2", "stu1"])]
    pub sandbox_plan_style: String,

    /// Sandbox mode: the resource types the sandbox EHR accepts for writing (comma-separated;
    /// the rest goes into a document). Default: the clinical types, Provenance and DocumentReference.
    #[arg(long, env = "MH_SANDBOX_EHR_WRITABLE", value_delimiter = ',')]
    pub sandbox_ehr_writable: Option<Vec<String>>,

    /// Sandbox mode: the attachment types the sandbox EHR accepts in documents (comma-separated;
    /// default any), to watch the PDF → HTML → text fallback.
    #[arg(long, env = "MH_SANDBOX_EHR_ATTACHMENTS", value_delimiter = ',')]
    pub sandbox_ehr_attachments: Option<Vec<String>>,

    /// Sandbox mode: put another FHIR server behind the sandbox EHR's authorization server (its
    /// base URL becomes the `iss` of launches and the `aud` of tokens). The real FHIR server
    /// suite runs Helios this way.
    #[arg(long, env = "MH_SANDBOX_EHR_FHIR_BASE")]
    pub sandbox_ehr_fhir_base: Option<Url>,

    /// Sandbox mode: the sandbox EHR refuses transactions (and leaves `transaction` out of its
    /// CapabilityStatement), as many EHRs do; Member History writes by batch or single creates.
    #[arg(long, env = "MH_SANDBOX_EHR_NO_TRANSACTIONS")]
    pub sandbox_ehr_no_transactions: bool,

    /// Sandbox mode: the sandbox EHR refuses batches too (with no transactions either, each
    /// resource is one conditional create).
    #[arg(long, env = "MH_SANDBOX_EHR_NO_BATCH")]
    pub sandbox_ehr_no_batch: bool,

    /// Sandbox mode: the sandbox EHR refuses a transaction with more than this many conditional
    /// entries (`too-costly`), as some servers do; Member History splits the write.
    #[arg(long, env = "MH_SANDBOX_EHR_MAX_CONDITIONAL_ENTRIES")]
    pub sandbox_ehr_max_conditional_entries: Option<usize>,

    /// Sandbox mode: the sandbox EHR's id_tokens have no `kid` and its JWKS key no `alg` or
    /// `use`, as OpenID Connect allows an issuer with one key.
    #[arg(long, env = "MH_SANDBOX_EHR_ID_TOKEN_WITHOUT_KID")]
    pub sandbox_ehr_id_token_without_kid: bool,
}

impl Cli {
    /// Defaults for a test: any free ports, a given data and dist directory.
    pub fn for_tests(data_dir: PathBuf, dist_dir: PathBuf) -> Self {
        Cli {
            config: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: None,
            data_dir: Some(data_dir),
            signing_key: None,
            dist_dir,
            log_format: crate::logging::LogFormat::Text,
            sandbox_ehr_port: 0,
            sandbox_token_ttl: 3600,
            sandbox_patients: 12,
            sandbox_plan_port: 0,
            sandbox_history_size: 150,
            sandbox_plan_style: "pdex2".into(),
            sandbox_ehr_writable: None,
            sandbox_ehr_attachments: None,
            sandbox_ehr_fhir_base: None,
            sandbox_ehr_no_transactions: false,
            sandbox_ehr_no_batch: false,
            sandbox_ehr_max_conditional_entries: None,
            sandbox_ehr_id_token_without_kid: false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_log_format_is_text_unless_json_is_asked_for() {
        let cli = Cli::try_parse_from(["server"]).unwrap();
        assert_eq!(cli.log_format, crate::logging::LogFormat::Text);
        let cli = Cli::try_parse_from(["server", "--log-format", "json"]).unwrap();
        assert_eq!(cli.log_format, crate::logging::LogFormat::Json);
        assert!(Cli::try_parse_from(["server", "--log-format", "xml"]).is_err());
    }
}
