//! Member History's configuration: the TOML file's shape, checked once at start.
//! `config/member-history.sample.toml` documents every field.

use std::path::PathBuf;

pub use api::PlanRoute;
use serde::Deserialize;
use url::Url;

/// The resource scopes asked of an EHR unless its entry says otherwise. SMART v2 syntax:
/// read the launched patient's chart (the patient, their coverage, an appointment in the
/// launch context, and every kind the review shows, from `pdex::kinds`, so the chart can be
/// checked for duplicates of each); read the user's Practitioner record and organisations;
/// create what write-back writes (every kind but claims, which go into a document).
pub fn default_ehr_scope() -> String {
    let mut scopes: Vec<String> =
        ["patient/Patient.rs", "patient/Coverage.rs"].map(str::to_owned).to_vec();
    scopes.extend(pdex::kinds::KINDS.iter().map(|k| format!("patient/{}.rs", k.resource_type)));
    scopes.extend(
        [
            "patient/Appointment.r",
            "user/Practitioner.r",
            "user/PractitionerRole.r",
            "user/Organization.rs",
        ]
        .map(str::to_owned),
    );
    scopes.extend(
        pdex::kinds::KINDS
            .iter()
            .filter(|k| k.category != pdex::Category::Claims)
            .map(|k| format!("user/{}.c", k.resource_type)),
    );
    scopes.extend(
        ["user/Organization.c", "user/Provenance.c", "user/DocumentReference.c"].map(str::to_owned),
    );
    scopes.join(" ")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The address clinicians' browsers use to reach Member History. The SMART redirect URI
    /// is `{public_url}/callback` and the launch URL `{public_url}/launch`.
    pub public_url: Url,
    /// Where Member History keeps its generated signing key.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// A PKCS#8 PEM private key (P-384 for ES384, RSA for RS384). Generated in `data_dir`
    /// on first start when not given.
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
    /// `ES384` (default) or `RS384`.
    #[serde(default)]
    pub signing_alg: SigningAlg,
    /// Minutes of inactivity after which a browser session ends.
    #[serde(default = "default_idle_minutes")]
    pub session_idle_minutes: u64,
    /// What the server holds open and how long it waits (`[limits]`).
    #[serde(default)]
    pub limits: Limits,
    /// Where launches, sessions, jobs and the audit log are kept (`[store]`).
    #[serde(default)]
    pub store: StoreConfig,
    /// The EHRs Member History may be launched from. Only these are ever contacted.
    #[serde(default, rename = "ehr")]
    pub ehrs: Vec<EhrConfig>,
    /// The health plans Member History may ask. Only these are ever contacted.
    #[serde(default, rename = "payer")]
    pub payers: Vec<PayerConfig>,
}

/// Resource limits at the web edge and towards EHRs and plans. Every field has a default
/// (the sample configuration gives them); a limit of 0 is refused at start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Seconds a client has to send a request's headers (slow-loris connections are closed);
    /// an idle keep-alive connection is closed after as long.
    pub header_read_timeout_seconds: u64,
    /// Seconds a client has to send a request's body.
    pub body_timeout_seconds: u64,
    /// Seconds one request may take in all, the plan's answer included (then 504).
    pub request_timeout_seconds: u64,
    /// Largest request body, in bytes (then 413, chunked bodies too).
    pub max_body_bytes: usize,
    /// Connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Requests in progress at once; further ones get 503 at once.
    pub max_concurrent_requests: usize,
    /// The listen backlog (the kernel caps it at `net.core.somaxconn`).
    pub listen_backlog: u32,
    /// Browser sessions held at once (a session starts with a launch); then 503.
    pub max_sessions: usize,
    /// Launches one client address may start per minute; then 429.
    pub launches_per_minute_per_client: u32,
    /// Requests in flight at once to one EHR, over all clinicians.
    pub max_requests_per_ehr: usize,
    /// Requests in flight at once to one plan (CDS Hooks and FHIR API), over all clinicians.
    pub max_requests_per_plan: usize,
    /// Searches one history load runs at once against the EHR (one per resource type).
    pub searches_per_load: usize,
    /// Plan histories this server reads and parses at once, over all clinicians (more wait
    /// their turn): what bounds its peak memory.
    pub history_reads_in_flight: usize,
    /// Largest Bundle a plan may push to `/pdex/push`, in bytes (then 413).
    pub max_push_bytes: usize,
    /// Items one Provider Access export keeps for review, the newest (older ones are counted
    /// and left at the plan): what bounds the memory one export's read takes, however large.
    pub review_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout_seconds: 10,
            body_timeout_seconds: 30,
            request_timeout_seconds: 120,
            max_body_bytes: 1024 * 1024,
            max_connections: 4096,
            max_concurrent_requests: 1024,
            listen_backlog: 1024,
            max_sessions: 20_000,
            launches_per_minute_per_client: 120,
            max_requests_per_ehr: 64,
            max_requests_per_plan: 64,
            searches_per_load: 4,
            history_reads_in_flight: 8,
            review_items: 10_000,
            max_push_bytes: 32 * 1024 * 1024,
        }
    }
}

