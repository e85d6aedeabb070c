//! Start-up: the configuration file (plus command-line and environment overrides), then the
//! signing key, the state, and the listener. The sandbox is not part of the app: it runs in
//! its own process and writes the file the app reads.

use service::config::AppConfig;
use service::AppState;
use tokio::task::JoinHandle;
use url::Url;

use crate::cli::Cli;
use crate::frontend::Frontend;
use crate::session_store::PrunedMemoryStore;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] service::config::ConfigError),
    #[error("signing key: {0}")]
    Key(#[from] jose::JoseError),
    #[error("no HTTP client could be built (TLS backend): {0}")]
    Http(#[from] reqwest::Error),
}

/// Reads the configuration file, applies the overrides and `adjust` (tests point a payer at
/// a hostile CDS service this way), checks it, and builds the state.
pub fn prepare_with(
    cli: &Cli,
    adjust: impl FnOnce(&mut AppConfig),
) -> Result<AppState, StartError> {
    prepare_from(cli, AppConfig::from_file(&cli.config)?, adjust)
}

fn prepare_from(
    cli: &Cli,
    mut config: AppConfig,
    adjust: impl FnOnce(&mut AppConfig),
) -> Result<AppState, StartError> {
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
    Ok(AppState::new(config, key)?)
}

/// Our signing key: the configured file, else the one generated in `data_dir` (kept).
pub fn load_key(config: &AppConfig) -> Result<jose::SigningKey, StartError> {
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
    let config = AppConfig::from_file(&cli.config)?;
    let backlog = config.limits.listen_backlog;
    crate::serve::raise_open_file_limit();
    let listener = crate::serve::bind(cli.listen, backlog)
        .map_err(|source| StartError::Listen { addr: cli.listen, source })?;
    let state = prepare_from(&cli, config, adjust)?;
    let frontend = Frontend::load(&cli.dist_dir);
    let limits = &state.config.limits;
    let sessions = PrunedMemoryStore::new(limits.max_sessions);
    crate::register_server_fns();
    let router = crate::router(state.clone(), frontend, sessions.clone());
    let connection_limits = crate::serve::ConnectionLimits {
        header_read_timeout: std::time::Duration::from_secs(limits.header_read_timeout_seconds),
        max_connections: limits.max_connections,
    };
    let task =
        tokio::spawn(crate::serve::serve(listener, router, connection_limits, shutdown_signal()));
    Ok(Running { url: state.config.public_url.clone(), state, sessions, task })
}

async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
