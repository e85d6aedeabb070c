//! `sandbox`: the simulated EHR and health plan in their own process, with Member History
//! registered at both. Writes Member History's configuration file for them and, given the
//! app's binary (`--app`), runs it on that file: the demo in one command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sandbox::member_history::{self, AppRegistration, SandboxArgs};
use url::Url;

#[derive(Debug, Parser)]
#[command(
    name = "sandbox",
    version,
    about = "Member History's sandbox: a simulated EHR and health plan with synthetic patients"
)]
struct Cli {
    #[command(flatten)]
    sandbox: SandboxArgs,

    /// Where Member History is served (its launch, callback and JWKS URLs hang off it).
    #[arg(long, env = "MH_PUBLIC_URL", default_value = "http://127.0.0.1:8080")]
    app_url: Url,

    /// Member History's data directory (its signing key), written into its configuration.
    #[arg(long, env = "MH_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,

    /// Where to write Member History's configuration (default: in the data directory).
    #[arg(long)]
    config_out: Option<PathBuf>,

    /// Member History's server binary: run it on the written configuration, listening at
    /// `--app-url`, and stop when it stops.
    #[arg(long)]
    app: Option<PathBuf>,

    /// Further arguments for the app (after `--`).
    #[arg(last = true)]
    app_args: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt().with_env_filter(env_filter()).with_target(false).init();
    let cli = Cli::parse();
    let registration = AppRegistration { public_url: cli.app_url.clone(), jwks: None };
    let sandbox = match member_history::start(&cli.sandbox, &registration).await {
        Ok(sandbox) => sandbox,
        Err(e) => {
            tracing::error!("the sandbox could not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = cli.config_out.clone().unwrap_or_else(|| cli.data_dir.join("sandbox.toml"));
    let text = member_history::app_config(&sandbox, &cli.app_url, &cli.data_dir);
    let written =
        std::fs::create_dir_all(&cli.data_dir).and_then(|()| std::fs::write(&config, text));
    if let Err(e) = written {
        tracing::error!("could not write {}: {e}", config.display());
        return ExitCode::FAILURE;
    }
    announce(&sandbox, &config);
    match &cli.app {
        Some(app) => run_app(app, &cli, &config).await,
        None => {
            let _ = tokio::signal::ctrl_c().await;
            ExitCode::SUCCESS
        }
    }
}

fn env_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// Runs the app until it exits (Ctrl-C reaches both: they share the terminal).
async fn run_app(app: &std::path::Path, cli: &Cli, config: &std::path::Path) -> ExitCode {
    let listen = match (cli.app_url.host_str(), cli.app_url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{}:{port}", host.trim_matches(['[', ']'])),
        _ => {
            tracing::error!("--app-url needs a host and port to listen on");
            return ExitCode::FAILURE;
        }
    };
    let mut command = std::process::Command::new(app);
    command.arg("--config").arg(config).arg("--listen").arg(listen).args(&cli.app_args);
    let child = command.spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            tracing::error!("could not start {}: {e}", app.display());
            return ExitCode::FAILURE;
        }
    };
    let status = tokio::task::spawn_blocking(move || child.wait()).await;
    match status {
        Ok(Ok(status)) if status.success() => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// Where to go. Written without `println!`: a closed standard output must not stop it.
fn announce(sandbox: &sandbox::Sandbox, config: &std::path::Path) {
    use std::io::Write;
    let text = format!(
        "\nSandbox EHR (launch Member History from here): {}/\nSandbox health plan (CDS Hooks and FHIR API): {}/\nMember History's configuration: {}\n",
        sandbox.ehr_url(),
        sandbox.plan_url(),
        config.display()
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