impl Limits {
    fn validate(&self) -> Result<(), ConfigError> {
        let all = [
            ("header_read_timeout_seconds", self.header_read_timeout_seconds as usize),
            ("body_timeout_seconds", self.body_timeout_seconds as usize),
            ("request_timeout_seconds", self.request_timeout_seconds as usize),
            ("max_body_bytes", self.max_body_bytes),
            ("max_connections", self.max_connections),
            ("max_concurrent_requests", self.max_concurrent_requests),
            ("listen_backlog", self.listen_backlog as usize),
            ("max_sessions", self.max_sessions),
            ("launches_per_minute_per_client", self.launches_per_minute_per_client as usize),
            ("max_requests_per_ehr", self.max_requests_per_ehr),
            ("max_requests_per_plan", self.max_requests_per_plan),
            ("searches_per_load", self.searches_per_load),
            ("history_reads_in_flight", self.history_reads_in_flight),
            ("review_items", self.review_items),
            ("max_push_bytes", self.max_push_bytes),
        ];
        match all.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => {
                Err(ConfigError::Invalid(format!("limits.{name} must be at least 1")))
            }
            None => Ok(()),
        }
    }
}

/// The database and how long patient data is kept in it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` or `postgres://USER@HOST:PORT/DB` (several servers share one
    /// PostgreSQL). Default: the SQLite file `member-history.sqlite` in `data_dir`.
    pub database_url: Option<String>,
    /// The environment variable that may hold the database URL instead (so a password need
    /// not be in this file); it wins over `database_url`.
    pub database_url_env: String,
    /// The environment variable that may hold the AES-256 key sealing stored records
    /// (32 bytes, base64). Servers sharing a database must share the key.
    pub key_env: String,
    /// The key's file when the environment variable is not set; generated (mode 0600) when
    /// absent. Default: `store.key` in `data_dir`.
    pub key_file: Option<PathBuf>,
    /// Hours after its last use that a launch's patient data (history, selection, tokens,
    /// write results) is deleted. The audit log is kept.
    pub retention_hours: u64,
    /// Minutes between two purges of what is past retention (and of expired sessions).
    pub purge_interval_minutes: u64,
    /// Megabytes of recently reviewed histories kept parsed in memory per server; the rest
    /// is read from the store when a request needs it.
    pub history_cache_mb: u64,
    /// Seconds a write-back holds its job; a server that stops mid-write leaves the job to
    /// be finished by the next one to start (or to see the lease run out).
    pub job_lease_seconds: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            database_url: None,
            database_url_env: "MH_DATABASE_URL".into(),
            key_env: "MH_STORE_KEY".into(),
            key_file: None,
            retention_hours: 24,
            purge_interval_minutes: 10,
            history_cache_mb: 64,
            job_lease_seconds: 300,
        }
    }
}

