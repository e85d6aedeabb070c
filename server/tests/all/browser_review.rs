//! The review page in headless Chromium: group counts, filters, select all/none, duplicates
//! and sensitive items unselected, the selection surviving a reload, keyboard use, the EHR's
//! 800×600 frame, and axe-core's accessibility rules.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::browser::Browser;
use common::TestServer;
use fantoccini::Locator;
use serde_json::Value;

async fn start() -> TestServer {
    TestServer::require_built_app();
    TestServer::start().await
}

async fn open_review(browser: &Browser, app: &TestServer, patient: &str) {
    browser.client.goto(&format!("{}/", app.sandbox().ehr_url())).await.unwrap();
    browser.click(&format!("button[name=patient][value={patient}]")).await;
    browser.wait("[data-testid=history-list] .history-row").await;
}

/// The expected count of each group for the member: the plan's resources, grouped.
fn expected_counts(app: &TestServer, member: &str) -> Vec<(pdex::Category, usize)> {
    let resources = app.sandbox().plan.store.compartment(member);
    pdex::Category::ALL
        .into_iter()
        .map(|c| {
            (
                c,
                resources
                    .iter()
                    .filter(|r| pdex::Category::of(r["resourceType"].as_str().unwrap()) == Some(c))
                    .count(),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

async fn count(browser: &Browser, category: pdex::Category) -> usize {
    browser.text(&format!("[data-testid=count-{category:?}]")).await.parse().unwrap()
}

async fn selection(browser: &Browser) -> usize {
    let text = browser.text("[data-testid=selection-count]").await;
    text.split(' ').next().unwrap().parse().unwrap()
}

/// (checked, badges) of the rendered rows.
async fn rows(browser: &Browser) -> Vec<(bool, String)> {
    let value = browser
        .eval(
            "return Array.from(document.querySelectorAll('.history-row[data-key]')).map(r =>
               [r.querySelector('input[type=checkbox]').checked, r.querySelector('.row-badges').textContent]);",
        )
        .await;
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_bool().unwrap(), r[1].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn counts_filters_selection_and_reload() {
    let app = start().await;
    let browser = Browser::start().await;
    open_review(&browser, &app, "pat-001").await;
    for (category, expected) in expected_counts(&app, "mbr-001") {
        assert_eq!(count(&browser, category).await, expected, "{category:?}");
    }

    // Duplicates and sensitive items start unselected; the rest selected.
    for category in
        [pdex::Category::Conditions, pdex::Category::Immunizations, pdex::Category::Encounters]
    {
        browser.click(&format!("[data-testid=tab-{category:?}]")).await;
        for (checked, badges) in rows(&browser).await {
            let flagged = badges.contains("In chart") || badges.contains("Sensitive");
            assert_eq!(checked, !flagged, "{category:?}: {badges}");
        }
    }

    // Select none, then all, in a group.
    browser.click("[data-testid=tab-Conditions]").await;
    let conditions = count(&browser, pdex::Category::Conditions).await;
    let before = selection(&browser).await;
    browser.click("[data-testid=select-none]").await;
    let after_none = selection(&browser).await;
    assert!(after_none < before);
    assert!(rows(&browser).await.iter().all(|(checked, _)| !checked));
    browser.click("[data-testid=select-all]").await;
    assert!(rows(&browser).await.iter().all(|(checked, _)| *checked));
    assert_eq!(selection(&browser).await, after_none + conditions);

    // Filters: hide what the chart has; search.
    browser.click("[data-testid=filter-duplicates]").await;
    assert_eq!(count(&browser, pdex::Category::Conditions).await, conditions - 1);
    browser.click("[data-testid=filter-duplicates]").await;
    let search = browser.wait("[data-testid=filter-text]").await;
    search.send_keys("influenza").await.unwrap();
    assert_eq!(count(&browser, pdex::Category::Conditions).await, 0);
    assert!(count(&browser, pdex::Category::Immunizations).await >= 1);
    search.clear().await.unwrap();
    search.send_keys(" ").await.unwrap();

    // Untick one item; the change survives a reload.
    browser.click("[data-testid=tab-Conditions]").await;
    let selected_before_reload = selection(&browser).await;
    browser.click(".history-row[data-key] input[type=checkbox]").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let changed = selection(&browser).await;
    assert_eq!(changed, selected_before_reload - 1);
    browser.client.refresh().await.unwrap();
    browser.wait("[data-testid=history-list] .history-row").await;
    assert_eq!(selection(&browser).await, changed);
    browser.close().await;
}

#[tokio::test]
async fn keyboard_moves_selects_and_opens_details() {
    let app = start().await;
    let browser = Browser::start().await;
    open_review(&browser, &app, "pat-001").await;
    browser.wait("#history-row-0 input[type=checkbox]").await;
    browser.eval("document.querySelector('#history-row-0 input').focus(); return 0;").await;
    browser.press('\u{E015}').await; // ArrowDown
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let active = browser.eval("return document.activeElement.closest('.history-row').id;").await;
    assert_eq!(active, Value::String("history-row-1".into()));
    let before = browser.eval("return document.activeElement.checked;").await;
    browser.press(' ').await;
    let after = browser.eval("return document.activeElement.checked;").await;
    assert_ne!(before, after, "space toggles the focused item");
    // Tab to its Details button, Enter opens the drawer, Escape closes it.
    browser.click("#history-row-1 .details-button").await;
    let drawer = browser.wait("[data-testid=detail-drawer]").await;
    assert!(!browser.text("[data-testid=detail-codes]").await.is_empty());
    let raw = browser.text("[data-testid=detail-raw]").await;
    assert!(raw.contains("\"resourceType\""));
    let _ = drawer;
    browser.press('\u{E00C}').await; // Escape
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(browser.client.find(Locator::Css("[data-testid=detail-drawer]")).await.is_err());
    browser.close().await;
}

#[tokio::test]
async fn the_review_fits_an_800_by_600_ehr_frame() {
    let app = start().await;
    let browser = Browser::start().await;
    browser.client.goto(&format!("{}/", app.sandbox().ehr_url())).await.unwrap();
    browser.click("input[name=embedded]").await;
    browser.click("button[name=patient][value=pat-001]").await;
    browser.wait("#app-frame").await.enter_frame().await.unwrap();
    browser.wait("[data-testid=history-list] .history-row").await;
    let (scroll_width, client_width) = {
        let v = browser.eval("return [document.documentElement.scrollWidth, document.documentElement.clientWidth];").await;
        (v[0].as_u64().unwrap(), v[1].as_u64().unwrap())
    };
    assert!(
        client_width <= 800 && scroll_width <= client_width,
        "no sideways scrolling: {scroll_width} > {client_width}"
    );
    // The list scrolls to its last item.
    browser
        .eval("const l = document.querySelector('[data-testid=history-list]'); l.scrollTop = l.scrollHeight; l.dispatchEvent(new Event('scroll')); return 0;")
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let last = browser.eval("const r = Array.from(document.querySelectorAll('.history-row')); return r.map(x => Number(x.getAttribute('aria-posinset'))).reduce((a,b) => Math.max(a,b), 0) === Number(r[0].getAttribute('aria-setsize'));").await;
    assert_eq!(last, Value::Bool(true));
    browser.close().await;
}

#[tokio::test]
async fn axe_finds_no_serious_or_critical_violations() {
    let app = start().await;
    let browser = Browser::start().await;
    open_review(&browser, &app, "pat-001").await;
    let axe =
        std::fs::read_to_string(common::workspace().join("tools/node_modules/axe-core/axe.min.js"))
            .expect("axe-core is installed by scripts/bootstrap (npm ci --prefix tools)");
    browser.client.execute(&axe, vec![]).await.unwrap();
    let check = || async {
        let result = browser
            .client
            .execute_async(
                // Colours are judged once transitions (the drawer sliding in) have ended.
                "const done = arguments[arguments.length - 1];
                 Promise.all(document.getAnimations().map(a => a.finished)).then(() =>
                 axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map(v =>
                   ({id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help})))));",
                vec![],
            )
            .await
            .unwrap();
        result
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .cloned()
            .collect::<Vec<Value>>()
    };
    let serious = check().await;
    assert!(serious.is_empty(), "review page: {serious:#?}");
    browser.click("#history-row-0 .details-button").await;
    browser.wait("[data-testid=detail-raw]").await;
    let serious = check().await;
    assert!(serious.is_empty(), "detail drawer: {serious:#?}");
    browser.close().await;
}
