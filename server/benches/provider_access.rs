//! Provider Access bench: one member's whole export through the plan's Provider Access API
//! (member match, `$davinci-data-export`, NDJSON files read line by line, normalised) into
//! the review, for export sizes from `MH_BENCH_SIZES` (default `10000,100000` resources).
//!
//! The server binary runs in its own process (the app alone); the sandbox plan, which makes
//! and serves the files, runs in this one. For each size: the time from the ask to the
//! request being ready, the time to open it for review, and the server's resident memory
//! before the ask and at its peak (`VmHWM`), with the peak's growth per resource; then the
//! ratio of the largest size's figures to the smallest's, measured in the same run.
//!
//! `cargo bench -p server --bench provider_access`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod shared;

use std::time::{Duration, Instant};

struct Figures {
    size: usize,
    resources: u64,
    to_ready: Duration,
    to_review: Duration,
    before: u64,
    peak: u64,
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("MH_BENCH_SIZES")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut all = Vec::new();
    for size in sizes {
        let figures = run(size).await;
        println!(
            "{:>7} resources: ready in {:.1?}, review opened in {:.1?} ({} rows); server resident {:.1} MB before, peak {:.1} MB (+{:.1} MB, {:.0} bytes per resource)",
            figures.size,
            figures.to_ready,
            figures.to_review,
            figures.resources,
            figures.before as f64 / 1e6,
            figures.peak as f64 / 1e6,
            figures.peak.saturating_sub(figures.before) as f64 / 1e6,
            figures.peak.saturating_sub(figures.before) as f64 / figures.size.max(1) as f64,
        );
        all.push(figures);
    }
    if let (Some(first), Some(last)) = (all.first(), all.last()) {
        let growth = |f: &Figures| f.peak.saturating_sub(f.before).max(1) as f64;
        println!(
            "largest against smallest: {:.1}× the resources, {:.1}× the time to ready, {:.1}× the peak growth",
            last.size as f64 / first.size.max(1) as f64,
            last.to_ready.as_secs_f64() / first.to_ready.as_secs_f64().max(1e-9),
            growth(last) / growth(first),
        );
    }
}

/// One member's export of `size` resources, from the ask to the review.
async fn run(size: usize) -> Figures {
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut args = sandbox::member_history::SandboxArgs::for_tests();
    args.sandbox_patients = 2;
    args.sandbox_history_size = size;
    let public_url = url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let (sandbox, config) = shared::sandbox_for_app(&args, &public_url, data.path()).await;
    sandbox.plan.provider_access.set_behaviour(|b| b.delay = Duration::from_millis(100));
    let server = shared::ServerProcess::start(&config, port, data.path());
    let ehr = sandbox.ehr_url().trim_end_matches('/').to_owned();
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let review = http
        .post(format!("{ehr}/launch"))
        .form(&[
            ("client_id", "member-history"),
            ("patient", "pat-001"),
            ("practitioner", "prac-alvarez"),
        ])
        .send()
        .await
        .unwrap();
    let launch = review.url().path().strip_prefix("/review/").unwrap().to_owned();
    let call = |name: &'static str, form: Vec<(&'static str, &str)>| {
        let request = http
            .post(format!("{public_url}api/{name}"))
            .header("sec-fetch-site", "same-origin")
            .form(&form);
        async move {
            let r = request.send().await.unwrap();
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap();
            assert!(status.is_success(), "{name}: {status} {body}");
            body
        }
    };
    let before = server.memory("VmRSS");
    let started = Instant::now();
    call("provider_access_ask", vec![("launch", &launch), ("purpose", "Download")]).await;
    let resources = loop {
        let view = call("provider_access_status", vec![("launch", &launch)]).await;
        if let Some(n) = view.pointer("/stage/Ready/resources").and_then(serde_json::Value::as_u64)
        {
            break n;
        }
        assert!(view["stage"].is_string(), "the request failed: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let to_ready = started.elapsed();
    let opened = Instant::now();
    let view = call("provider_access_open", vec![("launch", &launch)]).await;
    let to_review = opened.elapsed();
    assert_eq!(view["items"].as_array().unwrap().len() as u64, resources);
    let peak = server.memory("VmHWM");
    Figures { size, resources, to_ready, to_review, before, peak }
}
