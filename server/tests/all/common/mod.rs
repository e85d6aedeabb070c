//! Test support: the server with its sandbox on loopback, an HTTP driver that walks redirects
//! through the router (no socket) and the sandbox, and a headless Chromium over WebDriver.
#![allow(dead_code, clippy::unwrap_used, clippy::print_stdout)]

pub mod balancer;
pub mod browser;
pub mod hfs;
pub mod hostile;
pub mod proxy;
pub mod writeback;

use std::path::PathBuf;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use sandbox::member_history::{self, AppRegistration, SandboxArgs};
use server::cli::Cli;
use server::frontend::Frontend;
use server::startup::prepare_with;
use service::AppState;
use store::StoreSessions;
use tower::ServiceExt;

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Trunk build the browser tests need.
pub fn dist_dir() -> PathBuf {
    std::env::var_os("MH_DIST_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("dist"))
}

/// The public URL the router-level tests pretend to serve at.
pub const APP: &str = "http://mh.test";

/// What a test may set before start: the app's command line, and (through `Deref`) the
/// sandbox's switches.
pub struct Args {
    pub app: Cli,
    pub sandbox: SandboxArgs,
}

impl std::ops::Deref for Args {
    type Target = SandboxArgs;
    fn deref(&self) -> &SandboxArgs {
        &self.sandbox
    }
}

impl std::ops::DerefMut for Args {
    fn deref_mut(&mut self) -> &mut SandboxArgs {
        &mut self.sandbox
    }
}

impl Args {
    fn new(data: &std::path::Path, dist: PathBuf) -> Self {
        Args {
            app: Cli::for_tests(data.join("sandbox.toml"), data.to_owned(), dist),
            sandbox: SandboxArgs::for_tests(),
        }
    }
}

/// The app's state and the sandbox it was configured against.
#[derive(Debug)]
pub struct Prepared {
    pub state: AppState,
    pub sandbox: sandbox::Sandbox,
}

/// Starts the sandbox (in the test's process, as its own servers on loopback) with Member
/// History registered for `public_url`, and writes the app's configuration for it to
/// `args.app.config`, as the `sandbox` binary does. With `jwks`, the sandbox is given our
/// keys instead of fetching them (tests that drive the router without a socket).
pub async fn start_sandbox(
    args: &Args,
    public_url: &url::Url,
    jwks: Option<jose::jwk::JwkSet>,
) -> sandbox::Sandbox {
    let registration = AppRegistration { public_url: public_url.clone(), jwks };
    let sandbox = member_history::start(&args.sandbox, &registration).await.unwrap();
    let data = args.app.data_dir.clone().unwrap();
    std::fs::write(&args.app.config, member_history::app_config(&sandbox, public_url, &data))
        .unwrap();
    sandbox
}

/// A free loopback port (for a server whose URL must be known before it listens).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A response as the tests read it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
}

/// A browser-like client: one cookie jar for our server, redirects followed by hand so each
/// hop can be checked. Requests to `APP` go through the router; the rest over loopback.
pub struct Driver {
    pub router: axum::Router,
    pub prepared: Prepared,
    pub sessions: StoreSessions,
    /// More servers on the same store, served in turn with `router` (see `add_instance`).
    pub others: Vec<axum::Router>,
    /// Requests served by each server (`router` first).
    pub served: Vec<usize>,
    cli: Cli,
    cookie: Option<String>,
    http: reqwest::Client,
    _data: tempfile::TempDir,
}

impl Driver {
    /// The router over a sandbox whose access tokens live `token_ttl` seconds.
    pub async fn new(token_ttl: u64) -> Self {
        Self::with(token_ttl, |_| {}, |_| {}).await
    }

