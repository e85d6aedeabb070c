//! From launch to "Added to chart" in headless Chromium, then the sandbox EHR's own chart
//! page showing what was added.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::browser::Browser;
use common::TestServer;

#[tokio::test]
async fn launch_review_add_to_chart_and_see_it_in_the_ehr() {
    TestServer::require_built_app();
    let app = TestServer::start().await;
    let browser = Browser::start().await;
    browser.client.goto(&format!("{}/", app.sandbox().ehr_url())).await.unwrap();
    browser.click("button[name=patient][value=pat-001]").await;
    browser.wait("[data-testid=history-list] .history-row").await;
    let selected: usize = browser
        .text("[data-testid=selection-count]")
        .await
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(selected > 0);

    browser.click("[data-testid=add-to-chart]").await;
    let confirm = browser.text("[data-testid=write-confirm]").await;
    assert!(confirm.contains(&format!("{selected} selected item(s)")), "{confirm}");
    assert!(confirm.contains("In one document"), "claims go into a document: {confirm}");
    browser.click("[data-testid=write-confirm-button]").await;
    let counts = browser.text("[data-testid=write-counts]").await;
    assert!(counts.contains("added") && counts.contains("0 not added"), "{counts}");
    let outcomes = browser
        .client
        .find_all(fantoccini::Locator::Css("[data-testid=write-outcomes] li"))
        .await
        .unwrap();
    assert_eq!(outcomes.len(), selected);
    let added = browser
        .eval("return document.querySelectorAll('[data-testid=write-outcomes] li[data-status=Created]').length;")
        .await
        .as_u64()
        .unwrap();
    assert!(added > 0);
    // The list now shows them as in the chart, and nothing is selected.
    let count = browser.text("[data-testid=selection-count]").await;
    assert!(count.starts_with("0 of"), "{count}");

    // The EHR's chart has them, each saying where it came from.
    browser
        .client
        .goto(&format!("{}/chart?patient=pat-001", app.sandbox().ehr_url()))
        .await
        .unwrap();
    let from_plan = browser
        .eval(&format!(
            "return Array.from(document.querySelectorAll('tr[data-record]')).filter(r => r.textContent.includes('{}')).length;",
            app.sandbox().plan_fhir_base()
        ))
        .await
        .as_u64()
        .unwrap();
    // Each added record, plus the one document.
    assert_eq!(from_plan, added + 1);
    browser.close().await;
}

/// The EHR (at 127.0.0.1) frames the app from another site (localhost): the session lives in
/// a partitioned cross-site cookie, and the whole flow works inside the frame.
#[tokio::test]
async fn in_a_cross_site_ehr_frame_launch_review_and_add_to_chart() {
    TestServer::require_built_app();
    let port = common::free_port();
    let app = TestServer::start_with(
        |args| {
            args.app.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            args.app.public_url =
                Some(url::Url::parse(&format!("http://localhost:{port}")).unwrap());
        },
        |_| {},
    )
    .await;
    assert!(app.sandbox().ehr_url().starts_with("http://127.0.0.1:"));
    let browser = Browser::start().await;
    browser.launch_embedded(app.sandbox().ehr_url(), "pat-001").await;
    browser.wait("[data-testid=history-list] .history-row").await;
    let selected = browser.text("[data-testid=selection-count]").await;
    assert!(!selected.starts_with("0 of"), "{selected}");
    browser.click("[data-testid=add-to-chart]").await;
    browser.click("[data-testid=write-confirm-button]").await;
    let counts = browser.text("[data-testid=write-counts]").await;
    assert!(counts.contains("added") && counts.contains("0 not added"), "{counts}");
    browser.close().await;
}

/// Two servers on one PostgreSQL behind a round-robin balancer (no session affinity): the
/// whole flow works with requests alternating between them.
#[tokio::test]
async fn two_servers_behind_a_round_robin_balancer_serve_the_whole_flow() {
    TestServer::require_built_app();
    let Some(pg) = store::testing::Postgres::start() else {
        eprintln!("PostgreSQL is not installed here; skipped (CI installs it)");
        return;
    };
    let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let public = format!("http://{}", front.local_addr().unwrap());
    let url = pg.url.clone();
    let on_pg = |c: &mut service::AppConfig| c.store.database_url = Some(url.clone());
    let public_url = url::Url::parse(&public).unwrap();
    let app = TestServer::start_with(|args| args.app.public_url = Some(public_url), on_pg).await;
    let mut second = app.cli.clone();
    second.listen = std::net::SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let upstreams = vec![format!("http://{}", app.cli.listen), format!("http://{}", second.listen)];
    let _second = server::startup::start_with(second, on_pg).await.unwrap();
    let balancer = common::balancer::Balancer::start(front, upstreams);

    let browser = Browser::start().await;
    browser.client.goto(&format!("{}/", app.sandbox().ehr_url())).await.unwrap();
    browser.click("button[name=patient][value=pat-001]").await;
    browser.wait("[data-testid=history-list] .history-row").await;
    browser.click("[data-testid=add-to-chart]").await;
    browser.click("[data-testid=write-confirm-button]").await;
    let counts = browser.text("[data-testid=write-counts]").await;
    assert!(counts.contains("added") && counts.contains("0 not added"), "{counts}");
    // A reload lands on either server and finds the outcome.
    browser.client.refresh().await.unwrap();
    browser.wait("[data-testid=history-list] .history-row").await;
    let count = browser.text("[data-testid=selection-count]").await;
    assert!(count.starts_with("0 of"), "{count}");
    let served = balancer.served();
    assert!(served.iter().all(|&n| n >= 4), "both servers served: {served:?}");
    browser.close().await;
}
