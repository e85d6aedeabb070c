//! Load bench: concurrent clinician flows against the server, configured for the sandbox, at
//! a 1,024 open-file limit.
//!
//! The server binary runs in its own process, the app alone, started under `ulimit -n 1024`
//! (soft and hard, so it cannot raise it); the sandbox EHR and plan run in this process, so
//! their cost is not the app's. Each flow is what a clinician's browser does over HTTP, from its own loopback address
//! (127.0.1.x, as clinicians have their own): launch from the sandbox EHR's patient list
//! (redirects through its authorization server and back), ask the plan, load the history for
//! review, add the preselected items to the chart.
//!
//! First a baseline of flows one at a time, then `N` at once (default 200). Prints errors
//! (must be 0), the flows' latency percentiles, the p99 added over the baseline median, and
//! the server process's CPU time per flow (the app's alone).
//!
//! The concurrent round runs `MH_BENCH_ROUNDS` times (default 2); after the baseline and
//! each round the server's resident memory (VmRSS) and the store's size on disk are printed,
//! and the last round must leave resident memory within 64 MB of where the first left it.
//! `MH_BENCH_HISTORY_SIZE` sets the sandbox plan's history size (resources per member).
//!
//! `cargo bench -p server --bench load` (optionally `-- 200` for the number of flows).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod shared;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const BASELINE_FLOWS: usize = 10;

#[tokio::main]
async fn main() {
    let flows: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(200);
    // The clients' own descriptors are not what is measured.
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let patients_in_sandbox = 2 * flows.max(BASELINE_FLOWS);
    // The sandbox EHR and plan run in this process: the server's process is the app alone.
    let mut args = sandbox::member_history::SandboxArgs::for_tests();
    args.sandbox_patients = patients_in_sandbox;
    if let Some(size) = std::env::var("MH_BENCH_HISTORY_SIZE").ok().and_then(|s| s.parse().ok()) {
        args.sandbox_history_size = size;
    }
    let rounds: usize =
        std::env::var("MH_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2).max(1);
    let public_url = url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let (sandbox, config) = shared::sandbox_for_app(&args, &public_url, data.path()).await;
    let ehr = sandbox.ehr_url().trim_end_matches('/').to_owned();
    let server = shared::ServerProcess::start(&config, port, data.path());
    let pid = server.pid;
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let open_files = limits.lines().find(|l| l.starts_with("Max open files")).unwrap_or("?");
    println!(
        "server process {pid}: {}",
        open_files.split_whitespace().collect::<Vec<_>>().join(" ")
    );

    // The sandbox's people are generated from its seed: the same call tells which of them
    // the sandbox plan covers (the others need a typed member id).
    let people =
        sandbox::synthetic::population(sandbox::SandboxConfig::default().seed, patients_in_sandbox);
    let patients: Vec<String> = people
        .iter()
        .filter(|p| {
            matches!(
                p.coverage,
                sandbox::synthetic::CoverageKind::MemberId
                    | sandbox::synthetic::CoverageKind::SubscriberOnly
            )
        })
        .map(|p| p.patient_id.clone())
        .collect();

    let run = |n: usize, patient: String| {
        let ehr = ehr.clone();
        async move {
            let started = Instant::now();
            let result = flow(&ehr, client_address(n), &patient).await;
            (started.elapsed(), result)
        }
    };

    let mut baseline = Vec::new();
    for (n, patient) in patients.iter().take(BASELINE_FLOWS).enumerate() {
        let (took, result) = run(n, patient.clone()).await;
        result.unwrap_or_else(|e| panic!("baseline flow failed: {e}"));
        baseline.push(took);
    }
    baseline.sort();
    let baseline_median = baseline[baseline.len() / 2];
    println!("baseline, one at a time ({BASELINE_FLOWS} flows): median {baseline_median:.1?}");

    let memory = |when: &str| {
        let rss = server.memory("VmRSS");
        let stored = store_bytes(data.path());
        println!(
            "{when}: server resident {:.1} MB, store on disk {:.1} MB",
            rss as f64 / 1e6,
            stored as f64 / 1e6
        );
        rss
    };
    memory("after the baseline");
    let mut after_round = Vec::new();
    let mut all_errors = 0;
    for round in 0..rounds {
        let skip = BASELINE_FLOWS + round * flows;
        let errors = concurrent_round(&patients, skip, flows, &run, pid, baseline_median).await;
        all_errors += errors;
        after_round.push(memory(&format!("after round {}", round + 1)));
    }
    drop(server);
    let growth = after_round[after_round.len() - 1] as i64 - after_round[0] as i64;
    println!(
        "resident memory, last round against the first: {:+.1} MB over {} more launches",
        growth as f64 / 1e6,
        (rounds - 1) * flows
    );
    assert_eq!(all_errors, 0, "{all_errors} flows failed");
    assert!(growth < 64 * 1024 * 1024, "resident memory grew by {growth} bytes");
}

/// One round of `flows` concurrent flows; prints its figures and returns its errors.
async fn concurrent_round<F, Fut>(
    patients: &[String],
    skip: usize,
    flows: usize,
    run: &F,
    pid: u32,
    baseline_median: Duration,
) -> usize
where
    F: Fn(usize, String) -> Fut,
    Fut: std::future::Future<Output = (Duration, Result<Flow, String>)> + Send + 'static,
{
    let cpu_before = cpu_time(pid);
    let started = Instant::now();
    let handles: Vec<_> = patients
        .iter()
        .cycle()
        .skip(skip)
        .take(flows)
        .enumerate()
        .map(|(n, p)| tokio::spawn(run(skip + n, p.clone())))
        .collect();
    let mut took = Vec::new();
    let mut errors = Vec::new();
    let mut not_matched = 0;
    for handle in handles {
        let (elapsed, result) = handle.await.unwrap();
        took.push(elapsed);
        match result {
            Ok(Flow::Written) => {}
            Ok(Flow::NotMatched) => not_matched += 1,
            Err(e) => errors.push(e),
        }
    }
    let wall = started.elapsed();
    let cpu = cpu_time(pid) - cpu_before;
    took.sort();
    let pct = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)];
    println!(
        "{flows} concurrent flows: {} errors, {} written, {not_matched} not matched by the plan (cards only); wall {wall:.2?}, {:.1} flows/s",
        errors.len(),
        flows - errors.len() - not_matched,
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
        "server process CPU per flow (the app alone; the sandbox runs elsewhere): {:.1} ms",
        cpu.as_secs_f64() * 1000.0 / flows as f64
    );
    errors.len()
}

