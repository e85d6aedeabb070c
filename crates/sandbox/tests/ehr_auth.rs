//! The sandbox EHR's SMART authorization server and FHIR API, exercised with Member History's
//! own SMART client (so both sides of the protocol are checked against each other).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;

use sandbox::{ClientJwks, ClientRegistration, LaunchContext, Sandbox, SandboxConfig};
use smart::{ClientAuth, Discovery, LaunchRequest, Secret, SmartClient, SmartError};
use url::Url;

const REDIRECT: &str = "http://app.test/callback";

struct Fixture {
    sandbox: Sandbox,
    http: reqwest::Client,
    key: Arc<jose::SigningKey>,
    _jwks_server: tokio::task::JoinHandle<()>,
}

/// A sandbox with three clients: `asym` (ES384 key published at a JWKS URL), `rsa` (RS384
/// key registered inline) and `secret` (client_secret_basic).
async fn fixture() -> (Fixture, jose::SigningKey) {
    let key = Arc::new(jose::SigningKey::generate_es384().unwrap());
    let rsa = jose::SigningKey::generate_rs384().unwrap();
    let jwks = key.jwks();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let jwks_server = tokio::spawn(async move {
        let router = axum::Router::new()
            .route("/jwks.json", axum::routing::get(move || async move { axum::Json(jwks) }));
        let _ = axum::serve(listener, router).await;
    });
    let client = |id: &str, jwks: Option<ClientJwks>, secret: Option<&str>| ClientRegistration {
        client_id: id.into(),
        name: id.into(),
        redirect_uris: vec![REDIRECT.into()],
        launch_url: "http://app.test/launch".into(),
        jwks,
        client_secret: secret.map(Into::into),
    };
    let sandbox = Sandbox::start(SandboxConfig {
        clients: vec![
            client("asym", Some(ClientJwks::Url(jwks_url)), None),
            client("rsa", Some(ClientJwks::Inline(rsa.jwks())), None),
            client("secret", None, Some("s3cret")),
        ],
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    (Fixture { sandbox, http, key, _jwks_server: jwks_server }, rsa)
}

impl Fixture {
    fn client(&self, id: &str, auth: ClientAuth) -> SmartClient {
        SmartClient::new(id.into(), Url::parse(REDIRECT).unwrap(), auth, self.http.clone())
    }

    async fn config(&self) -> Arc<smart::SmartConfiguration> {
        Discovery::new(self.http.clone(), std::time::Duration::from_secs(60))
            .get(self.sandbox.ehr_fhir_base())
            .await
            .unwrap()
    }

    fn launch(&self, patient: &str) -> String {
        self.sandbox.ehr.auth.create_launch(LaunchContext {
            patient: Some(patient.into()),
            encounter: Some(format!("{patient}-enc-2")),
            practitioner: "prac-chen".into(),
            need_patient_banner: true,
            ..Default::default()
        })
    }

    /// An EHR launch of `patient` authorized by `client`: what it keeps for the exchange, and
    /// the callback query (the launch id too, for tests that reuse it).
    async fn ehr_launch(
        &self,
        client: &SmartClient,
        config: &smart::SmartConfiguration,
        patient: &str,
    ) -> (smart::PendingAuthorization, HashMap<String, String>, String) {
        let launch = self.launch(patient);
        let (url, pending) = client
            .authorize(
                config,
                LaunchRequest {
                    iss: self.sandbox.ehr_fhir_base(),
                    launch: Some(&launch),
                    scope: SCOPE,
                },
                jose::now(),
            )
            .unwrap();
        let (_, callback) = self.authorize(&url).await;
        (pending, callback, launch)
    }

    /// Follows the authorize redirect; returns the callback query.
    async fn authorize(&self, url: &Url) -> (reqwest::StatusCode, HashMap<String, String>) {
        let r = self.http.get(url.clone()).send().await.unwrap();
        let status = r.status();
        let query = r
            .headers()
            .get("location")
            .map(|l| Url::parse(l.to_str().unwrap()).unwrap().query_pairs().into_owned().collect())
            .unwrap_or_default();
        (status, query)
    }
}

const SCOPE: &str = "launch openid fhirUser online_access patient/Patient.rs patient/Coverage.rs user/Practitioner.r";

#[tokio::test]
async fn smart_configuration_advertises_what_the_issue_requires() {
    let (f, _) = fixture().await;
    let config = f.config().await;
    for capability in [
        "launch-ehr",
        "launch-standalone",
        "client-confidential-asymmetric",
        "client-confidential-symmetric",
        "context-ehr-patient",
        "context-standalone-patient",
        "permission-v2",
        "sso-openid-connect",
    ] {
        assert!(config.has_capability(capability), "{capability}");
    }
    assert_eq!(config.code_challenge_methods_supported, vec!["S256".to_owned()]);
    assert!(config.token_endpoint_auth_methods_supported.contains(&"private_key_jwt".to_owned()));
    assert!(config.token_endpoint_auth_signing_alg_values_supported.contains(&"ES384".to_owned()));
    assert!(config.issuer.is_some() && config.jwks_uri.is_some());
}

#[tokio::test]
async fn ehr_launch_with_private_key_jwt_returns_the_full_token_response() {
    let (f, _) = fixture().await;
    let config = f.config().await;
    let client = f.client("asym", ClientAuth::PrivateKeyJwt { key: f.key.clone() });
    let (pending, callback, launch) = f.ehr_launch(&client, &config, "pat-001").await;
    assert_eq!(callback["state"], pending.state.expose());
    let token = client.exchange_code(&config, &pending, &callback["code"]).await.unwrap();
    assert!(token.access_token.expose().starts_with("eyJ"), "access token is a JWT");
    assert_eq!(token.expires_in, Some(3600));
    assert_eq!(token.scope.as_deref(), Some(SCOPE));
    assert!(token.refresh_token.is_some(), "online_access gives a refresh token");
    assert_eq!(token.context.patient.as_deref(), Some("pat-001"));
    assert_eq!(token.context.encounter.as_deref(), Some("pat-001-enc-2"));
    assert_eq!(token.context.need_patient_banner, Some(true));
    assert!(token.context.smart_style_url.is_some());
    let claims = client
        .verify_id_token(&config, token.context.id_token.as_ref().unwrap(), pending.nonce.as_ref())
        .await
        .unwrap();
    assert_eq!(
        claims.fhir_user.unwrap(),
        format!("{}/Practitioner/prac-chen", f.sandbox.ehr_fhir_base())
    );

    // The launch id is single use.
    let (url, _) = client
        .authorize(
            &config,
            LaunchRequest { iss: f.sandbox.ehr_fhir_base(), launch: Some(&launch), scope: SCOPE },
            jose::now(),
        )
        .unwrap();
    let (_, callback) = f.authorize(&url).await;
    assert_eq!(callback["error"], "invalid_request");

    // Refresh works with a fresh assertion.
    let refreshed = client.refresh(&config, token.refresh_token.as_ref().unwrap()).await.unwrap();
    assert_ne!(refreshed.access_token, token.access_token);
}

#[tokio::test]
async fn token_responses_are_not_cacheable() {
    let (f, _) = fixture().await;
    let r = f
        .http
        .post(f.sandbox.ehr.auth.token_endpoint())
        .basic_auth("secret", Some("s3cret"))
        .form(&[("grant_type", "authorization_code"), ("code", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["pragma"], "no-cache");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn client_secret_basic_and_rs384_clients_authenticate() {
    let (f, rsa) = fixture().await;
    let config = f.config().await;
    for (id, auth) in [
        ("secret", ClientAuth::ClientSecretBasic { secret: Secret::new("s3cret") }),
        ("rsa", ClientAuth::PrivateKeyJwt { key: Arc::new(rsa.clone()) }),
    ] {
        let client = f.client(id, auth);
        let (pending, callback, _) = f.ehr_launch(&client, &config, "pat-002").await;
        let token = client.exchange_code(&config, &pending, &callback["code"]).await;
        assert!(token.is_ok(), "{id}: {token:?}");
    }
    let wrong = f.client("secret", ClientAuth::ClientSecretBasic { secret: Secret::new("guess") });
    let (pending, callback, _) = f.ehr_launch(&wrong, &config, "pat-002").await;
    let err = wrong.exchange_code(&config, &pending, &callback["code"]).await.unwrap_err();
    assert!(
        matches!(err, SmartError::TokenRefused { ref error } if error == "invalid_client"),
        "{err:?}"
    );
}

#[tokio::test]
async fn authorize_checks_redirect_uri_pkce_and_aud() {
    let (f, _) = fixture().await;
    let config = f.config().await;
    let client = f.client("asym", ClientAuth::PrivateKeyJwt { key: f.key.clone() });
    let launch = f.launch("pat-001");
    let (good, _) = client
        .authorize(
            &config,
            LaunchRequest { iss: f.sandbox.ehr_fhir_base(), launch: Some(&launch), scope: SCOPE },
            jose::now(),
        )
        .unwrap();
    let with = |key: &str, value: Option<&str>| {
        let mut url = good.clone();
        let pairs: Vec<(String, String)> =
            good.query_pairs().into_owned().filter(|(k, _)| k != key).collect();
        let mut q = url.query_pairs_mut();
        q.clear();
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
        if let Some(v) = value {
            q.append_pair(key, v);
        }
        drop(q);
        url
    };
    // A redirect URI that is not registered exactly: refused with a page, never redirected.
    let (status, query) =
        f.authorize(&with("redirect_uri", Some("http://app.test/callback/"))).await;
    assert_eq!(status, 400);
    assert!(query.is_empty());
    // No PKCE, plain PKCE, or the wrong audience: an OAuth error back to the app.
    assert_eq!(f.authorize(&with("code_challenge", None)).await.1["error"], "invalid_request");
    assert_eq!(
        f.authorize(&with("code_challenge_method", Some("plain"))).await.1["error"],
        "invalid_request"
    );
    assert_eq!(
        f.authorize(&with("aud", Some("https://other.example/fhir"))).await.1["error"],
        "invalid_request"
    );
    assert_eq!(
        f.authorize(&with("response_type", Some("token"))).await.1["error"],
        "unsupported_response_type"
    );
}

#[tokio::test]
async fn codes_are_single_use_and_bound_to_the_verifier() {
    let (f, _) = fixture().await;
    let config = f.config().await;
    let client = f.client("asym", ClientAuth::PrivateKeyJwt { key: f.key.clone() });
    let (mut pending, callback, _) = f.ehr_launch(&client, &config, "pat-001").await;
    let right = pending.code_verifier.clone();
    pending.code_verifier = Secret::new("a-verifier-that-does-not-match-the-challenge-at-all-xx");
    let err = client.exchange_code(&config, &pending, &callback["code"]).await.unwrap_err();
    assert!(matches!(err, SmartError::TokenRefused { ref error } if error == "invalid_grant"));
    // The failed attempt spent the code.
    pending.code_verifier = right;
    let err = client.exchange_code(&config, &pending, &callback["code"]).await.unwrap_err();
    assert!(matches!(err, SmartError::TokenRefused { ref error } if error == "invalid_grant"));
}

#[tokio::test]
async fn a_client_assertion_cannot_be_replayed() {
    let (f, _) = fixture().await;
    let endpoint = f.sandbox.ehr.auth.token_endpoint();
    let assertion = smart::client::client_assertion(&f.key, "asym", &endpoint).unwrap();
    let post = || {
        f.http
            .post(&endpoint)
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "system/Patient.rs"),
                ("client_assertion_type", smart::client::JWT_BEARER_ASSERTION),
                ("client_assertion", assertion.as_str()),
            ])
            .send()
    };
    let first = post().await.unwrap();
    assert_eq!(first.status(), 200);
    let second = post().await.unwrap();
    assert_eq!(second.status(), 401);
    let body: serde_json::Value = second.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert!(body["error_description"].as_str().unwrap().contains("jti"));

    // An assertion signed by a key the client never registered.
    let stranger = jose::SigningKey::generate_es384().unwrap();
    let forged = smart::client::client_assertion(&stranger, "asym", &endpoint).unwrap();
    let r = f
        .http
        .post(&endpoint)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", smart::client::JWT_BEARER_ASSERTION),
            ("client_assertion", forged.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn the_fhir_api_enforces_token_and_patient_scope() {
    let (f, _) = fixture().await;
    let config = f.config().await;
    let client = f.client("asym", ClientAuth::PrivateKeyJwt { key: f.key.clone() });
    let (pending, callback, _) = f.ehr_launch(&client, &config, "pat-001").await;
    let token = client.exchange_code(&config, &pending, &callback["code"]).await.unwrap();
    let fhir = fhir::FhirClient::new(
        f.http.clone(),
        f.sandbox.ehr_fhir_base().clone(),
        &fhir::http::HttpLimits::default(),
    );
    let t = Some(token.access_token.expose());

    assert!(matches!(
        fhir.read(None, "Patient", "pat-001").await,
        Err(fhir::FhirError::Unauthorized { .. })
    ));
    let patient = fhir.read(t, "Patient", "pat-001").await.unwrap();
    assert_eq!(patient["id"], "pat-001");
    assert!(matches!(
        fhir.read(t, "Patient", "pat-002").await,
        Err(fhir::FhirError::Forbidden { .. })
    ));
    // A patient-scoped search is confined to the patient in context.
    let all = fhir.search(t, "Patient", &[]).await.unwrap();
    assert_eq!(all.resources().count(), 1);
    let coverage = fhir.search(t, "Coverage", &[("patient", "pat-001")]).await.unwrap();
    assert_eq!(coverage.resources().count(), 1);
    let mrn = &f.sandbox.ehr.people[0].mrn;
    let by_mrn = fhir
        .search(
            t,
            "Patient",
            &[("identifier", &format!("{}|{mrn}", sandbox::synthetic::systems::MRN))],
        )
        .await
        .unwrap();
    assert_eq!(by_mrn.resources().count(), 1);
    // user/Practitioner.r allows reading the clinician, not searching (no `s`).
    assert!(fhir.read(t, "Practitioner", "prac-chen").await.is_ok());
    assert!(matches!(
        fhir.search(t, "Practitioner", &[]).await,
        Err(fhir::FhirError::Forbidden { .. })
    ));
    // No scope for Encounter was granted here.
    assert!(matches!(
        fhir.search(t, "Encounter", &[]).await,
        Err(fhir::FhirError::Forbidden { .. })
    ));
    // Unknown search parameters are refused, not ignored.
    assert!(matches!(
        fhir.search(t, "Coverage", &[("colour", "red")]).await,
        Err(fhir::FhirError::Status { status: 400, .. })
    ));
}

#[tokio::test]
async fn searches_page_through_next_links() {
    let (f, _) = fixture().await;
    let config = f.config().await;
    let client = f.client("asym", ClientAuth::PrivateKeyJwt { key: f.key.clone() });
    let token = client.client_credentials(&config, "system/*.rs").await.unwrap().access_token;
    let token = token.expose();
    let fhir = fhir::FhirClient::new(
        f.http.clone(),
        f.sandbox.ehr_fhir_base().clone(),
        &fhir::http::HttpLimits::default(),
    );
    let first = fhir.search(Some(token), "Encounter", &[("_count", "5")]).await.unwrap();
    assert_eq!(first.total, Some(24));
    assert!(first.link("next").is_some());
    let all = fhir.search_all(Some(token), "Encounter", &[("_count", "5")], 100).await.unwrap();
    assert_eq!(all.len(), 24);
}

#[tokio::test]
async fn a_transaction_larger_than_the_default_body_limit_is_applied() {
    let (f, _) = fixture().await;
    let token = f
        .sandbox
        .ehr
        .auth
        .backend_services_token(f.key.clone(), "asym", "system/Observation.c")
        .await
        .unwrap();
    // About 3 MB: more than axum's 2 MB default, as a large selection written back would be.
    let note = "n".repeat(1400);
    let entries: Vec<_> = (0..2000)
        .map(|i| {
            serde_json::json!({
                "fullUrl": format!("urn:uuid:00000000-0000-4000-8000-{i:012}"),
                "resource": {"resourceType": "Observation", "status": "final",
                             "code": {"text": "Note"}, "subject": {"reference": "Patient/pat-001"},
                             "note": [{"text": note}]},
                "request": {"method": "POST", "url": "Observation"}
            })
        })
        .collect();
    let bundle =
        serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    let before = f.sandbox.ehr.store.counts().get("Observation").copied().unwrap_or(0);
    let response = f
        .http
        .post(f.sandbox.ehr_fhir_base().as_str().trim_end_matches('/'))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body(serde_json::to_vec(&bundle).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(f.sandbox.ehr.store.counts()["Observation"], before + 2000);
}
