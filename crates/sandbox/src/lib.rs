//! The sandbox: a simulated EHR (SMART App Launch 2.2 authorization server, FHIR R4 chart,
//! launcher page) and a simulated health plan, each on its own loopback port, with
//! deterministic synthetic patients. It runs in its own process (the `sandbox` binary) or in
//! a test's, never in the app's. The demo and every end-to-end test run against it.

pub mod access_requests;
pub mod auth;
pub mod booking;
pub mod cds_trust;
pub mod ehr;
pub mod fhir_api;
pub mod history;
pub mod member_history;
pub mod member_signin;
pub mod pages;
pub mod plan;
pub mod provider_access;
pub mod push;
pub mod search;
pub mod store;
pub mod synthetic;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use url::Url;

pub use auth::{ClientJwks, ClientRegistration, LaunchContext};
pub use cds_trust::CdsClientTrust;
pub use ehr::Ehr;
pub use plan::{AnswerStyle, Plan};

/// How to start the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub host: IpAddr,
    /// 0 picks a free port.
    pub ehr_port: u16,
    /// Seed of the synthetic population.
    pub seed: u64,
    pub patients: usize,
    /// Lifetime of EHR access tokens, in seconds.
    pub access_token_ttl_secs: u64,
    /// Apps registered with the EHR (and with the plan, for SMART Backend Services).
    pub clients: Vec<ClientRegistration>,
    /// The plan's port; 0 picks a free one.
    pub plan_port: u16,
    /// How the plan points at the member's data.
    pub plan_style: AnswerStyle,
    /// Resources in each member's history at the plan.
    pub history_size: usize,
    /// CDS clients the plan trusts (the sandbox EHR is added automatically).
    pub cds_clients: Vec<CdsClientTrust>,
    /// Lifetime of the plan's access tokens, in seconds.
    pub plan_token_ttl_secs: u64,
    /// Resource types the EHR accepts for writing (create with conditional create); `None`
    /// means [`ehr::default_writable`].
    pub ehr_writable: Option<Vec<String>>,
    /// Whether the EHR accepts transactions.
    pub ehr_transactions: bool,
    /// Whether the EHR accepts batches.
    pub ehr_batch: bool,
    /// The most conditional entries (`ifNoneExist`) the EHR takes in one transaction; a
    /// larger one is refused with `too-costly`, as several real servers do. `None`: no limit.
    pub ehr_max_conditional_entries: Option<usize>,
    /// Whether the EHR's id_tokens carry `kid` (and its JWKS `alg`/`use`); `false` behaves
    /// like an OpenID Connect issuer with a single key that leaves them out.
    pub ehr_id_token_kid: bool,
    /// Attachment content types the EHR accepts in a DocumentReference; `None` accepts any.
    pub ehr_attachment_types: Option<Vec<String>>,
    /// The FHIR base the EHR's tokens are for and its launches name, when it is not the
    /// sandbox's own (a real FHIR server using this authorization server).
    pub ehr_fhir_base: Option<String>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ehr_port: 0,
            seed: 2026,
            patients: 12,
            access_token_ttl_secs: 3600,
            clients: Vec::new(),
            plan_port: 0,
            plan_style: AnswerStyle::default(),
            history_size: 150,
            cds_clients: Vec::new(),
            plan_token_ttl_secs: 900,
            ehr_writable: None,
            ehr_transactions: true,
            ehr_batch: true,
            ehr_max_conditional_entries: None,
            ehr_id_token_kid: true,
            ehr_attachment_types: None,
            ehr_fhir_base: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("could not create the sandbox signing key: {0}")]
    Key(#[from] jose::JoseError),
    #[error("the sandbox address does not form a URL: {0}")]
    Url(String),
    #[error("no HTTP client could be built (TLS backend): {0}")]
    Http(#[from] reqwest::Error),
    #[error("could not seed the sandbox store: {0}")]
    Seed(#[from] store::StoreError),
}

/// A running sandbox. Dropping it stops its servers.
#[derive(Debug)]
pub struct Sandbox {
    pub ehr: Arc<Ehr>,
    pub plan: Arc<Plan>,
    ehr_fhir_base: Url,
    tasks: Vec<JoinHandle<()>>,
}

impl Sandbox {
    pub async fn start(config: SandboxConfig) -> Result<Self, SandboxError> {
        let ehr_listener = bind(config.host, config.ehr_port).await?;
        let plan_listener = bind(config.host, config.plan_port).await?;
        let ehr_base = base_url(&ehr_listener, config.host, config.ehr_port)?;
        let plan_base = base_url(&plan_listener, config.host, config.plan_port)?;
        let http = fhir::http::client(&fhir::http::HttpLimits::default())?;
        let people = synthetic::population(config.seed, config.patients);
        let ehr_key = jose::SigningKey::generate_es384()?;
        let plan = Self::plan(&config, &people, &plan_base, &ehr_base, &ehr_key, &http)?;
        let (ehr, ehr_fhir_base) = Self::ehr(&config, people, ehr_base.clone(), &ehr_key, http)?;
        let identity = cds_hooks::ClientIdentity {
            key: Arc::new(ehr_key),
            issuer: ehr_base.clone(),
            jku: format!("{ehr_base}/auth/jwks"),
            tenant: None,
        };
        let booking = booking::Booking::new(
            cds_hooks::CdsClient::new(identity, cds_hooks::CdsLimits::default())?,
            Url::parse(&plan_base).map_err(|e| SandboxError::Url(e.to_string()))?,
        );
        let ehr = Arc::new(ehr);
        // The EHR as a CDS client of the plan: its "Book appointment" pages.
        let booking = Arc::new(booking::BookingPage { ehr: ehr.clone(), booking });
        let tasks = vec![
            serve(ehr_listener, ehr::router(ehr.clone()).merge(booking::router(booking))),
            serve(
                plan_listener,
                plan::router(plan.clone(), provider_access::router(plan.clone()))
                    .merge(push::router(plan.clone()))
                    .merge(member_signin::router(plan.clone())),
            ),
        ];
        tracing::info!(ehr = %ehr.base_url, plan = %plan.base_url, "sandbox started");
        Ok(Self { ehr, plan, ehr_fhir_base, tasks })
    }

    /// The simulated plan: its members' histories, its authorization server (Backend
    /// Services), and whom it trusts as CDS clients (the configured apps and this EHR).
    fn plan(
        config: &SandboxConfig,
        people: &[synthetic::Person],
        plan_base: &str,
        ehr_base: &str,
        ehr_key: &jose::SigningKey,
        http: &reqwest::Client,
    ) -> Result<Arc<Plan>, SandboxError> {
        let mut members = plan::members(people);
        let plan_store = Arc::new(store::FhirStore::new());
        plan_store.put_all(plan::plan_resources(
            people,
            &members,
            config.history_size,
            config.seed,
        ))?;
        for m in &mut members {
            m.records = plan_store.compartment(&m.patient_id).len();
        }
        let plan_auth = auth::AuthServer::new(
            plan_base,
            jose::SigningKey::generate_es384()?,
            config.clients.clone(),
            config.plan_token_ttl_secs,
            http.clone(),
        );
        let mut trusted = config.cds_clients.clone();
        trusted.push(CdsClientTrust {
            issuer: ehr_base.to_owned(),
            jku: format!("{ehr_base}/auth/jwks"),
            jwks: Some(ehr_key.jwks()),
        });
        let plan_fhir_base = format!("{plan_base}/fhir");
        let plan = Arc::new(Plan {
            api: fhir_api::FhirApi {
                store: plan_store.clone(),
                base_url: plan_fhir_base.clone(),
                tokens: Arc::new(plan_auth.verifier()),
                capability: Arc::new(std::sync::RwLock::new(plan::capability_statement(
                    &plan_fhir_base,
                    &plan_auth.issuer,
                ))),
                default_page_size: 200,
                writes: Arc::default(),
            },
            base_url: plan_base.to_owned(),
            fhir_base: plan_fhir_base,
            store: plan_store,
            members,
            auth: plan_auth,
            trust: cds_trust::CdsTrust::new(trusted, http.clone()),
            style: std::sync::Mutex::new(config.plan_style),
            app_launch_url: config.clients.first().map(|c| c.launch_url.clone()),
            received: std::sync::Mutex::default(),
            proposed_extensions: Default::default(),
            provider_access: Default::default(),
        });

        Ok(plan)
    }

    /// The simulated EHR (authorization server, chart, FHIR API) as `config` shapes it, and
    /// its FHIR base.
    fn ehr(
        config: &SandboxConfig,
        people: Vec<synthetic::Person>,
        ehr_base: String,
        ehr_key: &jose::SigningKey,
        http: reqwest::Client,
    ) -> Result<(Ehr, Url), SandboxError> {
        let store = Arc::new(store::FhirStore::new());
        store.put_all(synthetic::ehr_resources(&people))?;
        let mut auth = auth::AuthServer::new(
            &ehr_base,
            ehr_key.clone(),
            config.clients.clone(),
            config.access_token_ttl_secs,
            http,
        );
        // Another FHIR server (a real one) can stand behind this authorization server.
        if let Some(base) = &config.ehr_fhir_base {
            auth.fhir_base = base.trim_end_matches('/').to_owned();
        }
        auth.id_token_kid = config.ehr_id_token_kid;
        let fhir_base = auth.fhir_base.clone();
        let ehr_fhir_base = Url::parse(&fhir_base).map_err(|e| SandboxError::Url(e.to_string()))?;
        let writes = fhir_api::WriteRules {
            writable: config
                .ehr_writable
                .clone()
                .unwrap_or_else(ehr::default_writable)
                .into_iter()
                .collect(),
            transactions: config.ehr_transactions,
            batch: config.ehr_batch,
            max_conditional_entries: config.ehr_max_conditional_entries,
            attachment_types: config.ehr_attachment_types.clone(),
            faults: Default::default(),
        };
        let api = fhir_api::FhirApi {
            store: store.clone(),
            base_url: fhir_base.clone(),
            tokens: Arc::new(auth.verifier()),
            capability: Arc::new(std::sync::RwLock::new(fhir_api::capability_statement(
                &fhir_base,
                "Sandbox EHR",
                &ehr::ehr_resource_types(),
                Some(&auth.issuer),
                &writes,
            ))),
            default_page_size: 50,
            writes: Arc::new(writes),
        };
        Ok((Ehr { base_url: ehr_base, auth, store, people, api }, ehr_fhir_base))
    }

    /// The EHR's FHIR base (the `iss` of its launches).
    pub fn ehr_fhir_base(&self) -> &Url {
        &self.ehr_fhir_base
    }

    /// The EHR's web root (launcher page).
    pub fn ehr_url(&self) -> &str {
        &self.ehr.base_url
    }

    /// The plan's web root (CDS Hooks base: `{url}/cds-services`).
    pub fn plan_url(&self) -> &str {
        &self.plan.base_url
    }

    /// The plan's FHIR base.
    pub fn plan_fhir_base(&self) -> &str {
        &self.plan.fhir_base
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn base_url(listener: &TcpListener, host: IpAddr, port: u16) -> Result<String, SandboxError> {
    let addr = listener
        .local_addr()
        .map_err(|source| SandboxError::Bind { addr: SocketAddr::new(host, port), source })?;
    Ok(format!("http://{addr}"))
}

async fn bind(host: IpAddr, port: u16) -> Result<TcpListener, SandboxError> {
    let addr = SocketAddr::new(host, port);
    TcpListener::bind(addr).await.map_err(|source| SandboxError::Bind { addr, source })
}

fn serve(listener: TcpListener, router: axum::Router) -> JoinHandle<()> {
    use axum::serve::ListenerExt;
    // Answers go out as written, not held back by Nagle's algorithm waiting for an ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "sandbox server stopped");
        }
    })
}
