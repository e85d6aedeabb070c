//! The one `AppState`: configuration, HTTP client, keys, SMART clients and the store. Built
//! once at start; cloned cheaply into handlers and server functions.

use std::sync::Arc;
use std::time::Duration;

use smart::{ClientAuth, Discovery, Secret, SmartClient};

use crate::config::{AppConfig, ClientAuthConfig, EhrConfig, PayerConfig, PlanFhirAuth};
use crate::launches::Launches;

/// One configured EHR with its SMART client.
#[derive(Debug)]
pub struct EhrRuntime {
    pub config: EhrConfig,
    pub client: SmartClient,
    /// What the EHR accepts for writing (from its CapabilityStatement), read once an hour.
    pub write_capabilities:
        tokio::sync::Mutex<Option<(std::time::Instant, pdex::writeback::WriteCapabilities)>>,
    /// The most entries per transaction this EHR took, once it refused a larger one: later
    /// writes split the same way from the start (and a retry finds the same parts).
    pub learned_write_limit: std::sync::Mutex<Option<usize>>,
    /// Bounds the requests in flight to this EHR, over all clinicians.
    pub gate: Arc<tokio::sync::Semaphore>,
}

/// One configured health plan: its discovery document (cached) and, for SMART Backend
/// Services, a SMART client.
#[derive(Debug)]
pub struct PayerRuntime {
    pub config: PayerConfig,
    /// Our CDS Hooks client for this plan (JWT signed with our key, `jku` = our JWKS URL).
    pub cds: cds_hooks::CdsClient,
    pub backend: Option<SmartClient>,
    /// Our SMART client for member sign-in at the plan (`member_access`).
    pub member: Option<SmartClient>,
    pub discovery: tokio::sync::Mutex<Option<(std::time::Instant, cds_hooks::DiscoveryResponse)>>,
    /// The plan FHIR API's CapabilityStatement (does it offer `$everything`?), read once an hour.
    pub capability: tokio::sync::Mutex<Option<(std::time::Instant, serde_json::Value)>>,
    /// Bounds the requests in flight to this plan's FHIR API, over all clinicians (its CDS
    /// client has its own).
    pub gate: Arc<tokio::sync::Semaphore>,
    /// The keys the plan signs its pushes with (its `push.jwks_url`), read when needed.
    pub push_keys: tokio::sync::Mutex<Option<(std::time::Instant, jose::jwk::JwkSet)>>,
}

impl EhrRuntime {
    fn new(
        ehr: &EhrConfig,
        config: &AppConfig,
        key: &Arc<jose::SigningKey>,
        http: &reqwest::Client,
    ) -> Self {
        let auth = match &ehr.client_auth {
            ClientAuthConfig::PrivateKeyJwt => ClientAuth::PrivateKeyJwt { key: key.clone() },
            ClientAuthConfig::ClientSecretBasic { secret_env } => ClientAuth::ClientSecretBasic {
                // Checked present by `AppConfig::validate`.
                secret: Secret::new(std::env::var(secret_env).unwrap_or_default()),
            },
        };
        EhrRuntime {
            config: ehr.clone(),
            client: SmartClient::new(
                ehr.client_id.clone(),
                config.redirect_uri(),
                auth,
                http.clone(),
            ),
            write_capabilities: tokio::sync::Mutex::new(None),
            learned_write_limit: std::sync::Mutex::new(None),
            gate: Arc::new(tokio::sync::Semaphore::new(config.limits.max_requests_per_ehr)),
        }
    }
}

impl PayerRuntime {
    /// Fails only when no HTTP client with our rules can be built for its CDS client.
    fn new(
        payer: &PayerConfig,
        config: &AppConfig,
        key: &Arc<jose::SigningKey>,
        http: &reqwest::Client,
    ) -> Result<Self, reqwest::Error> {
        let identity = cds_hooks::ClientIdentity {
            key: key.clone(),
            issuer: config.cds_issuer(),
            jku: config.jwks_url().to_string(),
            tenant: None,
        };
        let limits = cds_hooks::CdsLimits {
            timeout: Duration::from_secs(payer.timeout_seconds.max(1)),
            max_in_flight: config.limits.max_requests_per_plan,
            ..cds_hooks::CdsLimits::default()
        };
        let backend = match &payer.fhir_auth {
            PlanFhirAuth::BackendServices { client_id, .. } => Some(SmartClient::new(
                client_id.clone(),
                config.redirect_uri(),
                ClientAuth::PrivateKeyJwt { key: key.clone() },
                http.clone(),
            )),
            PlanFhirAuth::FromAnswer => None,
        };
        let member = payer.member_access.as_ref().map(|m| {
            SmartClient::new(
                m.client_id.clone(),
                config.member_callback_url(),
                ClientAuth::PrivateKeyJwt { key: key.clone() },
                http.clone(),
            )
        });
        Ok(PayerRuntime {
            member,
            config: payer.clone(),
            cds: cds_hooks::CdsClient::new(identity, limits)?,
            backend,
            discovery: tokio::sync::Mutex::new(None),
            capability: tokio::sync::Mutex::new(None),
            gate: Arc::new(tokio::sync::Semaphore::new(config.limits.max_requests_per_plan)),
            push_keys: tokio::sync::Mutex::new(None),
        })
    }

