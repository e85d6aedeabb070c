//! Asking the plan in place of the EMR, through the router and the in-process sandbox: the
//! member identification paths, both PDex answer styles, feedback, and checks modelled on the
//! Inferno Da Vinci CRD client tests (JWT header and claims, JWKS at `jku`, hookInstance,
//! context fields, prefetch equal to what the EMR query returns).
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::HashSet;

use axum::http::StatusCode;
use common::Driver;
use sandbox::synthetic::CoverageKind;
use serde_json::Value;

fn patient_with(driver: &Driver, kind: CoverageKind, nth: usize) -> String {
    driver
        .sandbox()
        .ehr
        .people
        .iter()
        .filter(|p| p.coverage == kind)
        .nth(nth)
        .unwrap()
        .patient_id
        .clone()
}

async fn ask(driver: &mut Driver, launch: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut args = vec![("launch", launch)];
    args.extend_from_slice(form);
    driver.server_fn("request_plan_history", &args).await
}

#[tokio::test]
async fn member_id_from_coverage_gets_cards_and_the_members_data() {
    let mut driver = Driver::new(3600).await;
    let launch = driver.launch("pat-001").await;
    let (status, plan) = driver.server_fn("plan_status", &[("launch", &launch)]).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    let ready = &plan["identification"]["Ready"];
    assert_eq!(ready["source"], "Coverage");
    assert_eq!(ready["member_id"], driver.sandbox().ehr.people[0].member_id);
    assert!(plan["answer"].is_null());

    let (status, answer) = ask(&mut driver, &launch, &[]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["outcome"], "Matched");
    assert_eq!(answer["payer"]["name"], "Sandbox Health Plan");
    let cards = answer["cards"].as_array().unwrap();
    assert!(cards.len() >= 2);
    assert!(cards[0]["detail_html"].as_str().unwrap().contains("<strong>"));
    assert_eq!(cards[0]["links"][0]["kind"], "PlanData");
    // Followed to the plan's FHIR API (SMART Backend Services in the PDex 2.x style).
    let member = &answer["member"];
    assert_eq!(member["name"], driver.sandbox().ehr.people[0].display_name());
    assert!(member["records"].as_u64().unwrap() > 100, "{member}");
    assert!(answer["data_problem"].is_null(), "{answer}");
    // A reload finds the same answer, without asking the plan again.
    let calls = driver.sandbox().plan.received().len();
    let (_, again) = driver.server_fn("plan_status", &[("launch", &launch)]).await;
    assert_eq!(again["answer"]["cards"].as_array().unwrap().len(), cards.len());
    assert_eq!(driver.sandbox().plan.received().len(), calls);
}

#[tokio::test]
async fn stu1_cards_carry_the_token_that_is_used() {
    let mut driver = Driver::with(3600, |cli| cli.sandbox_plan_style = "stu1".into(), |_| {}).await;
    let launch = driver.launch("pat-002").await;
    let (_, answer) = ask(&mut driver, &launch, &[]).await;
    assert_eq!(answer["outcome"], "Matched", "{answer}");
    assert_eq!(answer["member"]["name"], driver.sandbox().ehr.people[1].display_name());
    // The token never reaches the browser.
    assert!(!answer.to_string().contains("eyJ"));
}

#[tokio::test]
async fn subscriber_id_and_demographics_when_there_is_no_member_id() {
    let mut driver = Driver::new(3600).await;
    let patient = patient_with(&driver, CoverageKind::SubscriberOnly, 0);
    let launch = driver.launch(&patient).await;
    let (_, plan) = driver.server_fn("plan_status", &[("launch", &launch)]).await;
    assert_eq!(plan["identification"]["Ready"]["source"], "SubscriberAndDemographics");
    let (_, answer) = ask(&mut driver, &launch, &[]).await;
    assert_eq!(answer["outcome"], "Matched", "{answer}");
    let sent = driver
        .sandbox()
        .plan
        .received()
        .into_iter()
        .rev()
        .find(|r| r.path.ends_with("pdex-member-history"))
        .unwrap();
    let body = sent.body.unwrap();
    assert!(body["extension"].get("memberId").is_none());
    assert_eq!(body["extension"]["coverage"]["beneficiary"]["reference"], "#beneficiary");
    assert_eq!(body["extension"]["coverage"]["contained"][0]["resourceType"], "Patient");
}

