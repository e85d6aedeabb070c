//! Adaptive write-back benchmark: 1,000 resources (with the plan's Provenance for them) into
//! an EHR that refuses a transaction holding more than 8 conditional entries, as some FHIR
//! servers do. Two ways Member History can write there, in the same run against the same
//! server:
//!
//! - **split transactions**: self-contained parts of at most 8 entries (the limit learned from
//!   the first refusal; the first write's cost including that refusal is printed too);
//! - **single conditional creates**: one POST per resource, 4 at a time, then the plan's
//!   Provenance and ours.
//!
//! Rounds alternate the two; round 0 warms up and is not counted. Prints every round and the
//! medians, and the ratio of medians (single ÷ split).
//!
//! `cargo bench -p server --bench writeback_split` (optionally `-- 9` for the number of rounds).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod shared;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pdex::writeback::{
    write, EmrTarget, PlanSource, WriteContext, WriteMode, WriteOptions, WriteSelection,
};
use sandbox::SandboxConfig;

const RESOURCES: usize = 1000;
const CAP: usize = 8;

/// The allocator the server binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5);
    let (sandbox, token) = shared::sandbox_with_token(SandboxConfig {
        ehr_max_conditional_entries: Some(CAP),
        ..SandboxConfig::default()
    })
    .await;
    let client = fhir::FhirClient::new(
        reqwest::Client::new(),
        sandbox.ehr_fhir_base().clone(),
        &fhir::http::HttpLimits::default(),
    );
    let emr = (client, Some(token));
    let people = sandbox::synthetic::population(7, 2 * rounds + 2);
    let target =
        EmrTarget { patient: "pat-001".into(), patient_name: "Bench Patient".into(), user: None };

    let mut learned = None;
    let (mut split, mut single) = (Vec::new(), Vec::new());
    for round in 0..=rounds {
        for (n, mode) in [(2 * round, WriteMode::Transaction), (2 * round + 1, WriteMode::Single)] {
            // A fresh member history each time, so no conditional create finds an earlier copy.
            let member = format!("bench-{n}");
            let items = shared::history(&people[n], &member, n as u64, RESOURCES, true);
            let plan = PlanSource {
                name: "Sandbox Health Plan".into(),
                fhir_base: sandbox.plan_fhir_base().to_owned(),
                member_patient: member.clone(),
                record_system: None,
                payer_identifier: Some(("urn:payer".into(), "SBXHP".into())),
            };
            let names = HashMap::new();
            let ctx = WriteContext {
                plan: &plan,
                emr: &target,
                names: &names,
                now: "2026-12-03T00:00:00Z",
            };
            let selection = WriteSelection { direct: items.iter().collect(), document: Vec::new() };
            let options = WriteOptions { mode, max_entries: learned, ..Default::default() };
            let started = Instant::now();
            let report = write(&emr, &ctx, &selection, options).await;
            let elapsed = started.elapsed();
            assert!(report.failure.is_none(), "{:?}", report.failure);
            let written = report.outcomes.iter().filter(|o| o.written()).count();
            assert!(written > RESOURCES, "{written} entries written");
            if mode == WriteMode::Transaction && learned.is_none() {
                learned = report.learned_limit;
                println!(
                    "first split write (learning the limit from a refusal): {:.0} ms, limit {:?}, {} parts",
                    ms(elapsed),
                    learned,
                    report.parts
                );
            }
            println!(
                "round {round} {:<26} {:>7.0} ms  {} requests",
                if mode == WriteMode::Transaction {
                    "split transactions"
                } else {
                    "single conditional creates"
                },
                ms(elapsed),
                report.requests
            );
            if round > 0 {
                if mode == WriteMode::Transaction { &mut split } else { &mut single }.push(elapsed);
            }
        }
    }
    let (split, single) = (median(&mut split), median(&mut single));
    println!(
        "{RESOURCES} resources, EHR capping transactions at {CAP} conditional entries, {rounds} rounds: \
         split transactions median {:.0} ms, single conditional creates median {:.0} ms; \
         ratio of medians (single / split) {:.2}",
        ms(split),
        ms(single),
        single.as_secs_f64() / split.as_secs_f64()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
