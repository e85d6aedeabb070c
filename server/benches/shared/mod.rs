//! What the write-back benches share: a sandbox with a registered backend-services client,
//! and fresh synthetic member histories.
#![allow(dead_code)]

use std::sync::Arc;

use pdex::HistoryItem;
use sandbox::{ClientJwks, ClientRegistration, Sandbox, SandboxConfig};

/// The sandbox as `config` says, with a `bench` client registered, and a
/// `system/*.cruds` token for its EHR.
pub async fn sandbox_with_token(config: SandboxConfig) -> (Sandbox, String) {
    let key = Arc::new(jose::SigningKey::generate_es384().unwrap());
    let sandbox = Sandbox::start(SandboxConfig {
        clients: vec![ClientRegistration {
            client_id: "bench".into(),
            name: "bench".into(),
            redirect_uris: vec!["http://bench/callback".into()],
            launch_url: "http://bench/launch".into(),
            jwks: Some(ClientJwks::Inline(key.jwks())),
            client_secret: None,
        }],
        patients: 2,
        history_size: 10,
        ..config
    })
    .await
    .unwrap();
    let token =
        sandbox.ehr.auth.backend_services_token(key, "bench", "system/*.cruds").await.unwrap();
    (sandbox, token)
}

/// `count` reviewable items of a fresh synthetic member history (claims left out: they go
/// into a document), with the plan's Provenance attached when `provenance` is set.
pub fn history(
    person: &sandbox::synthetic::Person,
    member: &str,
    seed: u64,
    count: usize,
    provenance: bool,
) -> Vec<HistoryItem> {
    let mut resources = sandbox::history::directory();
    let built = sandbox::history::HistoryBuilder::new(person, member, seed).build(count * 2);
    if provenance {
        resources.extend(sandbox::plan::plan_provenance(member, &built));
    }
    resources.extend(built);
    let items: Vec<HistoryItem> = pdex::normalise::normalise(resources)
        .into_iter()
        .filter(|i| i.resource_type != "ExplanationOfBenefit")
        .take(count)
        .collect();
    assert_eq!(items.len(), count);
    items
}

/// The sandbox (in this process) with Member History registered for `public_url`, and the
/// app's configuration for it written to `data/sandbox.toml`, as the `sandbox` binary does.
pub async fn sandbox_for_app(
    args: &sandbox::member_history::SandboxArgs,
    public_url: &url::Url,
    data: &std::path::Path,
) -> (Sandbox, std::path::PathBuf) {
    let registration =
        sandbox::member_history::AppRegistration { public_url: public_url.clone(), jwks: None };
    let sandbox = sandbox::member_history::start(args, &registration).await.unwrap();
    let config = data.join("sandbox.toml");
    let text = sandbox::member_history::app_config(&sandbox, public_url, data);
    std::fs::write(&config, text).unwrap();
    (sandbox, config)
}

/// The app in this process on a free port, against a sandbox as `args` says.
pub async fn app_with_sandbox(
    args: &sandbox::member_history::SandboxArgs,
    data: &std::path::Path,
    dist: std::path::PathBuf,
) -> (server::startup::Running, Sandbox) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let public_url = url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let (sandbox, config) = sandbox_for_app(args, &public_url, data).await;
    let mut cli = server::cli::Cli::for_tests(config, data.to_owned(), dist);
    cli.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    (server::startup::start(cli).await.unwrap(), sandbox)
}
