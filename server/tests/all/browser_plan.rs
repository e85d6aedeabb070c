//! The plan's answer in real headless Chromium: cards after an EHR launch, the card-link
//! launch from the sandbox EHR's booking page, feedback from the page, and a hostile plan's
//! script that must never run.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::browser::Browser;
use common::hostile::{self, Mode};
use common::TestServer;
use serde_json::json;

async fn start() -> TestServer {
    TestServer::require_built_app();
    TestServer::start().await
}

async fn ehr_launch(browser: &Browser, app: &TestServer, patient: &str) {
    browser.client.goto(&format!("{}/", app.sandbox().ehr_url())).await.unwrap();
    browser.click(&format!("button[name=patient][value={patient}]")).await;
}

#[tokio::test]
async fn ehr_launch_shows_the_plans_cards() {
    let app = start().await;
    let browser = Browser::start().await;
    ehr_launch(&browser, &app, "pat-001").await;
    let member = browser.text("[data-testid=plan-member]").await;
    assert!(member.contains(&app.sandbox().ehr.people[0].display_name()), "{member}");
    let cards =
        browser.client.find_all(fantoccini::Locator::Css("[data-testid=plan-card]")).await.unwrap();
    assert_eq!(cards.len(), 2);
    let first = cards[0].text().await.unwrap();
    assert!(first.contains("Sandbox Health Plan has"), "{first}");
    browser.close().await;
}

#[tokio::test]
async fn card_link_launch_opens_on_the_members_plan_data() {
    let app = start().await;
    let browser = Browser::start().await;
    let person = app.sandbox().ehr.people[2].clone();
    browser.client.goto(&format!("{}/", app.sandbox().ehr_url())).await.unwrap();
    // The EHR books an appointment, which makes it call the plan's hook itself.
    browser.click(&format!("a[data-book={}]", person.patient_id)).await;
    browser.click("button[type=submit]").await;
    browser.click("button[data-smart-link]").await;
    let intro = browser.text("[data-testid=plan-intro]").await;
    assert!(intro.contains("Opened from Sandbox Health Plan"), "{intro}");
    let member = browser.text("[data-testid=plan-member]").await;
    assert!(
        member.contains(&person.display_name()) && member.contains(&person.member_id),
        "{member}"
    );
    // Only the EHR called the hook; the app went straight to the plan's data.
    let hook_calls: Vec<_> = app
        .sandbox()
        .plan
        .received()
        .into_iter()
        .filter(|r| r.path.ends_with("/pdex-member-history"))
        .collect();
    assert_eq!(hook_calls.len(), 1);
    assert_eq!(hook_calls[0].jwt.claims["iss"], app.sandbox().ehr_url());
    browser.close().await;
}

#[tokio::test]
async fn accepting_and_dismissing_cards_sends_feedback_to_the_plan() {
    let app = start().await;
    let browser = Browser::start().await;
    ehr_launch(&browser, &app, "pat-001").await;
    browser.click("[data-card-index='0'] [data-testid=accept-suggestion]").await;
    let done = browser.text("[data-card-index='0'] [data-testid=card-feedback]").await;
    assert!(done.starts_with("Accepted"), "{done}");
    browser.click("[data-card-index='1'] [data-testid=dismiss-card]").await;
    browser.click("[data-card-index='1'] [data-testid=send-dismiss]").await;
    let done = browser.text("[data-card-index='1'] [data-testid=card-feedback]").await;
    assert!(done.contains("Dismissed (Given elsewhere)"), "{done}");
    let feedback = app.sandbox().plan.feedback();
    assert_eq!(feedback.len(), 2, "{feedback:?}");
    assert_eq!(feedback[0]["outcome"], "accepted");
    assert_eq!(feedback[1]["outcome"], "overridden");
    assert_eq!(feedback[1]["overrideReason"]["reason"]["code"], "given-elsewhere");
    browser.close().await;
}