impl StoreConfig {
    /// The database to open: the environment's, the file's, or SQLite in `data_dir`.
    pub fn database_url(&self, data_dir: &std::path::Path) -> String {
        std::env::var(&self.database_url_env)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .or_else(|| self.database_url.clone())
            .unwrap_or_else(|| {
                format!("sqlite://{}", data_dir.join("member-history.sqlite").display())
            })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("retention_hours", self.retention_hours),
            ("purge_interval_minutes", self.purge_interval_minutes),
            ("job_lease_seconds", self.job_lease_seconds),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("store.{name} must be at least 1")));
            }
        }
        if let Some(url) = &self.database_url {
            if !["sqlite:", "postgres:", "postgresql:"].iter().any(|p| url.starts_with(p)) {
                return Err(ConfigError::Invalid(
                    "store.database_url must start with sqlite:// or postgres://".into(),
                ));
            }
        }
        Ok(())
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

fn default_idle_minutes() -> u64 {
    60
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SigningAlg {
    #[default]
    ES384,
    RS384,
}

impl SigningAlg {
    pub fn jws(self) -> jose::JwsAlgorithm {
        match self {
            SigningAlg::ES384 => jose::JwsAlgorithm::ES384,
            SigningAlg::RS384 => jose::JwsAlgorithm::RS384,
        }
    }
}

/// One EHR registration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EhrConfig {
    /// A short stable id (used in URLs of the start page).
    pub id: String,
    /// The name clinicians see.
    pub name: String,
    /// The EHR's FHIR base URL: the `iss` of its launches.
    pub issuer: Url,
    /// Member History's client id at this EHR.
    pub client_id: String,
    /// How Member History authenticates at the EHR's token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuthConfig,
    /// Resource scopes to ask for (launch, identity and refresh scopes are added).
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Origins allowed to frame Member History (CSP `frame-ancestors`), e.g. the EHR's web origin.
    #[serde(default)]
    pub frame_ancestors: Vec<String>,
    /// The clinicians' own organisation(s): `system|value` identifiers (NPI…) or names. Plan
    /// items from them can be hidden (PDex "exclude own organization").
    #[serde(default)]
    pub own_organization: Vec<String>,
    /// Seconds to wait for the EHR's FHIR API (a write included) before saying it did not answer.
    #[serde(default = "default_ehr_timeout")]
    pub timeout_seconds: u64,
    /// Most entries Member History puts in one transaction or batch to this EHR; unset: one
    /// transaction for the whole selection, split only when the EHR refuses it for its size.
    #[serde(default)]
    pub max_entries_per_request: Option<usize>,
}

fn default_ehr_timeout() -> u64 {
    30
}

fn default_scope() -> String {
    default_ehr_scope()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientAuthConfig {
    /// `private_key_jwt` with our signing key; the EHR has our JWKS URL
    /// (`{public_url}/.well-known/jwks.json`).
    #[default]
    PrivateKeyJwt,
    /// `client_secret_basic`, the secret read from the named environment variable.
    ClientSecretBasic { secret_env: String },
}

/// One health plan.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayerConfig {
    /// A short stable id.
    pub id: String,
    /// The name clinicians see.
    pub name: String,
    /// `Coverage.payor` Organizations with one of these identifiers (`system|value`) are this plan.
    #[serde(default)]
    pub payor_identifiers: Vec<String>,
    /// … or with one of these names (compared ignoring case).
    #[serde(default)]
    pub payor_names: Vec<String>,
    /// The routes to its members' history it offers, offered on the page in this order
    /// (`provider_access`: PDex Provider Access API; `cds_hooks`: the `appointment-book`
    /// member-history request).
    #[serde(default = "default_routes")]
    pub routes: Vec<PlanRoute>,
    /// The CDS Hooks base URL: discovery is `{cds_base}/cds-services`.
    pub cds_base: Url,
    /// The service to call; by default the first `appointment-book` service in discovery.
    #[serde(default)]
    pub service_id: Option<String>,
    /// The plan's FHIR API. Answers pointing anywhere else are not followed.
    pub fhir_base: Url,
    /// How Member History gets access to the plan's FHIR API.
    #[serde(default)]
    pub fhir_auth: PlanFhirAuth,
    /// The identifier system of the plan's records (written with each record, and used to
    /// recognise it on a retry); by default `{fhir_base}/{resourceType}`.
    #[serde(default)]
    pub record_identifier_system: Option<String>,
    /// Seconds to wait for the plan's CDS service before telling the clinician it did not answer.
    #[serde(default = "default_plan_timeout")]
    pub timeout_seconds: u64,
    /// The plan pushes members' history (`Patient/$everything` Bundles) to `/pdex/push`,
    /// each push signed with its key: who it is and where its keys are.
    #[serde(default)]
    pub push: Option<PushConfig>,
    /// The member may sign in at the plan and let Member History read their records (PDex
    /// §3-4-2: a SMART standalone launch against the plan's patient-facing FHIR API).
    #[serde(default)]
    pub member_access: Option<MemberAccessConfig>,
}