#[tokio::test]
async fn several_matching_members_get_the_plans_explanation_and_a_member_id_box() {
    let mut driver = Driver::new(3600).await;
    let patient = patient_with(&driver, CoverageKind::SubscriberOnly, 1);
    let launch = driver.launch(&patient).await;
    let (status, answer) = ask(&mut driver, &launch, &[]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["outcome"], "NotMatched");
    assert!(answer["cards"][0]["summary"].as_str().unwrap().contains("Several members"));
    // Typing the member id resolves it.
    let person = driver.sandbox().ehr.person(&patient).unwrap().clone();
    let (_, answer) =
        ask(&mut driver, &launch, &[("payer", "sandbox-plan"), ("member_id", &person.member_id)])
            .await;
    assert_eq!(answer["outcome"], "Matched", "{answer}");
    // The typed id names this patient: the identity check passes and the history loads.
    assert!(answer["member_mismatch"].is_null(), "{answer}");
    assert!(answer["member"].is_object(), "{answer}");
    let (status, history) =
        driver.server_fn("history", &[("launch", &launch), ("refresh", "false")]).await;
    assert_eq!(status, StatusCode::OK, "{history}");
}

#[tokio::test]
async fn coverage_with_another_plan_or_none_asks_for_the_member_id() {
    let mut driver = Driver::new(3600).await;
    let other = patient_with(&driver, CoverageKind::OtherPlan, 0);
    let launch = driver.launch(&other).await;
    let (_, plan) = driver.server_fn("plan_status", &[("launch", &launch)]).await;
    assert_eq!(plan["identification"]["UnconfiguredPlan"]["plan_names"][0], "Northwind Mutual");
    let (status, refused) = ask(&mut driver, &launch, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refused["code"], "bad_request");

    let none = patient_with(&driver, CoverageKind::None, 0);
    let launch = driver.launch(&none).await;
    let (_, plan) = driver.server_fn("plan_status", &[("launch", &launch)]).await;
    assert!(plan["identification"]["NoCoverage"].is_object(), "{plan}");
    let (_, answer) =
        ask(&mut driver, &launch, &[("payer", "sandbox-plan"), ("member_id", "NOSUCH123")]).await;
    assert_eq!(answer["outcome"], "NotMatched");
    let (status, bad) =
        ask(&mut driver, &launch, &[("payer", "sandbox-plan"), ("member_id", "<script>")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad["message"].as_str().unwrap().contains("letters, digits"));
}

#[tokio::test]
async fn feedback_for_accept_and_dismiss_reaches_the_plan() {
    let mut driver = Driver::new(3600).await;
    let launch = driver.launch("pat-001").await;
    let (_, answer) = ask(&mut driver, &launch, &[]).await;
    let first = &answer["cards"][0];
    let suggestion = first["suggestions"][0]["uuid"].as_str().unwrap().to_owned();
    let (status, card) = driver
        .server_fn(
            "card_feedback",
            &[("launch", &launch), ("card", "0"), ("suggestion", &suggestion)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{card}");
    assert!(card["feedback"]["Accepted"].is_object());
    let reason = answer["cards"][1]["override_reasons"][0]["code"].as_str().unwrap().to_owned();
    let (status, card) = driver
        .server_fn(
            "card_feedback",
            &[("launch", &launch), ("card", "1"), ("reason", &reason), ("comment", "seen it")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{card}");

    let feedback = driver.sandbox().plan.feedback();
    assert_eq!(feedback.len(), 2);
    assert_eq!(feedback[0]["card"], first["uuid"]);
    assert_eq!(feedback[0]["outcome"], "accepted");
    assert_eq!(feedback[0]["acceptedSuggestions"][0]["id"], suggestion);
    assert_eq!(feedback[1]["outcome"], "overridden");
    assert_eq!(feedback[1]["overrideReason"]["reason"]["code"], reason);
    assert_eq!(feedback[1]["overrideReason"]["reason"]["system"], sandbox::plan::OVERRIDE_SYSTEM);
    assert_eq!(feedback[1]["overrideReason"]["userComment"], "seen it");
    let stamp = feedback[1]["outcomeTimestamp"].as_str().unwrap();
    assert!(
        stamp.ends_with('Z')
            && time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
                .is_ok()
    );

    // A reason the card does not offer is refused before anything is sent.
    let (status, _) = driver
        .server_fn("card_feedback", &[("launch", &launch), ("card", "1"), ("reason", "made-up")])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(driver.sandbox().plan.feedback().len(), 2);
}

// ---- Checks modelled on the Inferno Da Vinci CRD client test kit ----

#[tokio::test]
async fn inferno_jwt_header_claims_and_uniqueness_over_50_calls() {
    let mut driver = Driver::new(3600).await;
    let launch = driver.launch("pat-001").await;
    for _ in 0..50 {
        let (status, answer) = ask(&mut driver, &launch, &[]).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let received = driver.sandbox().plan.received();
    let ours: Vec<_> =
        received.iter().filter(|r| r.jwt.claims["iss"] == "http://mh.test").collect();
    let hooks: Vec<_> = ours.iter().filter(|r| r.path.ends_with("/pdex-member-history")).collect();
    assert_eq!(hooks.len(), 50);
    let jwks: jose::jwk::JwkSet = driver.prepared.state.jwks();
    let plan_url = driver.sandbox().plan_url().to_owned();
    let mut jtis = HashSet::new();
    let mut instances = HashSet::new();
    for r in &ours {
        assert!(r.jwt.accepted, "{:?}", r.jwt.refusal);
        let h = &r.jwt.header;
        let alg = h["alg"].as_str().unwrap();
        assert!(alg != "none" && !alg.starts_with("HS"), "alg {alg}");
        assert_eq!(h["typ"], "JWT");
        let kid = h["kid"].as_str().unwrap();
        assert!(jwks.find(kid).is_some(), "kid must be in our JWKS");
        assert_eq!(h["jku"], "http://mh.test/.well-known/jwks.json");
        let c = &r.jwt.claims;
        assert_eq!(c["iss"], "http://mh.test");
        assert_eq!(c["aud"], format!("{plan_url}{}", r.path), "aud is the exact URL called");
        let (iat, exp) = (c["iat"].as_u64().unwrap(), c["exp"].as_u64().unwrap());
        assert!(exp > iat && exp - iat <= 300, "exp at most 5 minutes ahead");
        assert!(jtis.insert(c["jti"].as_str().unwrap().to_owned()), "jti reused");
    }
    for r in &hooks {
        let body = r.body.as_ref().unwrap();
        let instance = body["hookInstance"].as_str().unwrap();
        assert!(uuid::Uuid::parse_str(instance).is_ok());
        assert!(instances.insert(instance.to_owned()), "hookInstance reused");
    }
    // Discovery was called (and cached) with the discovery URL as audience.
    assert!(ours.iter().any(|r| r.path == "/cds-services"));
}

#[tokio::test]
async fn inferno_jwks_is_served_at_jku_as_a_key_set() {
    let app = common::TestServer::start().await;
    let jku = format!("{}.well-known/jwks.json", app.server.url);
    let set: Value = reqwest::get(&jku).await.unwrap().json().await.unwrap();
    let keys = set["keys"].as_array().unwrap();
    assert!(!keys.is_empty());
    let mut kids = HashSet::new();
    for k in keys {
        assert!(kids.insert(k["kid"].as_str().unwrap().to_owned()), "kids are unique");
        assert!(k["alg"].is_string(), "Inferno verifies with the JWK's alg");
        assert!(k.get("d").is_none());
    }
    // And the real server's calls verify against it through jku (fetched by the plan).
    let mut driver = common::BrowserlessClient::new(&app);
    let launch = driver.launch("pat-001").await;
    let (status, answer) = driver.server_fn("request_plan_history", &[("launch", &launch)]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(app.sandbox().plan.trust.jwks_fetches.load(std::sync::atomic::Ordering::SeqCst) > 0);
}

#[tokio::test]
async fn inferno_context_fields_and_prefetch_equal_the_emr_query() {
    let mut driver = Driver::new(3600).await;
    let launch = driver.launch("pat-001").await;
    ask(&mut driver, &launch, &[]).await;
    let hook = driver
        .sandbox()
        .plan
        .received()
        .into_iter()
        .find(|r| r.path.ends_with("/pdex-member-history"))
        .unwrap();
    let body = hook.body.unwrap();
    assert_eq!(body["hook"], "appointment-book");
    assert_eq!(body["fhirServer"], driver.sandbox().ehr_fhir_base().as_str().trim_end_matches('/'));
    assert!(body.get("fhirAuthorization").is_none(), "no EMR token is forwarded to the plan");
    let context = &body["context"];
    assert_eq!(context["userId"], "Practitioner/prac-alvarez");
    assert_eq!(context["patientId"], "pat-001");
    assert!(!context["patientId"].as_str().unwrap().contains('/'));
    let appointments = &context["appointments"];
    assert_eq!(appointments["resourceType"], "Bundle");
    for entry in appointments["entry"].as_array().unwrap() {
        assert_eq!(entry["resource"]["resourceType"], "Appointment");
        assert_eq!(entry["resource"]["status"], "proposed");
        assert!(entry["resource"]["id"].is_string());
    }
    // Each prefetch value equals what the EMR returns for the same query (by Type/id).
    let store = &driver.sandbox().ehr.store;
    let prefetch = &body["prefetch"];
    assert_eq!(prefetch["patient"], store.read("Patient", "pat-001").unwrap());
    let ids = |bundle: &Value| -> Vec<String> {
        let mut ids: Vec<String> = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{}/{}",
                    e["resource"]["resourceType"].as_str().unwrap(),
                    e["resource"]["id"].as_str().unwrap()
                )
            })
            .collect();
        ids.sort();
        ids
    };
    let expected = match sandbox::booking::store_query(store, "Coverage?patient=pat-001").unwrap() {
        cds_hooks::prefetch::Fetched::Data(bundle) => ids(&bundle),
        cds_hooks::prefetch::Fetched::Nothing => Vec::new(),
    };
    assert_eq!(ids(&prefetch["coverage"]), expected);
    assert_eq!(body["extension"]["memberId"], driver.sandbox().ehr.people[0].member_id);
}

#[tokio::test]
async fn the_plan_refuses_calls_with_bad_jwts() {
    let driver = Driver::new(3600).await;
    let plan = driver.sandbox().plan_url().to_owned();
    let http = reqwest::Client::new();
    let url = format!("{plan}/cds-services");
    // No token, a forged key, a replayed jti, a wrong audience.
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let stranger = cds_hooks::ClientIdentity {
        key: std::sync::Arc::new(jose::SigningKey::generate_es384().unwrap()),
        issuer: "http://mh.test".into(),
        jku: "http://mh.test/.well-known/jwks.json".into(),
        tenant: None,
    };
    let forged = stranger.token(&url).unwrap();
    assert_eq!(http.get(&url).bearer_auth(&forged).send().await.unwrap().status(), 401);
    let ours = cds_hooks::ClientIdentity {
        key: driver.prepared.state.signing_key.clone(),
        issuer: "http://mh.test".into(),
        jku: "http://mh.test/.well-known/jwks.json".into(),
        tenant: None,
    };
    let token = ours.token(&url).unwrap();
    assert_eq!(http.get(&url).bearer_auth(&token).send().await.unwrap().status(), 200);
    assert_eq!(
        http.get(&url).bearer_auth(&token).send().await.unwrap().status(),
        401,
        "replayed jti"
    );
    let wrong_aud = ours.token(&format!("{plan}/cds-services/other")).unwrap();
    assert_eq!(http.get(&url).bearer_auth(&wrong_aud).send().await.unwrap().status(), 401);
    let wrong_jku = cds_hooks::ClientIdentity { jku: "http://evil.test/jwks".into(), ..ours };
    assert_eq!(
        http.get(&url).bearer_auth(wrong_jku.token(&url).unwrap()).send().await.unwrap().status(),
        401
    );
}

#[tokio::test]
async fn a_typed_member_id_naming_someone_else_shows_and_writes_nothing() {
    let mut driver = Driver::new(3600).await;
    let none = patient_with(&driver, CoverageKind::None, 0);
    let someone_else = driver
        .sandbox()
        .ehr
        .people
        .iter()
        .find(|p| p.coverage == CoverageKind::MemberId)
        .unwrap()
        .clone();
    let launch = driver.launch(&none).await;
    let (status, answer) = ask(
        &mut driver,
        &launch,
        &[("payer", "sandbox-plan"), ("member_id", &someone_else.member_id)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mismatch = &answer["member_mismatch"];
    assert!(!mismatch["fields"].as_array().unwrap().is_empty(), "{answer}");
    let message = mismatch["message"].as_str().unwrap();
    assert!(message.contains("does not match this patient"), "{message}");
    assert!(message.contains("Check the member id"), "says what to do: {message}");
    // Nothing of the other person reaches this chart's page: no member, no cards, no name.
    assert!(answer["member"].is_null(), "{answer}");
    assert!(answer["cards"].as_array().unwrap().is_empty(), "{answer}");
    let page = answer.to_string();
    assert!(!page.contains(&someone_else.family), "{page}");
    assert!(!page.contains(&someone_else.birth_date), "{page}");
    // The history is not loaded and nothing can be written, whatever the browser sends.
    let (status, refused) =
        driver.server_fn("history", &[("launch", &launch), ("refresh", "false")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused["code"], "member_mismatch", "{refused}");
    let before = driver.sandbox().ehr.store.counts();
    let (status, refused) = driver.server_fn("add_to_chart", &[("launch", &launch)]).await;
    assert_ne!(status, StatusCode::OK);
    assert!(refused["code"] == "member_mismatch" || refused["code"] == "bad_request", "{refused}");
    assert_eq!(driver.sandbox().ehr.store.counts(), before, "nothing written");
    // The plan status after a reload says the same.
    let (_, plan) = driver.server_fn("plan_status", &[("launch", &launch)]).await;
    assert!(plan["answer"]["member_mismatch"].is_object(), "{plan}");

    // Asking again with an id the plan does not know clears the mismatch (no stale page).
    let (_, answer) =
        ask(&mut driver, &launch, &[("payer", "sandbox-plan"), ("member_id", "NOSUCH123")]).await;
    assert!(answer["member_mismatch"].is_null(), "{answer}");
    assert_eq!(answer["outcome"], "NotMatched", "{answer}");
}

#[tokio::test]
async fn a_typed_member_id_is_refused_where_the_coverage_names_the_member() {
    let mut driver = Driver::new(3600).await;
    let covered = patient_with(&driver, CoverageKind::MemberId, 0);
    let other = patient_with(&driver, CoverageKind::MemberId, 1);
    let other_member = driver.sandbox().ehr.person(&other).unwrap().member_id.clone();
    let launch = driver.launch(&covered).await;
    let (status, refused) =
        ask(&mut driver, &launch, &[("payer", "sandbox-plan"), ("member_id", &other_member)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refused["code"], "bad_request", "{refused}");
}

#[tokio::test]
async fn the_appointment_in_fhir_context_is_the_one_sent_and_the_tenant_is_passed_on() {
    let mut driver = Driver::new(3600).await;
    let mut appointment = cds_hooks::appointment_book::proposed_appointment(
        "appt-77",
        "pat-001",
        "Practitioner/prac-alvarez",
        "Follow-up",
    );
    appointment["status"] = serde_json::json!("booked");
    driver.sandbox().ehr.store.put(appointment).unwrap();
    // Someone else's appointment is never sent, even if the EHR names it.
    let other = cds_hooks::appointment_book::proposed_appointment(
        "appt-88",
        "pat-002",
        "Practitioner/prac-alvarez",
        "Other",
    );
    driver.sandbox().ehr.store.put(other).unwrap();
    for (appointment, tenant, expected) in
        [("appt-77", "clinic-north", true), ("appt-88", "clinic-south", false)]
    {
        let launch = driver
            .launch_with(sandbox::LaunchContext {
                patient: Some("pat-001".into()),
                practitioner: "prac-alvarez".into(),
                need_patient_banner: true,
                fhir_context: vec![format!("Appointment/{appointment}")],
                tenant: Some(tenant.into()),
                ..Default::default()
            })
            .await;
        let (status, answer) = ask(&mut driver, &launch, &[]).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let hook = driver.sandbox().plan.last_hook_request().unwrap();
        let sent = &hook.body.unwrap()["context"]["appointments"]["entry"][0]["resource"];
        assert_eq!(sent["id"] == appointment, expected, "{sent}");
        assert_eq!(hook.jwt.claims["tenant"], tenant, "{:?}", hook.jwt.claims);
    }
}

#[tokio::test]
async fn a_plan_advertising_context_descriptors_and_several_sources_gets_them_and_others_do_not() {
    let mut driver = Driver::new(3600).await;
    let member_id = driver.sandbox().ehr.person("pat-001").unwrap().member_id.clone();
    let issuer = driver.sandbox().ehr_fhir_base().as_str().trim_end_matches('/').to_owned();
    // Plain CDS Hooks 2.0 first: one fhirServer, the context the hook defines.
    let (_, history) = driver.plan_history("pat-001").await;
    assert!(!history["items"].as_array().unwrap().is_empty(), "{history}");
    let plain = driver.sandbox().plan.last_hook_request().unwrap().body.unwrap();
    assert_eq!(plain["fhirServer"], issuer.as_str(), "{plain}");
    assert!(plain.get("fhirSources").is_none() && plain.get("contexts").is_none(), "{plain}");
    assert!(plain["context"].get("memberId").is_none(), "{plain}");

    let mut driver = Driver::new(3600).await;
    let issuer = driver.sandbox().ehr_fhir_base().as_str().trim_end_matches('/').to_owned();
    driver.sandbox().plan.proposed_extensions.store(true, std::sync::atomic::Ordering::Relaxed);
    let (_, history) = driver.plan_history("pat-001").await;
    assert!(!history["items"].as_array().unwrap().is_empty(), "the plan still answers");
    let proposed = driver.sandbox().plan.last_hook_request().unwrap().body.unwrap();
    assert!(proposed.get("fhirServer").is_none(), "{proposed}");
    assert_eq!(proposed["fhirSources"][0]["fhirServer"], issuer.as_str(), "{proposed}");
    assert_eq!(proposed["contexts"][issuer.as_str()]["patientId"], "pat-001", "{proposed}");
    assert_eq!(proposed["context"]["memberId"], member_id.as_str(), "described, so filled");
    assert!(proposed["context"].get("encounterId").is_none(), "not described: {proposed}");
    assert!(proposed["context"]["appointments"].is_object(), "required, always sent");
}
