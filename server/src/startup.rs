//! Start-up: the configuration file (plus command-line and environment overrides), then the
//! signing key, the state, and the listener. The sandbox is not part of the app: it runs in
//! its own process and writes the file the app reads.

use service::config::AppConfig;
use service::AppState;
use tokio::task::JoinHandle;
use url::Url;

use std::sync::Arc;
use std::time::Duration;

use crate::cli::Cli;
use crate::frontend::Frontend;

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
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
}

/// Reads the configuration file, applies the overrides and `adjust` (tests point a payer at
/// a hostile CDS service this way), checks it, and builds the state.
pub async fn prepare_with(
    cli: &Cli,
    adjust: impl FnOnce(&mut AppConfig),
) -> Result<AppState, StartError> {
    prepare_from(cli, AppConfig::from_file(&cli.config)?, adjust).await
}

/// The configuration file with the command line's overrides, checked.
pub fn configuration(cli: &Cli) -> Result<AppConfig, StartError> {
    let mut config = AppConfig::from_file(&cli.config)?;
    overrides(cli, &mut config);
    config.validate()?;
    Ok(config)
}

fn overrides(cli: &Cli, config: &mut AppConfig) {
    if let Some(url) = &cli.public_url {
        config.public_url = url.clone();
    }
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(key) = &cli.signing_key {
        config.signing_key = Some(key.clone());
    }
}

async fn prepare_from(
    cli: &Cli,
    mut config: AppConfig,
    adjust: impl FnOnce(&mut AppConfig),
) -> Result<AppState, StartError> {
    overrides(cli, &mut config);
    adjust(&mut config);
    config.validate()?;
    let key = load_key(&config)?;
    let store = open_store(&config).await?;
    Ok(AppState::new(config, key, store)?)
}

/// The store the configuration names (SQLite in `data_dir` unless a database URL is given),
/// migrated, with its sealing key from the environment or its file (generated when absent).
pub async fn open_store(config: &AppConfig) -> Result<Arc<dyn store::Store>, StartError> {
    let settings = &config.store;
    let sealer = match std::env::var(&settings.key_env).ok().filter(|k| !k.trim().is_empty()) {
        Some(key) => store::Sealer::from_base64(key.trim())?,
        None => {
            let path =
                settings.key_file.clone().unwrap_or_else(|| config.data_dir.join("store.key"));
            store::Sealer::from_file_or_generate(&path)?
        }
    };
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| store::StoreError::Key(format!("{}: {e}", config.data_dir.display())))?;
    let url = settings.database_url(&config.data_dir);
    Ok(Arc::new(store::SqlStore::connect(&url, sealer).await?))
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
    task: JoinHandle<()>,
    background: JoinHandle<()>,
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
        self.background.abort();
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
    let state = prepare_from(&cli, config, adjust).await?;
    let frontend = Frontend::load(&cli.dist_dir);
    let limits = &state.config.limits;
    crate::register_server_fns();
    let router = crate::router(state.clone(), frontend);
    let background = tokio::spawn(background(state.clone()));
    let connection_limits = crate::serve::ConnectionLimits {
        header_read_timeout: std::time::Duration::from_secs(limits.header_read_timeout_seconds),
        max_connections: limits.max_connections,
    };
    let task =
        tokio::spawn(crate::serve::serve(listener, router, connection_limits, shutdown_signal()));
    Ok(Running { url: state.config.public_url.clone(), state, task, background })
}

/// What the server does between requests: at start and then every [`JOB_PERIOD`], finishes
/// the write-backs and drives on the Provider Access requests another server left (its lease
/// ran out); every `purge_interval_minutes`,
/// deletes what is past retention. Failures are logged and tried again next time.
async fn background(state: AppState) {
    let purge_every = Duration::from_secs(state.config.store.purge_interval_minutes * 60);
    let mut last_purge: Option<std::time::Instant> = None;
    loop {
        match service::jobs::resume_interrupted(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "interrupted write-backs taken over"),
            Err(e) => tracing::error!(error = %e, "interrupted write-backs not resumed"),
        }
        match service::provider_access::resume(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(requests = n, "Provider Access requests taken over"),
            Err(e) => tracing::error!(error = %e, "Provider Access requests not resumed"),
        }
        if last_purge.is_none_or(|at| at.elapsed() >= purge_every) {
            last_purge = Some(std::time::Instant::now());
            match service::jobs::purge(&state).await {
                Ok(p) => tracing::info!(
                    launches = p.launches,
                    sessions = p.sessions,
                    jobs = p.jobs,
                    "past retention purged"
                ),
                Err(e) => tracing::error!(error = %e, "purge failed"),
            }
        }
        tokio::time::sleep(JOB_PERIOD).await;
    }
}

/// How often a server looks for interrupted jobs.
const JOB_PERIOD: Duration = Duration::from_secs(15);

async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