/// Member History's registration at the plan's authorization server for member sign-in
/// (redirect URI `{public_url}/member-callback`, `private_key_jwt` with our JWKS).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberAccessConfig {
    pub client_id: String,
}

/// How a plan that pushes members' history signs its pushes (PDex §3-4-3; see the README).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// The `iss` (and `sub`) of the plan's push tokens.
    pub issuer: String,
    /// Where the plan publishes the public keys its push tokens are signed with (a JWKS).
    pub jwks_url: Url,
}

fn default_plan_timeout() -> u64 {
    15
}

fn default_routes() -> Vec<PlanRoute> {
    vec![PlanRoute::CdsHooks]
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum PlanFhirAuth {
    /// Use the access token the plan puts in its answer (PDex STU1 cards, or an `appContext`
    /// that carries one).
    #[default]
    FromAnswer,
    /// SMART Backend Services: `client_credentials` with `private_key_jwt` at the plan's
    /// token endpoint (from its `.well-known/smart-configuration`).
    BackendServices { client_id: String, scope: String },
}

/// A configuration that cannot be used, with what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read the configuration file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the configuration file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl AppConfig {
    /// Parses TOML text; `origin` names the source in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: AppConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: origin.to_owned(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and checks a TOML file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Fails fast on what would only break later: duplicate ids, non-HTTP URLs, missing secrets.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits.validate()?;
        self.store.validate()?;
        if !matches!(self.public_url.scheme(), "http" | "https") {
            return Err(ConfigError::Invalid("public_url must be an http or https URL".into()));
        }
        let mut ids = std::collections::HashSet::new();
        for ehr in &self.ehrs {
            if !ids.insert(ehr.id.as_str()) {
                return Err(ConfigError::Invalid(format!("two EHRs have the id `{}`", ehr.id)));
            }
            if !matches!(ehr.issuer.scheme(), "http" | "https") {
                return Err(ConfigError::Invalid(format!(
                    "EHR `{}`: issuer must be an http or https URL",
                    ehr.id
                )));
            }
            if let ClientAuthConfig::ClientSecretBasic { secret_env } = &ehr.client_auth {
                if std::env::var(secret_env).map(|v| v.is_empty()).unwrap_or(true) {
                    return Err(ConfigError::Invalid(format!(
                        "EHR `{}`: the environment variable {secret_env} (its client secret) is not set",
                        ehr.id
                    )));
                }
            }
        }
        let mut payer_ids = std::collections::HashSet::new();
        for payer in &self.payers {
            if !payer_ids.insert(payer.id.as_str()) {
                return Err(ConfigError::Invalid(format!("two payers have the id `{}`", payer.id)));
            }
            if api::PayerId::parse(&payer.id).is_err() {
                return Err(ConfigError::Invalid(format!(
                    "payer `{}`: an id has only letters, digits, '-' and '_', at most 64",
                    payer.id
                )));
            }
            for url in [&payer.cds_base, &payer.fhir_base] {
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(ConfigError::Invalid(format!(
                        "payer `{}`: URLs must be http or https",
                        payer.id
                    )));
                }
            }
            if payer.routes.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "payer `{}`: routes must name provider_access, cds_hooks or both",
                    payer.id
                )));
            }
            if payer.routes.contains(&PlanRoute::ProviderAccess)
                && !matches!(payer.fhir_auth, PlanFhirAuth::BackendServices { .. })
            {
                return Err(ConfigError::Invalid(format!(
                    "payer `{}`: the provider_access route needs fhir_auth = {{ method = \"backend_services\", … }}",
                    payer.id
                )));
            }
            if let Some(push) = &payer.push {
                if push.issuer.trim().is_empty()
                    || !matches!(push.jwks_url.scheme(), "http" | "https")
                {
                    return Err(ConfigError::Invalid(format!(
                        "payer `{}`: push needs an issuer and an http or https jwks_url",
                        payer.id
                    )));
                }
                let taken = self
                    .payers
                    .iter()
                    .filter(|p| p.push.as_ref().is_some_and(|other| other.issuer == push.issuer));
                if taken.count() > 1 {
                    return Err(ConfigError::Invalid(format!(
                        "payer `{}`: another payer pushes as issuer `{}`",
                        payer.id, push.issuer
                    )));
                }
            }
            if payer.payor_identifiers.is_empty() && payer.payor_names.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "payer `{}`: give payor_identifiers or payor_names so coverage can be matched to it",
                    payer.id
                )));
            }
        }
        Ok(())
    }

    /// The SMART redirect URI.
    pub fn redirect_uri(&self) -> Url {
        join(&self.public_url, "callback")
    }

    /// The SMART launch URL.
    pub fn launch_url(&self) -> Url {
        join(&self.public_url, "launch")
    }

    /// Where a plan's authorization server sends the member back after sign-in.
    pub fn member_callback_url(&self) -> Url {
        join(&self.public_url, "member-callback")
    }

    /// Where plans push members' history: the `aud` their push tokens name.
    pub fn push_url(&self) -> Url {
        join(&self.public_url, "pdex/push")
    }

    /// Our public JWKS URL.
    pub fn jwks_url(&self) -> Url {
        join(&self.public_url, ".well-known/jwks.json")
    }

    /// Our `iss` in CDS Hooks JWTs: the public URL without a trailing slash.
    pub fn cds_issuer(&self) -> String {
        self.public_url.as_str().trim_end_matches('/').to_owned()
    }

    /// The EHR whose issuer `iss` names (compared as FHIR bases, `fhir::base`).
    pub fn ehr_by_issuer(&self, iss: &str) -> Option<&EhrConfig> {
        self.ehrs.iter().find(|e| fhir::base::same_server(e.issuer.as_str(), iss))
    }
}

