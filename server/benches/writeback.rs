//! Write-back benchmark: 1,000 resources + Provenance as one transaction, against the same
//! resources POSTed one by one (each a conditional create, then the Provenance), to the same
//! server in the same run. Target ratio: at least 10×.
//!
//! Measured against the sandbox EHR's store over loopback, the same store behind a proxy
//! that holds each request 1 ms (a same-site network; loopback has none, which flatters the
//! one-by-one path; the small-request latency of each path is printed too), and Helios FHIR
//! Server when `hfs` is installed. Rounds alternate the two ways so that drifts in machine
//! speed hit both; one warm-up round per server is not counted.
//!
//! `cargo bench -p server --bench writeback` (optionally `-- 9` for the number of rounds).
#![allow(clippy::unwrap_used, clippy::print_stdout, dead_code)]

#[path = "../tests/all/common/hfs.rs"]
mod hfs;
#[path = "../tests/all/common/proxy.rs"]
mod proxy;
mod shared;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pdex::writeback::{build_transaction, DocumentFormat, EmrTarget, PlanSource};
use sandbox::{Sandbox, SandboxConfig};
use serde_json::Value;

const RESOURCES: usize = 1000;

/// The allocator the server binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(7);
    let (sandbox, token) = shared::sandbox_with_token(SandboxConfig::default()).await;
    let http = reqwest::Client::new();
    // The same work against the sandbox EHR's store, and against Helios when it is installed.
    let workspace = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let helios = match std::process::Command::new("hfs").arg("--version").output() {
        Ok(_) if workspace.join("target/hfs-data/search-parameters-r4.json").exists() => Some(
            hfs::start(
                sandbox.ehr_url(),
                None,
                &workspace.join("target/hfs-data"),
                &workspace.join("target/hfs-bench.log"),
            )
            .await,
        ),
        _ => {
            println!("(Helios not measured: hfs or target/hfs-data missing; see scripts/test-real-fhir-server)");
            None
        }
    };
    let (network, network_url) = proxy::Proxy::start().await;
    if let Ok(mut upstream) = network.upstream.lock() {
        *upstream = sandbox.ehr_fhir_base().as_str().trim_end_matches('/').to_owned();
    }
    network.set_round_trip(Duration::from_millis(1));
    let mut servers = vec![
        ("sandbox EHR store, loopback", sandbox.ehr_fhir_base().clone()),
        (
            "sandbox EHR store, through a proxy waiting 1 ms per request",
            url::Url::parse(&network_url).unwrap(),
        ),
    ];
    if let Some(h) = &helios {
        servers.push(("Helios FHIR Server (SQLite), loopback", url::Url::parse(&h.url).unwrap()));
    }
    for (n, (name, base)) in servers.into_iter().enumerate() {
        // What one small request costs on this path, for reading the ratio.
        let metadata = format!("{}/metadata", base.as_str().trim_end_matches('/'));
        let mut pings = Vec::new();
        for _ in 0..51 {
            let started = Instant::now();
            http.get(&metadata).send().await.unwrap().bytes().await.unwrap();
            pings.push(started.elapsed());
        }
        pings.sort();
        println!(
            "{name}: GET metadata median {:.2} ms",
            pings[pings.len() / 2].as_secs_f64() * 1000.0
        );
        let client = fhir::FhirClient::new(http.clone(), base, &fhir::http::HttpLimits::default());
        measure(name, n as u64, &client, &token, rounds, &sandbox).await;
    }
}

