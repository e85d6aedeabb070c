//! What the benches share: a sandbox with a registered backend-services client, fresh
//! synthetic member histories, and the server binary in a process of its own.
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

/// The server binary in its own process (the app alone, so its memory and CPU are the
/// app's), under `ulimit -n 1024`; stopped when dropped.
pub struct ServerProcess {
    child: std::process::Child,
    pub pid: u32,
}

impl ServerProcess {
    /// Starts the server on `port` with `config` and `data`, and waits until it listens.
    pub fn start(config: &std::path::Path, port: u16, data: &std::path::Path) -> Self {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new("bash")
            .arg("-c")
            .arg(r#"ulimit -n 1024 && exec "$0" "$@""#)
            .arg(env!("CARGO_BIN_EXE_server"))
            .arg("--config")
            .arg(config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data)
            .arg("--dist-dir")
            .arg(data.join("no-dist"))
            .env(
                "RUST_LOG",
                std::env::var("MH_BENCH_SERVER_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let server = ServerProcess { child, pid };
        stdout
            .by_ref()
            .map_while(Result::ok)
            .find(|line| line.starts_with("Member History is running at"))
            .expect("the server did not start");
        // The server keeps writing (its log); a closed pipe would stop it.
        std::thread::spawn(move || stdout.for_each(drop));
        server
    }

    /// A memory figure of `/proc/{pid}/status` (`VmRSS`, or `VmHWM` for the peak), in bytes.
    pub fn memory(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
