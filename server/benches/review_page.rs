//! End-to-end benchmark of the review page with a 10,000-resource member history, in
//! headless Chromium: how long after the history's data arrives the list is interactive
//! (target ≤ 300 ms), and the long tasks while scrolling the whole list (target: none over
//! 50 ms). Needs the Trunk build in `dist/` and Debian's chromium/chromedriver.
//!
//! `cargo bench -p server --bench review_page` (optionally `-- 5` for the number of runs).
#![allow(clippy::unwrap_used, clippy::print_stdout, dead_code)]

#[path = "../tests/all/common/browser.rs"]
mod browser;
mod shared;

use std::path::PathBuf;
use std::time::Duration;

use browser::Browser;

/// The allocator the server binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(3);
    let dist = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist");
    assert!(dist.join("index.html").exists(), "build the app first: trunk build --release");
    let data = tempfile::tempdir().unwrap();
    let mut args = sandbox::member_history::SandboxArgs::for_tests();
    args.sandbox_history_size = 10_000;
    args.sandbox_patients = 2;
    let (_running, sandbox) = shared::app_with_sandbox(&args, data.path(), dist).await;
    let sandbox = &sandbox;

    let mut interactive = Vec::new();
    let mut payloads = Vec::new();
    let mut worst_task = 0.0_f64;
    let mut long_tasks = 0usize;
    let mut rows = 0u64;
    for _ in 0..runs {
        let browser = Browser::start().await;
        browser.client.goto(&format!("{}/", sandbox.ehr_url())).await.unwrap();
        browser.click("button[name=patient][value=pat-001]").await;
        browser.wait("[data-testid=history-list] .history-row").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let timing = browser
            .eval(
                "const mark = performance.getEntriesByName('mh-history-interactive')[0];
                 const data = performance.getEntriesByType('resource').filter(e => e.name.endsWith('/api/history')).pop();
                 return [mark.startTime - data.responseEnd, data.encodedBodySize || data.transferSize];",
            )
            .await;
        interactive.push(timing[0].as_f64().unwrap());
        payloads.push(timing[1].as_f64().unwrap_or(0.0));
        // Scroll the whole list (the timeline holds every item), a screenful per frame, watching long tasks.
        browser.click("[data-testid=tab-timeline]").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let result = browser
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 const tasks = [];
                 new PerformanceObserver(list => list.getEntries().forEach(e => tasks.push(e.duration))).observe({type: 'longtask'});
                 const list = document.querySelector('[data-testid=history-list]');
                 const step = () => {
                   if (list.scrollTop + list.clientHeight >= list.scrollHeight - 1) {
                     setTimeout(() => done([tasks, list.scrollHeight / 46]), 300);
                     return;
                   }
                   list.scrollTop += list.clientHeight;
                   requestAnimationFrame(step);
                 };
                 requestAnimationFrame(step);",
                vec![],
            )
            .await
            .unwrap();
        for task in result[0].as_array().unwrap() {
            let d = task.as_f64().unwrap();
            worst_task = worst_task.max(d);
            long_tasks += usize::from(d > 50.0);
        }
        rows = result[1].as_f64().unwrap() as u64;
        browser.close().await;
    }
    interactive.sort_by(f64::total_cmp);
    println!("review page, 10,000-resource history, {runs} runs, headless Chromium");
    println!(
        "  list interactive after the data arrived: median {:.0} ms, worst {:.0} ms (target 300 ms)",
        interactive[interactive.len() / 2],
        interactive[interactive.len() - 1]
    );
    println!("  history payload: {:.0} KB", payloads.iter().copied().fold(0.0, f64::max) / 1024.0);
    println!("  scrolling all {rows} rows: {long_tasks} long tasks over 50 ms; longest task {worst_task:.0} ms");
}
