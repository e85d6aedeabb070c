//! Helios FHIR Server (`hfs`) as a child process, trusting a sandbox EHR's tokens.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Hfs {
    child: Child,
    pub url: String,
}

impl Drop for Hfs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Starts hfs (in-memory SQLite) whose tokens come from the sandbox EHR at `ehr` (its JWKS and
/// issuer), answering as `public_url` (links and `Location`s). `data` is the directory
/// `scripts/hfs-data` prepared; logs go to `log`.
pub async fn start(ehr: &str, public_url: Option<&str>, data: &PathBuf, log: &PathBuf) -> Hfs {
    let binary = std::env::var("HFS").unwrap_or_else(|_| "hfs".into());
    assert!(
        data.join("search-parameters-r4.json").exists(),
        "prepare hfs's data directory first: bash scripts/hfs-data (scripts/test-real-fhir-server does)"
    );
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(log).unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(&binary)
        .args(["--port", &port.to_string(), "--host", "127.0.0.1", "--database-url", ":memory:"])
        .arg("--data-dir")
        .arg(data)
        // Headless: the web UI's dashboard reads storage in the background, and on the
        // in-memory SQLite database those reads lock tables that a create then finds locked
        // (a bare 500 now and then under load).
        .env("HFS_UI_ENABLED", "false")
        .env("HFS_AUTH_ENABLED", "true")
        .env("HFS_AUTH_JWKS_URL", format!("{ehr}/auth/jwks"))
        .env("HFS_AUTH_ISSUER", format!("{ehr}/auth"))
        .env("HFS_BASE_URL", public_url.unwrap_or(&url))
        .env("HFS_SMART_AUTHORIZE_ENDPOINT", format!("{ehr}/auth/authorize"))
        .env("HFS_SMART_TOKEN_ENDPOINT", format!("{ehr}/auth/token"))
        .stdout(log.try_clone().map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {binary} ({e}): install it with cargo install --locked helios-hfs@0.2.7"));
    let hfs = Hfs { child, url };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let http = reqwest::Client::new();
    let metadata = format!("{}/metadata", hfs.url);
    while !http.get(&metadata).send().await.map(|r| r.status().is_success()).unwrap_or(false) {
        assert!(std::time::Instant::now() < deadline, "hfs did not come up within a minute");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    hfs
}
