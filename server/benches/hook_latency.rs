//! End-to-end benchmark: the latency a hook call gains by going through Member History's
//! server (EMR reads for coverage and prefetch, signing, checking the cards, following the
//! answer to the plan's FHIR API) over the plan's own processing of the same request.
//!
//! `cargo bench -p server --bench hook_latency` (optionally `-- 300` for the number of calls).
//! Both series are measured in the same run against the same in-process sandbox plan.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod shared;

use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The allocator the server binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let calls: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(200);
    let data = tempfile::tempdir().unwrap();
    let args = sandbox::member_history::SandboxArgs::for_tests();
    let (running, sandbox) =
        shared::app_with_sandbox(&args, data.path(), data.path().join("no-dist")).await;
    let sandbox = &sandbox;
    let app = running.url.to_string();

    // An EHR launch, as a browser would make it.
    let http = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let launch = sandbox.ehr.auth.create_launch(sandbox::LaunchContext {
        patient: Some("pat-001".into()),
        practitioner: "prac-alvarez".into(),
        need_patient_banner: true,
        ..Default::default()
    });
    let mut url = url::Url::parse(&format!("{app}launch")).unwrap();
    url.query_pairs_mut()
        .append_pair("iss", sandbox.ehr_fhir_base().as_str())
        .append_pair("launch", &launch);
    let review = http.get(url).send().await.unwrap().url().to_string();
    let launch_id = review.rsplit('/').next().unwrap().to_owned();

    let through_server = || async {
        let started = Instant::now();
        let r = http
            .post(format!("{app}api/request_plan_history"))
            .header("sec-fetch-site", "same-origin")
            .form(&[("launch", launch_id.as_str())])
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());
        r.bytes().await.unwrap();
        started.elapsed()
    };
    // Warm up (discovery cache, connection pools, backend-services token).
    for _ in 0..10 {
        through_server().await;
    }
    // The request our server sends, replayed straight to the plan with a fresh JWT each time.
    let sent = sandbox.plan.last_hook_request().unwrap();
    let body = sent.body.unwrap();
    let plan_url = format!("{}/cds-services/{}", sandbox.plan_url(), sandbox::plan::SERVICE_ID);
    let identity = cds_hooks::ClientIdentity {
        key: running.state.signing_key.clone(),
        issuer: running.state.config.cds_issuer(),
        jku: running.state.config.jwks_url().to_string(),
        tenant: None,
    };
    let direct_http = reqwest::Client::new();
    let direct = || async {
        let mut request = body.clone();
        request["hookInstance"] = serde_json::json!(uuid::Uuid::new_v4().to_string());
        let jwt = identity.token(&plan_url).unwrap();
        let started = Instant::now();
        let r = direct_http.post(&plan_url).bearer_auth(jwt).json(&request).send().await.unwrap();
        assert!(r.status().is_success());
        r.bytes().await.unwrap();
        started.elapsed()
    };
    for _ in 0..10 {
        direct().await;
    }

    // Interleave the two so drift affects both alike.
    let mut plan_only = Vec::with_capacity(calls);
    let mut via_server = Vec::with_capacity(calls);
    for _ in 0..calls {
        plan_only.push(direct().await);
        via_server.push(through_server().await);
    }
    plan_only.sort();
    via_server.sort();
    let (p50_plan, p99_plan) = (percentile(&plan_only, 0.5), percentile(&plan_only, 0.99));
    let (p50_all, p99_all) = (percentile(&via_server, 0.5), percentile(&via_server, 0.99));
    println!("hook call latency, {calls} calls each, same run, same plan");
    println!(
        "  plan alone (direct POST of the same request): median {:.2} ms, p99 {:.2} ms",
        ms(p50_plan),
        ms(p99_plan)
    );
    println!(
        "  through Member History (request_plan_history): median {:.2} ms, p99 {:.2} ms",
        ms(p50_all),
        ms(p99_all)
    );
    println!(
        "  added by Member History: median {:.2} ms, p99 {:.2} ms (ratio {:.1}x median, {:.1}x p99)",
        ms(p50_all.saturating_sub(p50_plan)),
        ms(p99_all.saturating_sub(p99_plan)),
        p50_all.as_secs_f64() / p50_plan.as_secs_f64(),
        p99_all.as_secs_f64() / p99_plan.as_secs_f64(),
    );
}