    /// The router with the command line, the sandbox and the configuration adjusted.
    pub async fn with(
        token_ttl: u64,
        adjust: impl FnOnce(&mut Args),
        config_adjust: impl FnOnce(&mut service::AppConfig),
    ) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut args = Args::new(data.path(), data.path().join("no-dist"));
        args.sandbox_token_ttl = token_ttl;
        adjust(&mut args);
        // Our key first, so the sandbox can be given it (there is no socket to fetch it from).
        let key = jose::SigningKey::load_or_generate(
            &data.path().join("signing-key-es384.pem"),
            service::config::SigningAlg::ES384.jws(),
        )
        .unwrap();
        let app = url::Url::parse(APP).unwrap();
        let sandbox = start_sandbox(&args, &app, Some(key.jwks())).await;
        let state = prepare_with(&args.app, config_adjust).await.unwrap();
        let prepared = Prepared { state, sandbox };
        server::register_server_fns();
        let sessions = StoreSessions::new(
            prepared.state.launches.store().clone(),
            prepared.state.config.limits.max_sessions,
        );
        let router = server::router(prepared.state.clone(), Frontend::load(&args.app.dist_dir));
        let http =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let cli = args.app.clone();
        Driver {
            router,
            prepared,
            sessions,
            others: Vec::new(),
            served: vec![0],
            cli,
            cookie: None,
            http,
            _data: data,
        }
    }

    pub fn sandbox(&self) -> &sandbox::Sandbox {
        &self.prepared.sandbox
    }

    /// Stops the server and starts a new one on the same configuration and data directory
    /// (a restart or a deploy): nothing of the old one's memory is kept.
    pub async fn restart(&mut self, config_adjust: impl FnOnce(&mut service::AppConfig)) {
        self.prepared.state.stop();
        let state = prepare_with(&self.cli, config_adjust).await.unwrap();
        self.router = server::router(state.clone(), Frontend::load(&self.cli.dist_dir));
        self.prepared.state = state;
    }

    /// Another server on the same configuration (and store); from now on requests go to
    /// each server in turn.
    pub async fn add_instance(&mut self, config_adjust: impl FnOnce(&mut service::AppConfig)) {
        let state = prepare_with(&self.cli, config_adjust).await.unwrap();
        self.others.push(server::router(state, Frontend::load(&self.cli.dist_dir)));
        self.served.push(0);
    }

    /// The app's command line (for `server audit`).
    pub fn cli(&self) -> &Cli {
        &self.cli
    }

    /// Walks an EHR launch for `patient` to the review page; returns the launch id.
    pub async fn launch(&mut self, patient: &str) -> String {
        let url = self.ehr_launch(patient);
        self.walk_launch(&url).await
    }

    /// Walks an EHR launch with this context (fhirContext, tenant, …) to the review page.
    pub async fn launch_with(&mut self, context: sandbox::LaunchContext) -> String {
        let url = self.ehr_launch_with(context);
        self.walk_launch(&url).await
    }

    async fn walk_launch(&mut self, url: &str) -> String {
        let hops = self.follow(url).await;
        let (last_url, last) = hops.last().unwrap();
        assert!(
            last_url.starts_with(&format!("{APP}/review/")),
            "ended at {last_url}: {:?}",
            last.status
        );
        last_url.rsplit('/').next().unwrap().to_owned()
    }

    /// A fresh EHR launch for `patient`, as the launcher page would create it.
    pub fn ehr_launch(&self, patient: &str) -> String {
        self.ehr_launch_with(sandbox::LaunchContext {
            patient: Some(patient.into()),
            practitioner: "prac-alvarez".into(),
            need_patient_banner: true,
            ..Default::default()
        })
    }

    /// A fresh EHR launch with this context.
    pub fn ehr_launch_with(&self, context: sandbox::LaunchContext) -> String {
        let launch = self.sandbox().ehr.auth.create_launch(context);
        let mut url = url::Url::parse(&format!("{APP}/launch")).unwrap();
        url.query_pairs_mut()
            .append_pair("iss", self.sandbox().ehr_fhir_base().as_str())
            .append_pair("launch", &launch);
        url.to_string()
    }

    pub async fn get(&mut self, url: &str) -> Reply {
        if url.starts_with(APP) {
            self.app(Method::GET, url, None).await
        } else {
            let r = self.http.get(url).send().await.unwrap();
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
            let location = r.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
            Reply { status, location, body: r.text().await.unwrap() }
        }
    }

    /// Follows redirects from `url` until a non-redirect answer; returns every hop.
    pub async fn follow(&mut self, url: &str) -> Vec<(String, Reply)> {
        let mut hops = Vec::new();
        let mut next = url.to_owned();
        for _ in 0..10 {
            let reply = self.get(&next).await;
            let location = reply.location.clone();
            hops.push((next.clone(), reply));
            match location {
                Some(l) if l.starts_with('/') => next = format!("{APP}{l}"),
                Some(l) => next = l,
                None => break,
            }
        }
        hops
    }

    /// Launches `patient`, asks the plan, and loads the history view; returns the launch id
    /// and the view.
    pub async fn plan_history(&mut self, patient: &str) -> (String, serde_json::Value) {
        let launch = self.launch(patient).await;
        let (status, answer) = self.server_fn("request_plan_history", &[("launch", &launch)]).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let (status, view) =
            self.server_fn("history", &[("launch", &launch), ("refresh", "false")]).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        (launch, view)
    }

    /// Calls a server function (form-encoded arguments, JSON answer).
    pub async fn server_fn(
        &mut self,
        name: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, serde_json::Value) {
        let body = serde_urlencoded::to_string(form).unwrap();
        let reply = self.app(Method::POST, &format!("{APP}/api/{name}"), Some(body)).await;
        (
            reply.status,
            serde_json::from_str(&reply.body).unwrap_or(serde_json::Value::String(reply.body)),
        )
    }

    /// Calls a server function that takes JSON arguments.
    pub async fn server_fn_json(
        &mut self,
        name: &str,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let reply = self
            .app_with(
                Method::POST,
                &format!("{APP}/api/{name}"),
                Some((body.to_owned(), "application/json")),
            )
            .await;
        (
            reply.status,
            serde_json::from_str(&reply.body).unwrap_or(serde_json::Value::String(reply.body)),
        )
    }

    async fn app(&mut self, method: Method, url: &str, form: Option<String>) -> Reply {
        self.app_with(method, url, form.map(|f| (f, "application/x-www-form-urlencoded"))).await
    }

    async fn app_with(&mut self, method: Method, url: &str, body: Option<(String, &str)>) -> Reply {
        let path = url.strip_prefix(APP).unwrap();
        let mut request = Request::builder().method(method).uri(path);
        if let Some(cookie) = &self.cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let request = match body {
            // As the app's own page sends it (the CSRF check wants one of these).
            Some((body, content_type)) => request
                .header("sec-fetch-site", "same-origin")
                .header(header::CONTENT_TYPE, content_type)
                .header(header::ACCEPT, "application/json")
                .body(Body::from(body)),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let turn = self.served.iter().sum::<usize>() % self.served.len();
        self.served[turn] += 1;
        let router = if turn == 0 { &self.router } else { &self.others[turn - 1] };
        let response = router.clone().oneshot(request).await.unwrap();
        for value in response.headers().get_all(header::SET_COOKIE) {
            let cookie = value.to_str().unwrap();
            if let Some(pair) = cookie.split(';').next() {
                if pair.starts_with("mh_session=") {
                    self.cookie = Some(pair.to_owned());
                }
            }
        }
        let status = response.status();
        let location =
            response.headers().get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024).await.unwrap();
        Reply { status, location, body: String::from_utf8_lossy(&bytes).into_owned() }
    }

    /// Forgets the session cookie (a new browser).
    pub fn clear_cookies(&mut self) {
        self.cookie = None;
    }

    pub fn cookie(&self) -> Option<&str> {
        self.cookie.as_deref()
    }
}

