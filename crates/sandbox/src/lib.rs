//! The embedded sandbox: a simulated EHR (SMART App Launch 2.2 authorization server, FHIR R4
//! chart, launcher page) and a simulated health plan, each on its own loopback port, with
//! deterministic synthetic patients. The demo and every end-to-end test run against it.

pub mod auth;
pub mod ehr;
pub mod fhir_api;
pub mod pages;
pub mod search;
pub mod store;
pub mod synthetic;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use url::Url;

pub use auth::{ClientJwks, ClientRegistration, LaunchContext};
pub use ehr::Ehr;

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
    /// Apps registered with the EHR.
    pub clients: Vec<ClientRegistration>,
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
    #[error("could not seed the sandbox store: {0}")]
    Seed(#[from] store::StoreError),
}

/// A running sandbox. Dropping it stops its servers.
#[derive(Debug)]
pub struct Sandbox {
    pub ehr: Arc<Ehr>,
    ehr_fhir_base: Url,
    tasks: Vec<JoinHandle<()>>,
}

impl Sandbox {
    pub async fn start(config: SandboxConfig) -> Result<Self, SandboxError> {
        let ehr_listener = bind(config.host, config.ehr_port).await?;
        let ehr_addr = ehr_listener.local_addr().map_err(|source| SandboxError::Bind {
            addr: SocketAddr::new(config.host, config.ehr_port),
            source,
        })?;
        let ehr_base = format!("http://{ehr_addr}");
        let http = fhir::http::client(&fhir::http::HttpLimits::default());

        let people = synthetic::population(config.seed, config.patients);
        let store = Arc::new(store::FhirStore::new());
        store.put_all(synthetic::ehr_resources(&people))?;
        let auth = auth::AuthServer::new(
            &ehr_base,
            jose::SigningKey::generate_es384()?,
            config.clients.clone(),
            config.access_token_ttl_secs,
            http,
        );
        let fhir_base = format!("{ehr_base}/fhir");
        let ehr_fhir_base = Url::parse(&fhir_base).map_err(|e| SandboxError::Url(e.to_string()))?;
        let api = fhir_api::FhirApi {
            store: store.clone(),
            base_url: fhir_base.clone(),
            tokens: Arc::new(auth.verifier()),
            capability: Arc::new(std::sync::RwLock::new(fhir_api::capability_statement(
                &fhir_base,
                "Sandbox EHR",
                ehr::EHR_RESOURCE_TYPES,
                Some(&auth.issuer),
            ))),
            default_page_size: 50,
        };
        let ehr = Arc::new(Ehr { base_url: ehr_base, auth, store, people, api });
        let tasks = vec![serve(ehr_listener, ehr::router(ehr.clone()))];
        tracing::info!(ehr = %ehr.base_url, "sandbox started");
        Ok(Self { ehr, ehr_fhir_base, tasks })
    }

    /// The EHR's FHIR base (the `iss` of its launches).
    pub fn ehr_fhir_base(&self) -> &Url {
        &self.ehr_fhir_base
    }

    /// The EHR's web root (launcher page).
    pub fn ehr_url(&self) -> &str {
        &self.ehr.base_url
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn bind(host: IpAddr, port: u16) -> Result<TcpListener, SandboxError> {
    let addr = SocketAddr::new(host, port);
    TcpListener::bind(addr).await.map_err(|source| SandboxError::Bind { addr, source })
}

fn serve(listener: TcpListener, router: axum::Router) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "sandbox server stopped");
        }
    })
}
