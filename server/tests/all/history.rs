//! The plan's history for review, through the router: fetched from the sandbox plan, checked
//! against the sandbox EHR's chart, selection kept server side.
#![allow(clippy::unwrap_used)]

use crate::common;

use axum::http::StatusCode;
use common::Driver;
use serde_json::Value;

fn item(view: &Value, pred: impl Fn(&Value) -> bool) -> &Value {
    view["items"].as_array().unwrap().iter().find(|i| pred(i)).unwrap()
}

#[tokio::test]
async fn the_history_has_every_item_with_duplicates_and_sensitive_ones_unselected() {
    let mut driver = Driver::new(3600).await;
    let (_, view) = driver.plan_history("pat-001").await;
    let items = view["items"].as_array().unwrap();
    // Every clinical resource the plan holds for the member is an item.
    let plan = &driver.sandbox().plan;
    let clinical = plan
        .store
        .compartment("mbr-001")
        .iter()
        .filter(|r| pdex::Category::of(r["resourceType"].as_str().unwrap()).is_some())
        .count();
    assert_eq!(items.len(), clinical);
    assert!(!view.to_string().contains("\"resource\""), "raw resources are not sent with the list");
    let selected: std::collections::HashSet<&str> =
        view["selected"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    // The chart already has the member's hypertension and flu shot (same code, same day).
    let hypertension = item(&view, |i| {
        i["category"] == "Conditions"
            && i["display"] == "Essential hypertension"
            && i["in_chart"] == true
    });
    assert!(!selected.contains(hypertension["key"].as_str().unwrap()));
    let flu = item(&view, |i| i["category"] == "Immunizations" && i["in_chart"] == true);
    assert!(!selected.contains(flu["key"].as_str().unwrap()));
    // Sensitive items start unselected; the rest start selected.
    for i in items {
        let key = i["key"].as_str().unwrap();
        let sensitive = !i["sensitive"].as_array().unwrap().is_empty();
        let duplicate = i["in_chart"] == true;
        assert_eq!(selected.contains(key), !sensitive && !duplicate, "{key}");
    }
    assert!(
        items.iter().any(|i| !i["sensitive"].as_array().unwrap().is_empty()),
        "the seeded member has sensitive items"
    );
    // The clinic is the clinician's own organisation: its items are marked for the PDex filter.
    assert_eq!(view["own_organization_known"], true);
    assert!(items
        .iter()
        .any(|i| i["own_organization"] == true && i["source"] == "Riverside Family Medicine"));
}

#[tokio::test]
async fn the_selection_is_kept_server_side() {
    let mut driver = Driver::new(3600).await;
    let (launch, view) = driver.plan_history("pat-002").await;
    let keys: Vec<String> = view["selected"]
        .as_array()
        .unwrap()
        .iter()
        .take(3)
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let body = serde_json::json!({"launch": launch, "keys": keys, "selected": false}).to_string();
    let (status, summary) = driver.server_fn_json("selection", &body).await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    assert_eq!(
        summary["selected"].as_u64().unwrap() as usize,
        view["selected"].as_array().unwrap().len() - 3
    );
    // A reload (or another tab of the same launch) sees the change; nothing is read from the plan again.
    let calls = driver.sandbox().plan.received().len();
    let (_, again) =
        driver.server_fn("history", &[("launch", &launch), ("refresh", "false")]).await;
    let now: Vec<&str> =
        again["selected"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert!(keys.iter().all(|k| !now.contains(&k.as_str())));
    assert_eq!(driver.sandbox().plan.received().len(), calls);
    // A refresh from the plan keeps the clinician's choices.
    let (_, refreshed) =
        driver.server_fn("history", &[("launch", &launch), ("refresh", "true")]).await;
    let after: Vec<&str> =
        refreshed["selected"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert!(keys.iter().all(|k| !after.contains(&k.as_str())));
    assert_eq!(after.len(), now.len());
}

#[tokio::test]
async fn an_item_in_full_with_its_raw_resource() {
    let mut driver = Driver::new(3600).await;
    let (launch, view) = driver.plan_history("pat-001").await;
    let key = view["items"][0]["key"].as_str().unwrap().to_owned();
    let (status, detail) =
        driver.server_fn("history_item", &[("launch", &launch), ("key", &key)]).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    let duplicate = item(&view, |i| i["in_chart"] == true)["key"].as_str().unwrap().to_owned();
    let (_, dup) =
        driver.server_fn("history_item", &[("launch", &launch), ("key", &duplicate)]).await;
    assert!(dup["item"]["duplicate_of"].as_str().unwrap().contains("/pat-001-chart-"), "{dup}");
    let raw: Value = serde_json::from_str(detail["raw_json"].as_str().unwrap()).unwrap();
    assert_eq!(
        format!("{}/{}", raw["resourceType"].as_str().unwrap(), raw["id"].as_str().unwrap()),
        key
    );
    let (status, _) = driver
        .server_fn("history_item", &[("launch", &launch), ("key", "Condition/not-there")])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_history_is_read_with_the_stu1_token_too() {
    let mut driver = Driver::with(3600, |cli| cli.sandbox_plan_style = "stu1".into(), |_| {}).await;
    let (_, view) = driver.plan_history("pat-003").await;
    assert!(view["items"].as_array().unwrap().len() > 100);
}

#[tokio::test]
async fn the_history_needs_the_plans_answer_first() {
    let mut driver = Driver::new(3600).await;
    let launch = driver.launch("pat-001").await;
    let (status, body) =
        driver.server_fn("history", &[("launch", &launch), ("refresh", "false")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "bad_request");
}
