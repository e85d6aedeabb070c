//! `server`: runs Member History (with the embedded sandbox when no configuration is given).

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

/// Tells the person who started the server where to go.
#[allow(clippy::print_stdout)]
fn announce(running: &server::startup::Running) {
    println!();
    println!("Member History is running at {}", running.url);
    if let Some(sandbox) = &running.sandbox {
        println!("Open the sandbox EHR to launch it: {}/", sandbox.ehr_url());
        println!("Sandbox health plan (CDS Hooks and FHIR API): {}/", sandbox.plan_url());
    }
    println!("Press Ctrl-C to stop.");
}
