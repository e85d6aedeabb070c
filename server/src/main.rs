//! `server`: runs Member History on its configuration file (`--config`).

use clap::Parser;
use server::cli::Cli;

// FHIR JSON is many small allocations; mimalloc serves them markedly faster than the system
// allocator (the write-back and history benchmarks use it too, to measure what runs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    server::logging::init(cli.log_format);
    if let Some(server::cli::Command::Audit { since, format }) = &cli.command {
        let out = std::io::stdout().lock();
        return match server::audit_export::export(&cli, *since, *format, out).await {
            Ok(n) => {
                tracing::info!(events = n, "audit log exported");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("the audit log could not be exported: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let running = match server::startup::start(cli).await {
        Ok(running) => running,
        Err(e) => {
            tracing::error!("Member History could not start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    announce(&running);
    running.wait().await;
    std::process::ExitCode::SUCCESS
}

/// Tells the person who started the server where to go. Written without `println!`: a
/// closed standard output (a supervisor that stopped reading) must not stop the server.
fn announce(running: &server::startup::Running) {
    use std::io::Write;
    let text = format!("\nMember History is running at {}\nPress Ctrl-C to stop.\n", running.url);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
