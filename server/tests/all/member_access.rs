//! Member-authorized access (PDex §3-4-2) through the router and the sandbox plan: the link,
//! the member's sign-in and authorization screen at the plan, the callback, the identity
//! check, and the review of what the member shared; a member who withholds demographics, who
//! is someone else, who denies; a link or callback used twice.
#![allow(clippy::unwrap_used)]

use axum::http::StatusCode;
use serde_json::Value;

use crate::common::Driver;

/// The member's choices on the plan's screen.
struct Member<'a> {
    member_id: &'a str,
    birth_date: &'a str,
    demographics: bool,
    behavioural_health: bool,
    allow: bool,
}

/// Follows the link as the member's device does, signs in and decides at the plan; the
/// callback's page.
async fn sign_in(
    driver: &mut Driver,
    link: &str,
    member: &Member<'_>,
) -> (StatusCode, String, String) {
    let handoff = driver.get(link).await;
    assert_eq!(handoff.status, StatusCode::SEE_OTHER, "{}", handoff.body);
    let authorize = handoff.location.unwrap();
    let page = driver.get(&authorize).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let marker = "name=\"request_id\" value=\"";
    let start = page.body.find(marker).unwrap() + marker.len();
    let request_id = &page.body[start..start + page.body[start..].find('"').unwrap()];
    let mut form = vec![
        ("request_id", request_id.to_owned()),
        ("member_id", member.member_id.to_owned()),
        ("birth_date", member.birth_date.to_owned()),
        ("decision", if member.allow { "allow" } else { "deny" }.to_owned()),
    ];
    if member.demographics {
        form.push(("share_demographics", "yes".into()));
    }
    if member.behavioural_health {
        form.push(("share_behavioural_health", "yes".into()));
    }
    let plan = driver.sandbox().plan_url().to_owned();
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let decided =
        http.post(format!("{plan}/auth/authorize/decide")).form(&form).send().await.unwrap();
    assert_eq!(decided.status().as_u16(), 303, "{}", decided.text().await.unwrap());
    let callback = decided.headers()["location"].to_str().unwrap().to_owned();
    let back = driver.get(&callback).await;
    (back.status, back.body, callback)
}

fn member_of(driver: &Driver, patient: &str) -> (String, String) {
    let person = driver.sandbox().ehr.person(patient).unwrap().clone();
    let member = driver.sandbox().plan.members.iter().find(|m| m.member_id == person.member_id);
    let member = member.unwrap();
    (member.member_id.clone(), member.birth_date.clone())
}

async fn start(driver: &mut Driver, launch: &str) -> String {
    let (status, view) = driver.server_fn("member_access_start", &[("launch", launch)]).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["stage"], "Waiting", "{view}");
    view["link"].as_str().unwrap().to_owned()
}

async fn status_of(driver: &mut Driver, launch: &str) -> Value {
    let (status, view) = driver.server_fn("member_access_status", &[("launch", launch)]).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view
}

#[tokio::test]
async fn the_member_signs_in_withholds_behavioural_health_and_their_records_join_the_review() {
    let mut driver = Driver::new(3600).await;
    let launch = driver.launch("pat-001").await;
    let link = start(&mut driver, &launch).await;
    let (member_id, birth_date) = member_of(&driver, "pat-001");
    let choice = Member {
        member_id: &member_id,
        birth_date: &birth_date,
        demographics: true,
        behavioural_health: false,
        allow: true,
    };
    let (status, page, callback) = sign_in(&mut driver, &link, &choice).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("give the device back"), "{page}");
    let replayed = driver.get(&callback).await;
    assert_eq!(replayed.status, StatusCode::BAD_REQUEST, "a callback works once");
    let view = status_of(&mut driver, &launch).await;
    let withheld = view["stage"]["Shared"]["withheld"].as_array().unwrap();
    assert_eq!(withheld, &["behavioural health records"], "{view}");
    let (status, history) =
        driver.server_fn("history", &[("launch", &launch), ("refresh", "false")]).await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let items = history["items"].as_array().unwrap();
    assert!(items.len() > 10, "{history}");
    assert!(
        !items.iter().any(|i| i["sensitive"].to_string().contains("PSY")),
        "what the member withheld is not shown"
    );
    // The link and the callback are spent.
    let again = driver.get(&link).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.body);
    assert_eq!(driver.get(&format!("{link}/qr.svg")).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn no_demographics_another_member_or_a_denial_shows_nothing() {
    let mut driver = Driver::new(3600).await;
    let (member_id, birth_date) = member_of(&driver, "pat-001");
    let (other_id, other_birth) = member_of(&driver, "pat-002");
    for (choice, says) in [
        (
            Member {
                member_id: &member_id,
                birth_date: &birth_date,
                demographics: false,
                behavioural_health: true,
                allow: true,
            },
            "did not share their demographics",
        ),
        (
            Member {
                member_id: &other_id,
                birth_date: &other_birth,
                demographics: true,
                behavioural_health: true,
                allow: true,
            },
            "does not match this patient",
        ),
        (
            Member {
                member_id: &member_id,
                birth_date: &birth_date,
                demographics: true,
                behavioural_health: true,
                allow: false,
            },
            "did not allow",
        ),
    ] {
        let launch = driver.launch("pat-001").await;
        let link = start(&mut driver, &launch).await;
        let (status, page, _) = sign_in(&mut driver, &link, &choice).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let view = status_of(&mut driver, &launch).await;
        let message = view["stage"]["Refused"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty() && message.contains(says), "{view}");
        let (status, history) =
            driver.server_fn("history", &[("launch", &launch), ("refresh", "false")]).await;
        assert_ne!(status, StatusCode::OK, "nothing shown: {history}");
    }
}
