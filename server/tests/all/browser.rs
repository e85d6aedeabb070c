//! The launch in real headless Chromium, against the server and sandbox on loopback.
//! Needs the Trunk build in `dist/` (the test command builds it first).
#![allow(clippy::unwrap_used)]

use crate::common;

use common::browser::Browser;

/// The app and its sandbox, for the tests below.
type Running = common::TestServer;

async fn start() -> Running {
    start_with(|_| {}).await
}

async fn start_with(adjust: impl FnOnce(&mut common::Args)) -> Running {
    Running::require_built_app();
    Running::start_with(adjust, |_| {}).await
}

#[tokio::test]
async fn ehr_launch_from_the_sandbox_launcher_shows_the_patient_banner() {
    let app = start().await;
    let browser = Browser::start().await;
    let person = app.sandbox().ehr.people[0].clone();
    browser.client.goto(&format!("{}/", app.sandbox().ehr_url())).await.unwrap();
    browser.click(&format!("button[name=patient][value={}]", person.patient_id)).await;
    assert_eq!(browser.text("[data-testid=patient-name]").await, person.display_name());
    assert_eq!(browser.text("[data-testid=patient-mrn]").await, person.mrn);
    assert_eq!(browser.text("[data-testid=user-name]").await, "Dr. Maria Alvarez");
    assert!(browser.url().await.starts_with(&format!("{}review/", app.server.url)));
    browser.close().await;
}

#[tokio::test]
async fn ehr_launch_with_an_id_token_without_kid_signs_in() {
    // As a reference SMART launcher does: one signing key, no `kid` in the id_token header,
    // no `alg` or `use` on the published key.
    let app = start_with(|cli| cli.sandbox_ehr_id_token_without_kid = true).await;
    let jwks: serde_json::Value = reqwest::get(format!("{}/auth/jwks", app.sandbox().ehr_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(jwks["keys"][0].get("alg").is_none(), "{jwks}");
    let browser = Browser::start().await;
    let person = app.sandbox().ehr.people[1].clone();
    browser.client.goto(&format!("{}/", app.sandbox().ehr_url())).await.unwrap();
    browser.click(&format!("button[name=patient][value={}]", person.patient_id)).await;
    assert_eq!(browser.text("[data-testid=patient-name]").await, person.display_name());
    assert_eq!(browser.text("[data-testid=user-name]").await, "Dr. Maria Alvarez");
    browser.close().await;
}

#[tokio::test]
async fn standalone_launch_picks_the_ehr_then_the_patient() {
    let app = start().await;
    let browser = Browser::start().await;
    let person = app.sandbox().ehr.people[2].clone();
    browser.client.goto(app.server.url.as_str()).await.unwrap();
    browser.click("a[data-ehr=sandbox-ehr]").await;
    // The sandbox EHR's sign-in and patient picker.
    browser.click(&format!("input[name=patient][value={}]", person.patient_id)).await;
    browser.click("button[name=decision][value=allow]").await;
    assert_eq!(browser.text("[data-testid=patient-name]").await, person.display_name());
    browser.close().await;
}

#[tokio::test]
async fn no_token_reaches_cookies_or_web_storage() {
    let app = start().await;
    let browser = Browser::start().await;
    browser.client.goto(&format!("{}/", app.sandbox().ehr_url())).await.unwrap();
    browser.click("button[name=patient][value=pat-001]").await;
    browser.wait("[data-testid=patient-name]").await;
    let seen = browser
        .eval(
            "const all = [document.cookie];
             for (const s of [localStorage, sessionStorage]) {
               for (let i = 0; i < s.length; i++) { all.push(s.key(i), s.getItem(s.key(i))); }
             }
             return all.join('\\n');",
        )
        .await;
    let seen = seen.as_str().unwrap().to_owned();
    // Our session cookie is HttpOnly, so script sees no cookie at all; no JWT anywhere.
    assert!(!seen.contains("eyJ"), "a JWT is visible to scripts: {seen}");
    assert!(!seen.contains("mh_session"), "the session cookie is readable by scripts");
    // The tokens the EHR issued are nowhere in the page either.
    let html = browser.client.source().await.unwrap();
    assert!(!html.contains("eyJ"));
    browser.close().await;
}

#[tokio::test]
async fn launch_errors_show_a_page_that_says_what_to_do() {
    let app = start().await;
    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("{}launch?iss=https://unknown.example/fhir", app.server.url))
        .await
        .unwrap();
    let page = browser.wait("[data-error-code=unknown_issuer]").await;
    let text = page.text().await.unwrap();
    assert!(text.contains("not set up"), "{text}");
    assert!(text.contains("What to do"), "{text}");
    browser.close().await;
}

#[tokio::test]
async fn the_app_opens_inside_the_ehr_frame() {
    let app = start().await;
    let browser = Browser::start().await;
    browser.launch_embedded(app.sandbox().ehr_url(), "pat-001").await;
    let name = browser.text("[data-testid=patient-name]").await;
    assert_eq!(name, app.sandbox().ehr.people[0].display_name());
    browser.close().await;
}
