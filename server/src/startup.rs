//! Start-up: configuration from a file (plus environment overrides), or the embedded sandbox
//! when there is no file; then the signing key, the state, and the listener.

use std::path::PathBuf;

use sandbox::{
    AnswerStyle, CdsClientTrust, ClientJwks, ClientRegistration, Sandbox, SandboxConfig,
};
use service::config::{AppConfig, ClientAuthConfig, EhrConfig, PayerConfig, PlanFhirAuth};
use service::AppState;
use tokio::task::JoinHandle;
use url::Url;

use crate::cli::Cli;
use crate::frontend::Frontend;
use crate::session_store::PrunedMemoryStore;

/// Member History's client id at the sandbox EHR.
pub const SANDBOX_CLIENT_ID: &str = "member-history";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] service::config::ConfigError),
    #[error("signing key: {0}")]
    Key(#[from] jose::JoseError),
    #[error("the embedded sandbox could not start: {0}")]
    Sandbox(#[from] sandbox::SandboxError),
    #[error("public URL: {0}")]
    Url(String),
    #[error("no HTTP client could be built (TLS backend): {0}")]
    Http(#[from] reqwest::Error),
}

/// How the sandbox EHR learns our public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxKeys {
    /// It fetches our JWKS URL, as a real EHR would (the server is listening).
    JwksUrl,
    /// It is given the JWKS at registration (tests that drive the router without a socket).
    Inline,
}

/// Configuration, state and sandbox, ready to build a router.
#[derive(Debug)]
pub struct Prepared {
    pub state: AppState,
    pub sandbox: Option<Sandbox>,
}

/// Reads the configuration file, or (without one) starts the sandbox and configures
/// against it. `default_public_url` is used when neither the file nor the flags set one.
pub async fn prepare(
    cli: &Cli,
    default_public_url: Url,
    keys: SandboxKeys,
) -> Result<Prepared, StartError> {
    prepare_with(cli, default_public_url, keys, |_| {}).await
}

/// [`prepare`], letting the caller change the configuration before the state is built (tests
/// point a payer at a hostile CDS service this way).
pub async fn prepare_with(
    cli: &Cli,
    default_public_url: Url,
    keys: SandboxKeys,
    adjust: impl FnOnce(&mut AppConfig),
) -> Result<Prepared, StartError> {
    let file = cli.config.as_deref().map(AppConfig::from_file).transpose()?;
    prepare_from(cli, file, default_public_url, keys, adjust).await
}

/// [`prepare_with`] with the configuration file already read (`None`: sandbox mode).
async fn prepare_from(
    cli: &Cli,
    file: Option<AppConfig>,
    default_public_url: Url,
    keys: SandboxKeys,
    adjust: impl FnOnce(&mut AppConfig),
) -> Result<Prepared, StartError> {
    match file {
        Some(mut config) => {
            if let Some(url) = &cli.public_url {
                config.public_url = url.clone();
            }
            if let Some(dir) = &cli.data_dir {
                config.data_dir = dir.clone();
            }
            if let Some(key) = &cli.signing_key {
                config.signing_key = Some(key.clone());
            }
            adjust(&mut config);
            config.validate()?;
            let key = load_key(&config)?;
            Ok(Prepared { state: AppState::new(config, key)?, sandbox: None })
        }
        None => {
            let public_url = cli.public_url.clone().unwrap_or(default_public_url);
            let mut config = AppConfig::from_toml(
                &format!("public_url = \"{public_url}\""),
                "sandbox defaults",
            )?;
            config.data_dir = cli.data_dir.clone().unwrap_or_else(|| PathBuf::from("data"));
            config.signing_key = cli.signing_key.clone();
            let key = load_key(&config)?;
            let jwks = match keys {
                SandboxKeys::JwksUrl => ClientJwks::Url(config.jwks_url().to_string()),
                SandboxKeys::Inline => ClientJwks::Inline(key.jwks()),
            };
            let cds_trust = CdsClientTrust {
                issuer: config.cds_issuer(),
                jku: config.jwks_url().to_string(),
                jwks: (keys == SandboxKeys::Inline).then(|| key.jwks()),
            };
            let sandbox = Sandbox::start(SandboxConfig {
                ehr_port: cli.sandbox_ehr_port,
                patients: cli.sandbox_patients,
                access_token_ttl_secs: cli.sandbox_token_ttl,
                clients: vec![ClientRegistration {
                    client_id: SANDBOX_CLIENT_ID.into(),
                    name: "Member History".into(),
                    redirect_uris: vec![config.redirect_uri().to_string()],
                    launch_url: config.launch_url().to_string(),
                    jwks: Some(jwks),
                    client_secret: None,
                }],
                plan_port: cli.sandbox_plan_port,
                plan_style: if cli.sandbox_plan_style == "stu1" {
                    AnswerStyle::Stu1Token
                } else {
                    AnswerStyle::Pdex2AppContext
                },
                history_size: cli.sandbox_history_size,
                cds_clients: vec![cds_trust],
                ehr_writable: cli.sandbox_ehr_writable.clone(),
                ehr_attachment_types: cli.sandbox_ehr_attachments.clone(),
                ehr_transactions: !cli.sandbox_ehr_no_transactions,
                ehr_batch: !cli.sandbox_ehr_no_batch,
                ehr_max_conditional_entries: cli.sandbox_ehr_max_conditional_entries,
                ehr_id_token_kid: !cli.sandbox_ehr_id_token_without_kid,
                ehr_fhir_base: cli
                    .sandbox_ehr_fhir_base
                    .as_ref()
                    .map(|u| u.as_str().trim_end_matches('/').to_owned()),
                ..SandboxConfig::default()
            })
            .await?;
            config.ehrs.push(EhrConfig {
                id: "sandbox-ehr".into(),
                name: "Sandbox EHR".into(),
                issuer: sandbox.ehr_fhir_base().clone(),
                client_id: SANDBOX_CLIENT_ID.into(),
                client_auth: ClientAuthConfig::PrivateKeyJwt,
                scope: service::config::default_ehr_scope(),
                frame_ancestors: vec![sandbox.ehr_url().to_owned()],
                own_organization: vec![format!(
                    "{}|{}",
                    sandbox::synthetic::systems::NPI,
                    sandbox::synthetic::CLINIC_NPI
                )],
                timeout_seconds: 30,
                max_entries_per_request: None,
            });
            config.payers.push(PayerConfig {
                id: "sandbox-plan".into(),
                name: sandbox::synthetic::PLAN_NAME.into(),
                payor_identifiers: vec![format!(
                    "{}|{}",
                    sandbox::synthetic::systems::PAYER_ID,
                    sandbox::synthetic::PLAN_PAYER_ID
                )],
                payor_names: vec![sandbox::synthetic::PLAN_NAME.into()],
                cds_base: url_of(sandbox.plan_url())?,
                service_id: None,
                fhir_base: url_of(sandbox.plan_fhir_base())?,
                fhir_auth: PlanFhirAuth::BackendServices {
                    client_id: SANDBOX_CLIENT_ID.into(),
                    scope: "system/*.rs".into(),
                },
                timeout_seconds: 15,
                record_identifier_system: Some(sandbox::history::code_systems::PLAN_RECORD.into()),
            });
            adjust(&mut config);
            config.validate()?;
            Ok(Prepared { state: AppState::new(config, key)?, sandbox: Some(sandbox) })
        }
    }
}

fn url_of(s: &str) -> Result<Url, StartError> {
    Url::parse(s).map_err(|e| StartError::Url(e.to_string()))
}

fn load_key(config: &AppConfig) -> Result<jose::SigningKey, StartError> {
    let path = config.signing_key.clone().unwrap_or_else(|| {
        let name = match config.signing_alg {
            service::config::SigningAlg::ES384 => "signing-key-es384.pem",
            service::config::SigningAlg::RS384 => "signing-key-rs384.pem",
        };
        config.data_dir.join(name)
    });
    Ok(jose::SigningKey::load_or_generate(&path, config.signing_alg.jws())?)
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    /// Where the app is served.
    pub url: Url,
    pub state: AppState,
    pub sandbox: Option<Sandbox>,
    pub sessions: PrunedMemoryStore,
    task: JoinHandle<()>,
}

impl Running {
    /// Serves until the process is asked to stop.
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds, prepares and serves in the background.
pub async fn start(cli: Cli) -> Result<Running, StartError> {
    start_with(cli, |_| {}).await
}

/// [`start`], with a chance to change the configuration (see [`prepare_with`]).
pub async fn start_with(
    cli: Cli,
    adjust: impl FnOnce(&mut AppConfig),
) -> Result<Running, StartError> {
    // Bound before the state is built (binding gives sandbox mode its default public URL),
    // so the backlog comes from the file as read, before `adjust`.
    let file = cli.config.as_deref().map(AppConfig::from_file).transpose()?;
    let backlog = file.as_ref().map_or_else(
        || service::config::Limits::default().listen_backlog,
        |c| c.limits.listen_backlog,
    );
    crate::serve::raise_open_file_limit();
    let listener = crate::serve::bind(cli.listen, backlog)
        .map_err(|source| StartError::Listen { addr: cli.listen, source })?;
    let addr =
        listener.local_addr().map_err(|source| StartError::Listen { addr: cli.listen, source })?;
    let default_url =
        Url::parse(&format!("http://{addr}")).map_err(|e| StartError::Url(e.to_string()))?;
    let prepared = prepare_from(&cli, file, default_url, SandboxKeys::JwksUrl, adjust).await?;
    let frontend = Frontend::load(&cli.dist_dir);
    let limits = &prepared.state.config.limits;
    let sessions = PrunedMemoryStore::new(limits.max_sessions);
    crate::register_server_fns();
    let router = crate::router(prepared.state.clone(), frontend, sessions.clone());
    let connection_limits = crate::serve::ConnectionLimits {
        header_read_timeout: std::time::Duration::from_secs(limits.header_read_timeout_seconds),
        max_connections: limits.max_connections,
    };
    let task =
        tokio::spawn(crate::serve::serve(listener, router, connection_limits, shutdown_signal()));
    Ok(Running {
        url: prepared.state.config.public_url.clone(),
        state: prepared.state,
        sandbox: prepared.sandbox,
        sessions,
        task,
    })
}

async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