#[tokio::test]
async fn a_hostile_plans_script_never_runs() {
    TestServer::require_built_app();
    let (base, _task) = hostile::start(Mode::Json(json!({"cards": [hostile::xss_card()]}))).await;
    let app = TestServer::start_with(
        |_| {},
        |config| config.payers[0].cds_base = url::Url::parse(&base).unwrap(),
    )
    .await;
    let browser = Browser::start().await;
    ehr_launch(&browser, &app, "pat-001").await;
    let summary = browser.text("[data-testid=plan-card] .card-summary").await;
    assert!(
        summary.contains("<script>window.__pwned='summary'</script>"),
        "shown as text: {summary}"
    );
    browser.click("[data-testid=dismiss-card]").await;
    browser.wait("[data-testid=override-reason]").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let pwned = browser
        .eval("return typeof window.__pwned === 'undefined' ? null : String(window.__pwned);")
        .await;
    assert!(pwned.is_null(), "injected script ran: {pwned}");
    let hrefs = browser
        .eval("return Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href') || '').join(' ');")
        .await;
    let hrefs = hrefs.as_str().unwrap();
    assert!(!hrefs.contains("javascript:") && !hrefs.contains("data:"), "{hrefs}");
    let rels = browser
        .eval("return Array.from(document.querySelectorAll('.card a[target=_blank]')).every(a => (a.rel || '').includes('noopener') && a.rel.includes('noreferrer'));")
        .await;
    assert_eq!(rels, serde_json::Value::Bool(true));
    browser.close().await;
}

#[tokio::test]
async fn a_plan_timeout_names_the_plan_and_offers_a_retry() {
    TestServer::require_built_app();
    let (base, _task) = hostile::start(Mode::Stall).await;
    let app = TestServer::start_with(
        |_| {},
        |config| {
            config.payers[0].cds_base = url::Url::parse(&base).unwrap();
            config.payers[0].timeout_seconds = 2;
        },
    )
    .await;
    let browser = Browser::start().await;
    ehr_launch(&browser, &app, "pat-001").await;
    let progress = browser.text("[data-testid=plan-progress]").await;
    assert!(progress.contains("Asking Sandbox Health Plan"), "{progress}");
    let error = browser.text("[data-testid=plan-error]").await;
    assert!(error.contains("Sandbox Health Plan did not answer within 2 seconds"), "{error}");
    assert!(error.contains("Try again"));
    browser.close().await;
}

#[tokio::test]
async fn a_typed_member_id_naming_someone_else_says_so_and_shows_nothing_of_theirs() {
    let app = start().await;
    let browser = Browser::start().await;
    let people = &app.sandbox().ehr.people;
    let patient =
        people.iter().find(|p| p.coverage == sandbox::synthetic::CoverageKind::None).unwrap();
    let someone_else =
        people.iter().find(|p| p.coverage == sandbox::synthetic::CoverageKind::MemberId).unwrap();
    ehr_launch(&browser, &app, &patient.patient_id).await;
    let input = browser.wait("[data-testid=member-id-form] input[name=member_id]").await;
    input.send_keys(&someone_else.member_id).await.unwrap();
    browser.click("[data-testid=member-id-form] button[type=submit]").await;
    let page = browser.text("[data-testid=plan-member-mismatch]").await;
    assert!(page.contains("does not match this patient"), "{page}");
    assert!(page.contains("Nothing from Sandbox Health Plan is shown or written"), "{page}");
    let body = browser.text("body").await;
    assert!(!body.contains(&someone_else.family), "another person's name on the page: {body}");
    for absent in
        ["[data-testid=plan-member]", "[data-testid=plan-card]", "[data-testid=history-list]"]
    {
        let found = browser.client.find_all(fantoccini::Locator::Css(absent)).await.unwrap();
        assert!(found.is_empty(), "{absent} shown");
    }
    browser.close().await;
}