async fn measure(
    name: &str,
    server: u64,
    client: &fhir::FhirClient,
    token: &str,
    rounds: usize,
    sandbox: &Sandbox,
) {
    // Round 0 warms up (connections, allocator, caches) and is not counted.
    let people = sandbox::synthetic::population(7, 2 * rounds + 2);
    let seed = 1000 * (server + 1);
    let plan = |member: &str| PlanSource {
        name: "Sandbox Health Plan".into(),
        fhir_base: sandbox.plan_fhir_base().to_owned(),
        member_patient: member.into(),
        record_system: None,
        payer_identifier: Some(("urn:payer".into(), "SBXHP".into())),
    };
    let emr =
        EmrTarget { patient: "pat-001".into(), patient_name: "Bench Patient".into(), user: None };
    // A fresh member history for every run, so no conditional create finds an earlier copy.
    let history = |n: usize| {
        let member = format!("bench-{seed}-{n}");
        let items = shared::history(&people[n], &member, seed + n as u64, RESOURCES, false);
        (member, items)
    };

    // The write-back of history `n` as the app builds it.
    let write = |n: usize| {
        let (member, items) = history(n);
        let refs: Vec<_> = items.iter().collect();
        build_transaction(
            &refs,
            &[],
            DocumentFormat::BundleAndPdf,
            &plan(&member),
            &emr,
            &HashMap::new(),
            "2026-11-21T00:00:00Z",
        )
    };

    let mut one_transaction = Vec::new();
    let mut one_by_one = Vec::new();
    let mut retried = 0;
    for round in 0..=rounds {
        // One transaction (1,000 items, the plan's Organization, the Provenance).
        let transaction = write(2 * round);
        let started = Instant::now();
        let response = client.transaction(Some(token), &transaction.bundle).await.unwrap();
        let elapsed = started.elapsed();
        if round > 0 {
            one_transaction.push(elapsed);
        }
        assert_eq!(response.entry.len(), RESOURCES + 2);

        // The same kind of work, one POST per resource, then the Provenance pointing at them.
        let transaction = write(2 * round + 1);
        let started = Instant::now();
        let mut created = HashMap::new();
        let (provenance, rest) = transaction.bundle.entry.split_last().unwrap();
        for entry in rest {
            let request = entry.request.as_ref().unwrap();
            // A server may answer one create of thousands with a 5xx; a conditional create is
            // safe to send again, as a client would.
            let mut attempts = 0;
            let result = loop {
                attempts += 1;
                match client
                    .create(
                        Some(token),
                        entry.resource.as_ref().unwrap(),
                        request.if_none_exist.as_deref(),
                    )
                    .await
                {
                    Err(e) if e.is_transient() && attempts < 3 => retried += 1,
                    other => break other.unwrap(),
                }
            };
            let id = result.resource.as_ref().and_then(fhir::ResourceExt::local_reference).unwrap();
            created.insert(entry.full_url.clone().unwrap(), id);
        }
        let mut provenance = provenance.resource.clone().unwrap();
        for target in provenance["target"].as_array_mut().unwrap() {
            let url = target["reference"].as_str().unwrap().to_owned();
            target["reference"] = Value::String(created[&url].clone());
        }
        provenance["agent"][0]["who"]["reference"] = Value::String(
            created.values().find(|v| v.starts_with("Organization/")).unwrap().clone(),
        );
        client.create(Some(token), &provenance, None).await.unwrap();
        let elapsed = started.elapsed();
        if round > 0 {
            one_by_one.push(elapsed);
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let in_order = |times: &[Duration]| {
        times.iter().map(|&d| format!("{:.0}", ms(d))).collect::<Vec<_>>().join(" ")
    };
    let rounds_line = format!(
        "  each round (ms), one transaction: {}; one by one: {}",
        in_order(&one_transaction),
        in_order(&one_by_one)
    );
    one_transaction.sort();
    one_by_one.sort();
    let (tx, each) = (one_transaction[rounds / 2], one_by_one[rounds / 2]);
    println!("write-back of {RESOURCES} resources + Provenance, {name}: {rounds} rounds (+1 warm-up), same server, same run");
    println!(
        "  one transaction:       median {:.0} ms (min {:.0})",
        ms(tx),
        ms(one_transaction[0])
    );
    println!("  one POST per resource: median {:.0} ms (min {:.0})", ms(each), ms(one_by_one[0]));
    println!("  ratio of medians: {:.1}x (target at least 10x)", ms(each) / ms(tx));
    println!("  ratio of best rounds: {:.1}x", ms(one_by_one[0]) / ms(one_transaction[0]));
    println!("{rounds_line}");
    if retried > 0 {
        println!("  ({retried} one-by-one creates failed with a 5xx and were sent again)");
    }
}