/// The process's resident set (VmRSS).
/// The SQLite store's files (database and WAL) in `data_dir`.
fn store_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("member-history.sqlite"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// The `n`th clinician's own loopback address.
fn client_address(n: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1 + (n / 250) as u8, 1 + (n % 250) as u8))
}

/// One clinician: launch, ask the plan, load the history, add the preselection to the chart.
async fn flow(ehr: &str, address: IpAddr, patient: &str) -> Result<Flow, String> {
    // No idle connections kept: this process holds the clients' side of every connection.
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .local_address(address)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;
    let review = http
        .post(format!("{ehr}/launch"))
        .form(&[
            ("client_id", "member-history"),
            ("patient", patient),
            ("practitioner", "prac-alvarez"),
            ("need_patient_banner", "true"),
        ])
        .send()
        .await
        .map_err(|e| format!("launch: {}", chain(&e)))?;
    let last = review.url().clone();
    let launch_id = last
        .path()
        .strip_prefix("/review/")
        .map(str::to_owned)
        .ok_or_else(|| format!("launch ended at {} ({})", last.path(), review.status()))?;
    let app = format!("{}://{}/", last.scheme(), last.authority());
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
                .map_err(|e| format!("{name}: {}", chain(&e)))?;
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
    let answer = call("request_plan_history", vec![("launch", launch_id.clone())]).await?;
    let answer: serde_json::Value = serde_json::from_str(&answer).map_err(|e| e.to_string())?;
    // The sandbox plan does not match every member (as real plans don't): the app then
    // shows the plan's cards and loads no history.
    if answer["outcome"] != "Matched" {
        return Ok(Flow::NotMatched);
    }
    call("history", vec![("launch", launch_id.clone()), ("refresh", "false".into())]).await?;
    call("add_to_chart", vec![("launch", launch_id)]).await?;
    Ok(Flow::Written)
}

/// An error with its sources (reqwest's own message hides why a request failed).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(source) = next {
        out.push_str(&format!(": {source}"));
        next = source.source();
    }
    out
}

/// How a flow that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Written,
    NotMatched,
}

/// A process's user + system CPU time (Linux clock ticks, 100 a second).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the `)`.
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10)
}