#[tokio::test]
async fn provider_access_from_the_attestation_to_the_review_with_its_progress() {
    let app = start().await;
    app.sandbox()
        .plan
        .provider_access
        .set_behaviour(|b| b.delay = std::time::Duration::from_secs(3));
    let browser = Browser::start().await;
    ehr_launch(&browser, &app, "pat-001").await;
    // Provider Access comes first, and asks nothing before the clinician attests.
    let panel = browser.text("[data-testid=provider-access]").await;
    assert!(panel.contains("Provider Access"), "{panel}");
    let ask = browser.wait("[data-testid=pa-ask]").await;
    assert!(!ask.is_enabled().await.unwrap(), "the ask waits for the attestation");
    browser.click("[data-testid=pa-attest]").await;
    browser.click("[data-testid=pa-ask]").await;
    // The progress, while the plan works: matching, then exporting.
    browser.wait("[data-testid=pa-stage][data-stage=matching]").await;
    browser.wait("[data-testid=pa-stage][data-stage=exporting]").await;
    let ready = browser.text("[data-testid=pa-stage][data-stage=ready]").await;
    assert!(ready.starts_with("Ready: "), "{ready}");
    browser.click("[data-testid=pa-open]").await;
    let count = browser.text("[data-testid=pa-review] [data-testid=selection-count]").await;
    let total: usize =
        ready.trim_start_matches("Ready: ").split(' ').next().unwrap().parse().unwrap();
    assert!(count.ends_with(&format!("of {total} selected")), "{count} / {ready}");
    // One review on the page: the export's, not the hook's as well.
    let reviews =
        browser.client.find_all(fantoccini::Locator::Css("section.history")).await.unwrap();
    assert_eq!(reviews.len(), 1);
    browser.close().await;
}

#[tokio::test]
async fn a_history_the_plan_pushed_is_offered_and_opened_for_review() {
    let app = start().await;
    let browser = Browser::start().await;
    let person = app.sandbox().ehr.person("pat-001").unwrap().clone();
    let member = app.sandbox().plan.members.iter().find(|m| m.member_id == person.member_id);
    let member = member.unwrap().patient_id.clone();
    // The plan pushes the member's history from its own page (a real signed POST).
    browser.client.goto(&format!("{}/", app.sandbox().plan_url())).await.unwrap();
    browser.click(&format!("select[name=member] option[value={member}]")).await;
    browser.click("button[type=submit]").await;
    let said = browser.text("[data-testid=push-result]").await;
    assert!(said.contains("answered 201"), "{said}");
    ehr_launch(&browser, &app, "pat-001").await;
    let offer = browser.text("[data-testid=pushed-said]").await;
    assert!(offer.starts_with("Sandbox Health Plan sent history on "), "{offer}");
    browser.click("[data-testid=pushed-open]").await;
    let count = browser.text("[data-testid=pushed-review] [data-testid=selection-count]").await;
    let total = offer.rsplit(": ").next().unwrap().trim_end_matches(" records.");
    assert!(count.ends_with(&format!("of {total} selected")), "{count} / {offer}");
    let reviews =
        browser.client.find_all(fantoccini::Locator::Css("section.history")).await.unwrap();
    assert_eq!(reviews.len(), 1, "the pushed history's review only");
    browser.close().await;
}

#[tokio::test]
async fn the_patient_signs_in_at_the_plan_and_what_they_share_is_reviewed() {
    let app = start().await;
    let browser = Browser::start().await;
    let person = app.sandbox().ehr.person("pat-001").unwrap().clone();
    let member = app.sandbox().plan.members.iter().find(|m| m.member_id == person.member_id);
    let member = member.unwrap().clone();
    ehr_launch(&browser, &app, "pat-001").await;
    browser.click("[data-testid=ma-start]").await;
    let link = browser.text("[data-testid=ma-link-text]").await;
    let review = browser.url().await;
    // A front-desk tablet: the patient signs in at the plan, keeping behavioural health back.
    browser.client.goto(&link).await.unwrap();
    browser.wait("input[name=member_id]").await.send_keys(&member.member_id).await.unwrap();
    browser
        .eval(&format!(
            "document.querySelector('input[name=birth_date]').value = '{}'; return true;",
            member.birth_date
        ))
        .await;
    browser.click("input[name=share_behavioural_health]").await;
    browser.click("button[value=allow]").await;
    let said = browser.text("[data-testid=member-access-said]").await;
    assert!(said.contains("give the device back"), "{said}");
    // Back with the clinician: the plan's member is confirmed and their records reviewed.
    browser.client.goto(&review).await.unwrap();
    let withheld = browser.text("[data-testid=ma-withheld]").await;
    assert!(withheld.contains("behavioural health records"), "{withheld}");
    let count = browser.text("[data-testid=ma-review] [data-testid=selection-count]").await;
    assert!(count.contains("selected"), "{count}");
    let reviews =
        browser.client.find_all(fantoccini::Locator::Css("section.history")).await.unwrap();
    assert_eq!(reviews.len(), 1, "the member's review only");
    browser.close().await;
}