    pub fn summary(&self) -> api::PayerSummary {
        api::PayerSummary {
            id: self.config.id.clone(),
            name: self.config.name.clone(),
            routes: self.config.routes.clone(),
            pushes: self.config.push.is_some(),
            member_access: self.config.member_access.is_some(),
        }
    }
}

#[derive(Debug)]
pub struct Inner {
    pub config: AppConfig,
    pub http: reqwest::Client,
    pub limits: fhir::http::HttpLimits,
    pub discovery: Discovery,
    pub signing_key: Arc<jose::SigningKey>,
    /// Shared so a launch's handle holds its EHR and plan directly (`crate::owned`).
    pub ehrs: Vec<Arc<EhrRuntime>>,
    pub payers: Vec<Arc<PayerRuntime>>,
    pub launches: Launches,
    /// This server among those on the store (job leases name it).
    pub worker_id: String,
    /// Plan histories read and parsed at once on this server (`limits.history_reads_in_flight`):
    /// a parsed history is several times the plan's bytes, so this bounds the peak.
    pub history_reads: tokio::sync::Semaphore,
    /// Set when the server is stopping: long-running work (a Provider Access request's
    /// polling) stops between steps and leaves its lease to run out for the next server.
    stopping: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds the state from a checked configuration and our signing key. Fails only when
    /// no HTTP client with our rules can be built (the TLS backend did not initialise).
    pub fn new(
        config: AppConfig,
        signing_key: jose::SigningKey,
        store: Arc<dyn store::Store>,
    ) -> Result<Self, reqwest::Error> {
        let limits = fhir::http::HttpLimits::default();
        let http = fhir::http::client(&limits)?;
        let signing_key = Arc::new(signing_key);
        let ehrs = config
            .ehrs
            .iter()
            .map(|ehr| Arc::new(EhrRuntime::new(ehr, &config, &signing_key, &http)))
            .collect();
        let payers = config
            .payers
            .iter()
            .map(|payer| PayerRuntime::new(payer, &config, &signing_key, &http).map(Arc::new))
            .collect::<Result<Vec<_>, reqwest::Error>>()?;
        let cache_bytes = config.store.history_cache_mb.saturating_mul(1024 * 1024);
        Ok(AppState(Arc::new(Inner {
            discovery: Discovery::new(http.clone(), Duration::from_secs(3600)),
            http,
            limits,
            signing_key,
            ehrs,
            payers,
            launches: Launches::new(store, cache_bytes),
            worker_id: uuid::Uuid::new_v4().to_string(),
            history_reads: tokio::sync::Semaphore::new(config.limits.history_reads_in_flight),
            stopping: Default::default(),
            config,
        })))
    }

    /// Tells long-running work to stop at its next step (the server is shutting down).
    pub fn stop(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How long a job is held before another server may take it over.
    pub fn job_lease_secs(&self) -> i64 {
        i64::try_from(self.config.store.job_lease_seconds).unwrap_or(i64::MAX)
    }

    pub fn ehr(&self, id: &str) -> Option<&Arc<EhrRuntime>> {
        self.ehrs.iter().find(|e| e.config.id == id)
    }

    /// The EHR whose issuer `iss` names (compared as FHIR bases, `fhir::base`).
    pub fn ehr_by_issuer(&self, iss: &str) -> Option<&Arc<EhrRuntime>> {
        self.ehrs.iter().find(|e| fhir::base::same_server(e.config.issuer.as_str(), iss))
    }

    pub fn payer(&self, id: &str) -> Option<&Arc<PayerRuntime>> {
        self.payers.iter().find(|p| p.config.id == id)
    }

    /// A FHIR client for the EHR's base URL, with its configured deadline.
    pub fn fhir_client(&self, ehr: &EhrRuntime) -> fhir::FhirClient {
        fhir::FhirClient::new(self.http.clone(), ehr.config.issuer.clone(), &self.limits)
            .with_timeout(Duration::from_secs(ehr.config.timeout_seconds.max(1)))
            .with_gate(ehr.gate.clone())
    }

    /// A FHIR client for a plan's FHIR API at `base` (configured, or named by its answer).
    pub fn plan_fhir_client(&self, payer: &PayerRuntime, base: &url::Url) -> fhir::FhirClient {
        fhir::FhirClient::new(self.http.clone(), base.clone(), &self.limits)
            .with_gate(payer.gate.clone())
    }

    /// Our public JWKS (what `/.well-known/jwks.json` serves).
    pub fn jwks(&self) -> jose::jwk::JwkSet {
        self.signing_key.jwks()
    }

    /// Every origin allowed to frame the app (CSP `frame-ancestors`).
    pub fn frame_ancestors(&self) -> Vec<String> {
        let mut origins: Vec<String> =
            self.config.ehrs.iter().flat_map(|e| e.frame_ancestors.iter().cloned()).collect();
        origins.sort();
        origins.dedup();
        origins
    }
}
