//! Normalise + dedupe of a 10,000-resource member history (the sandbox plan's synthetic
//! history, as `$everything` pages of 500) against an EMR chart. Target: ≤ 150 ms.
//! `cargo bench -p pdex --bench normalise`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

/// The allocator the server binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use serde_json::{json, Value};

fn pages(size: usize) -> Vec<Value> {
    let person = sandbox::synthetic::population(2026, 1).remove(0);
    let mut resources = sandbox::history::directory();
    resources.extend(sandbox::history::HistoryBuilder::new(&person, "mbr-001", 2026).build(size));
    resources
        .chunks(500)
        .map(|chunk| {
            json!({"resourceType": "Bundle", "type": "searchset",
                   "entry": chunk.iter().map(|r| json!({"resource": r})).collect::<Vec<_>>()})
        })
        .collect()
}

fn chart() -> Vec<Value> {
    let people = sandbox::synthetic::population(2026, 1);
    // The EHR chart of the same person: its synthetic resources, 50 times over, ~400 resources.
    let one = sandbox::synthetic::ehr_resources(&people);
    (0..50)
        .flat_map(|n| {
            one.iter().map(move |r| {
                let mut r = r.clone();
                r["id"] = json!(format!("{}-{n}", r["id"].as_str().unwrap_or("x")));
                r
            })
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let pages = pages(10_000);
    let chart = chart();
    let mut group = c.benchmark_group("member history");
    group.sample_size(20);
    group.bench_function("normalise + dedupe 10,000 resources", |b| {
        b.iter_batched(
            || pages.clone(),
            |pages| {
                let index = pdex::dedupe::ChartIndex::new(&chart);
                pdex::review_items(pages, &index)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