/// `base` + `/` + `path`, keeping any path prefix of `base`.
pub(crate) fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}/{path}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    url.set_query(None);
    url
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_the_sample_configuration() {
        let text = include_str!("../../../config/member-history.sample.toml");
        // The sample names a secret variable; give it a value for the check.
        std::env::set_var("MH_SAMPLE_EHR_SECRET", "s");
        let config = AppConfig::from_toml(text, "sample").unwrap();
        assert!(!config.ehrs.is_empty());
        assert_eq!(config.redirect_uri().path(), "/callback");
    }

    #[test]
    fn refuses_duplicate_ids_and_unknown_fields() {
        let dup = r#"
            public_url = "https://mh.example"
            [[ehr]]
            id = "a"
            name = "A"
            issuer = "https://ehr.example/fhir"
            client_id = "x"
            [[ehr]]
            id = "a"
            name = "B"
            issuer = "https://ehr2.example/fhir"
            client_id = "y"
        "#;
        assert!(AppConfig::from_toml(dup, "t").unwrap_err().to_string().contains("two EHRs"));
        let unknown = "public_url = \"https://mh.example\"\ncolour = \"red\"\n";
        assert!(AppConfig::from_toml(unknown, "t").is_err());
    }

    #[test]
    fn urls_keep_a_path_prefix() {
        let config =
            AppConfig::from_toml("public_url = \"https://host.example/mh/\"", "t").unwrap();
        assert_eq!(config.redirect_uri().as_str(), "https://host.example/mh/callback");
        assert_eq!(config.jwks_url().as_str(), "https://host.example/mh/.well-known/jwks.json");
    }

    #[test]
    fn finds_ehr_by_issuer_ignoring_trailing_slash() {
        let config = AppConfig::from_toml(
            "public_url = \"https://mh.example\"\n[[ehr]]\nid = \"a\"\nname = \"A\"\nissuer = \"https://ehr.example/fhir\"\nclient_id = \"x\"\n",
            "t",
        )
        .unwrap();
        assert!(config.ehr_by_issuer("https://ehr.example/fhir/").is_some());
        assert!(config.ehr_by_issuer("https://evil.example/fhir").is_none());
    }
}