/// The launch error code in a launch error page.
pub fn launch_error_code(body: &str) -> Option<String> {
    let start = body.find(r#"<meta name="mh-launch-error" content=""#)?
        + r#"<meta name="mh-launch-error" content=""#.len();
    Some(body[start..].split('"').next()?.to_owned())
}

/// The real server and sandbox on loopback sockets (what the browser tests use).
pub struct TestServer {
    pub server: server::startup::Running,
    pub sandbox: sandbox::Sandbox,
    /// The app's command line, for more servers on the same configuration.
    pub cli: Cli,
    _data: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}, |_| {}).await
    }

    /// The app listening on a free port (or the one `adjust` sets), the sandbox in front of
    /// it fetching our keys from our JWKS URL as a real EHR would.
    pub async fn start_with(
        adjust: impl FnOnce(&mut Args),
        config_adjust: impl FnOnce(&mut service::AppConfig),
    ) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut args = Args::new(data.path(), dist_dir());
        args.app.listen = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        adjust(&mut args);
        let public_url =
            args.app.public_url.clone().unwrap_or_else(|| {
                url::Url::parse(&format!("http://{}", args.app.listen)).unwrap()
            });
        args.app.public_url = Some(public_url.clone());
        let sandbox = start_sandbox(&args, &public_url, None).await;
        let cli = args.app.clone();
        let server = server::startup::start_with(args.app, config_adjust).await.unwrap();
        TestServer { server, sandbox, cli, _data: data }
    }

    /// Fails clearly when the Trunk build the browser needs is missing.
    pub fn require_built_app() {
        let dist = dist_dir();
        assert!(
            dist.join("index.html").exists(),
            "the app is not built at {}: run `trunk build --release` first (the README's test command does)",
            dist.display()
        );
    }

    pub fn sandbox(&self) -> &sandbox::Sandbox {
        &self.sandbox
    }

    /// The app's URL with `path` (no leading slash).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url)
    }
}

/// An HTTP client with a cookie jar against a [`TestServer`] (redirects followed).
pub struct BrowserlessClient {
    http: reqwest::Client,
    app: String,
    ehr_fhir_base: String,
    auth: std::sync::Arc<sandbox::Ehr>,
}

impl BrowserlessClient {
    pub fn new(server: &TestServer) -> Self {
        BrowserlessClient {
            http: reqwest::Client::builder().cookie_store(true).build().unwrap(),
            app: server.server.url.to_string(),
            ehr_fhir_base: server.sandbox().ehr_fhir_base().to_string(),
            auth: server.sandbox().ehr.clone(),
        }
    }

    /// An EHR launch for `patient`, followed to the review page; returns the launch id.
    pub async fn launch(&mut self, patient: &str) -> String {
        let launch = self.auth.auth.create_launch(sandbox::LaunchContext {
            patient: Some(patient.into()),
            practitioner: "prac-alvarez".into(),
            need_patient_banner: true,
            ..Default::default()
        });
        let mut url = url::Url::parse(&format!("{}launch", self.app)).unwrap();
        url.query_pairs_mut()
            .append_pair("iss", &self.ehr_fhir_base)
            .append_pair("launch", &launch);
        let response = self.http.get(url).send().await.unwrap();
        let last = response.url().to_string();
        assert!(last.contains("/review/"), "ended at {last}");
        last.rsplit('/').next().unwrap().to_owned()
    }

    pub async fn server_fn(
        &mut self,
        name: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, serde_json::Value) {
        let r = self
            .http
            .post(format!("{}api/{name}", self.app))
            .header("sec-fetch-site", "same-origin")
            .form(form)
            .send()
            .await
            .unwrap();
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }
}
