//! Load bench: concurrent clinician flows in sandbox mode, at a 1,024 open-file limit.
//!
//! Each flow is what a clinician's browser does over HTTP: the EHR launch (redirects through
//! the sandbox EHR's authorization server and back), ask the plan, load the history for
//! review, add the preselected items to the chart. The server, the sandbox EHR and plan, and
//! the clients all run in this one process, whose open-file limit is set to 1,024 (soft and
//! hard, so the server cannot raise it) before anything starts.
//!
//! First a baseline of flows one at a time, then `N` at once (default 200). Prints errors
//! (must be 0), the flows' latency percentiles, the p99 added over the baseline median, and
//! the process CPU time per flow (server, sandbox and clients together).
//!
//! `cargo bench -p server --bench load` (optionally `-- 200` for the number of flows).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use server::cli::Cli;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BASELINE_FLOWS: usize = 10;

#[tokio::main]
async fn main() {
    let flows: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(200);
    rlimit::setrlimit(rlimit::Resource::NOFILE, 1024, 1024).unwrap();
    println!("open-file limit: {:?}", rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap());

    let data = tempfile::tempdir().unwrap();
    let mut cli = Cli::for_tests(data.path().to_owned(), data.path().join("no-dist"));
    cli.sandbox_patients = flows.max(BASELINE_FLOWS);
    let server = server::startup::start(cli).await.unwrap();
    let sandbox = server.sandbox.as_ref().unwrap();
    let app = server.url.to_string();
    let iss = sandbox.ehr_fhir_base().to_string();
    let patients: Vec<String> = sandbox.ehr.people.iter().map(|p| p.patient_id.clone()).collect();

    let run = |patient: String| {
        let (app, iss, ehr) = (app.clone(), iss.clone(), sandbox.ehr.clone());
        async move {
            let started = Instant::now();
            let result = flow(&app, &iss, &ehr, &patient).await;
            (started.elapsed(), result)
        }
    };

    let mut baseline = Vec::new();
    for patient in patients.iter().take(BASELINE_FLOWS) {
        let (took, result) = run(patient.clone()).await;
        result.unwrap_or_else(|e| panic!("baseline flow failed: {e}"));
        baseline.push(took);
    }
    baseline.sort();
    let baseline_median = baseline[baseline.len() / 2];
    println!("baseline, one at a time ({BASELINE_FLOWS} flows): median {baseline_median:.1?}");

    let cpu_before = cpu_time();
    let started = Instant::now();
    let handles: Vec<_> =
        patients.iter().cycle().take(flows).map(|p| tokio::spawn(run(p.clone()))).collect();
    let mut took = Vec::new();
    let mut errors = Vec::new();
    for handle in handles {
        let (elapsed, result) = handle.await.unwrap();
        took.push(elapsed);
        if let Err(e) = result {
            errors.push(e);
        }
    }
    let wall = started.elapsed();
    let cpu = cpu_time() - cpu_before;
    took.sort();
    let pct = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)];
    println!(
        "{flows} concurrent flows: {} errors, wall {wall:.2?}, {:.1} flows/s",
        errors.len(),
        flows as f64 / wall.as_secs_f64()
    );
    for e in errors.iter().take(5) {
        println!("  error: {e}");
    }
    println!(
        "latency p50 {:.1?}, p90 {:.1?}, p99 {:.1?}, max {:.1?}; p99 added over the baseline median {:.1?} ({:.1}×)",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        took[took.len() - 1],
        pct(0.99).saturating_sub(baseline_median),
        pct(0.99).as_secs_f64() / baseline_median.as_secs_f64()
    );
    println!(
        "process CPU per flow (server, sandbox and clients): {:.1} ms",
        cpu.as_secs_f64() * 1000.0 / flows as f64
    );
    assert!(errors.is_empty(), "{} flows failed", errors.len());
}

/// One clinician: launch, ask the plan, load the history, add the preselection to the chart.
async fn flow(app: &str, iss: &str, ehr: &sandbox::Ehr, patient: &str) -> Result<(), String> {
    // No idle connections kept: 200 clients with pooled connections to the app and the EHR
    // would hold 800 descriptors in this process on their own.
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;
    let launch = ehr.auth.create_launch(sandbox::LaunchContext {
        patient: Some(patient.into()),
        practitioner: "prac-alvarez".into(),
        need_patient_banner: true,
        ..Default::default()
    });
    let mut url = url::Url::parse(&format!("{app}launch")).map_err(|e| e.to_string())?;
    url.query_pairs_mut().append_pair("iss", iss).append_pair("launch", &launch);
    let review = http.get(url).send().await.map_err(|e| format!("launch: {e}"))?;
    let last = review.url().to_string();
    let launch_id = last
        .split_once("/review/")
        .map(|(_, id)| id.to_owned())
        .ok_or_else(|| format!("launch ended at {} ({})", last, review.status()))?;
    let call = |name: &'static str, form: Vec<(&'static str, String)>| {
        let http = http.clone();
        let url = format!("{app}api/{name}");
        async move {
            let r = http
                .post(url)
                .header("sec-fetch-site", "same-origin")
                .form(&form)
                .send()
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            let status = r.status();
            let body = r.text().await.map_err(|e| format!("{name}: {e}"))?;
            if !status.is_success() {
                return Err(format!(
                    "{name}: {status} {}",
                    body.chars().take(200).collect::<String>()
                ));
            }
            Ok::<_, String>(body)
        }
    };
    call("request_plan_history", vec![("launch", launch_id.clone())]).await?;
    call("history", vec![("launch", launch_id.clone()), ("refresh", "false".into())]).await?;
    call("add_to_chart", vec![("launch", launch_id)]).await?;
    Ok(())
}

/// This process's user + system CPU time (Linux clock ticks, 100 a second).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the `)`.
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10)
}
