//! The sandbox EHR's SMART App Launch 2.2 authorization server: `authorize` (EHR launch and
//! standalone with a patient picker), `token` (authorization_code with PKCE S256,
//! refresh_token, client_credentials; `private_key_jwt` and `client_secret_basic`), JWKS and
//! discovery documents. Tokens are ES384 JWTs the FHIR API verifies.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use smart::scopes::ScopeSet;

use crate::fhir_api::TokenVerifier;

/// How a registered client proves who it is at the token endpoint.
#[derive(Debug, Clone)]
pub enum ClientJwks {
    /// The JWKS given at registration (the spec discourages this but allows it).
    Inline(jose::jwk::JwkSet),
    /// A JWKS URL fetched when a client assertion arrives.
    Url(String),
}

/// A client registered with the sandbox EHR.
#[derive(Debug, Clone)]
pub struct ClientRegistration {
    pub client_id: String,
    pub name: String,
    /// Exact redirect URIs; anything else is refused without redirecting.
    pub redirect_uris: Vec<String>,
    /// Where the launcher sends `iss` and `launch`.
    pub launch_url: String,
    pub jwks: Option<ClientJwks>,
    pub client_secret: Option<String>,
}

/// A launch the EHR created for the app (EHR launch): single use, five minutes.
#[derive(Debug, Clone, Default)]
pub struct LaunchContext {
    pub patient: Option<String>,
    pub encounter: Option<String>,
    pub practitioner: String,
    pub need_patient_banner: bool,
    pub app_context: Option<String>,
    pub intent: Option<String>,
    /// SMART `fhirContext` references (`Appointment/…`) sent with the token.
    pub fhir_context: Vec<String>,
    /// SMART `tenant`: the healthcare organisation of the launch.
    pub tenant: Option<String>,
}

#[derive(Debug, Clone)]
struct LaunchRecord {
    context: LaunchContext,
    expires_at: u64,
}

/// An authorize request waiting for the picker's answer.
#[derive(Debug, Clone)]
struct PendingRequest {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    scope: String,
    code_challenge: String,
    nonce: Option<String>,
    expires_at: u64,
}

#[derive(Debug, Clone)]
struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    scope: String,
    context: LaunchContext,
    /// The client's OpenID Connect `nonce`, echoed in the id_token.
    nonce: Option<String>,
    expires_at: u64,
}

#[derive(Debug, Clone)]
struct RefreshGrant {
    client_id: String,
    scope: String,
    context: LaunchContext,
    expires_at: u64,
}

#[derive(Debug, Default)]
struct AuthState {
    launches: HashMap<String, LaunchRecord>,
    requests: HashMap<String, PendingRequest>,
    codes: HashMap<String, CodeGrant>,
    used_codes: HashSet<String>,
    refresh: HashMap<String, RefreshGrant>,
    jtis: HashMap<String, u64>,
}

/// Counters the tests read.
#[derive(Debug, Default)]
pub struct AuthStats {
    pub codes_issued: AtomicU64,
    pub code_exchanges: AtomicU64,
    pub refreshes: AtomicU64,
    pub refused: AtomicU64,
}

/// Lifetime of an authorization code.
const CODE_TTL: u64 = 60;
const LAUNCH_TTL: u64 = 300;
const REFRESH_TTL: u64 = 8 * 3600;

#[derive(Debug)]
pub struct AuthServer {
    /// The OpenID issuer and `iss` of every token: `{ehr}/auth`.
    pub issuer: String,
    /// The FHIR base: the only accepted `aud`.
    pub fhir_base: String,
    pub key: jose::SigningKey,
    pub clients: Vec<ClientRegistration>,
    pub access_token_ttl: u64,
    pub smart_style_url: String,
    /// How id_tokens and the published JWKS look: `true` as most issuers do (`kid` in the
    /// header, `kid`/`alg`/`use` on the key); `false` as an OpenID Connect issuer with one key
    /// may (no `kid` in the header, a bare key in the JWKS).
    pub id_token_kid: bool,
    http: reqwest::Client,
    state: Mutex<AuthState>,
    pub stats: AuthStats,
    /// `jti`s of access tokens issued so far (for revocation in tests).
    issued: Mutex<Vec<String>>,
    revoked: std::sync::Arc<Mutex<HashSet<String>>>,
}

/// The capabilities the sandbox EHR advertises.
pub const CAPABILITIES: &[&str] = &[
    "launch-ehr",
    "launch-standalone",
    "client-confidential-asymmetric",
    "client-confidential-symmetric",
    "context-banner",
    "context-style",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
    "sso-openid-connect",
];

/// An OAuth error, either shown as a page (bad client or redirect URI: never redirect) or
/// sent back to the client.
#[derive(Debug)]
pub enum AuthorizeError {
    Page(StatusCode, String),
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

#[derive(Debug)]
pub struct TokenError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl TokenError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        let status = if error == "invalid_client" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        Self { status, error, description: description.into() }
    }
}

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({"error": self.error, "error_description": self.description})),
        )
            .into_response();
        no_store(r.headers_mut());
        r
    }
}

fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// The query of `GET /authorize`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub launch: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub aud: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub nonce: Option<String>,
}

/// What `authorize` decided.
#[derive(Debug)]
pub enum AuthorizeOutcome {
    /// Redirect to the client with a code.
    Code(String),
    /// Show the patient picker for this request id.
    Picker { request_id: String, needs_patient: bool },
}

/// Query parameters for a redirect back to the client.
pub type RedirectParams = Vec<(&'static str, String)>;

/// The picker's form.
#[derive(Debug, Clone, Deserialize)]
pub struct Decision {
    pub request_id: String,
    pub patient: Option<String>,
    pub practitioner: String,
    pub decision: String,
}

/// The body of `POST /token`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenParams {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    pub client_id: Option<String>,
    pub client_assertion_type: Option<String>,
    pub client_assertion: Option<String>,
}

#[derive(Debug, Serialize)]
struct AccessTokenClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    iat: u64,
    jti: String,
    client_id: &'a str,
    scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    patient: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encounter: Option<&'a str>,
    #[serde(rename = "fhirUser", skip_serializing_if = "Option::is_none")]
    fhir_user: Option<String>,
}

fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AuthServer {
    pub fn new(
        ehr_base: &str,
        key: jose::SigningKey,
        clients: Vec<ClientRegistration>,
        access_token_ttl: u64,
        http: reqwest::Client,
    ) -> Self {
        Self {
            issuer: format!("{ehr_base}/auth"),
            fhir_base: format!("{ehr_base}/fhir"),
            key,
            clients,
            access_token_ttl,
            smart_style_url: format!("{ehr_base}/smart-style.json"),
            id_token_kid: true,
            http,
            state: Mutex::default(),
            stats: AuthStats::default(),
            issued: Mutex::default(),
            revoked: std::sync::Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The JWKS at `jwks_uri`. In the loose style the key has no `alg` and no `use` (it keeps
    /// its `kid`: the same key signs CDS Hooks requests, whose spec requires one).
    pub fn published_jwks(&self) -> jose::jwk::JwkSet {
        let mut jwks = self.key.jwks();
        if !self.id_token_kid {
            for key in &mut jwks.keys {
                key.common.key_algorithm = None;
                key.common.public_key_use = None;
            }
        }
        jwks
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// A SMART Backend Services token (`client_credentials` with `private_key_jwt`) asked of
    /// this server over HTTP, as a registered client would: for tests, benchmarks and audits
    /// that read or write the EHR without a user.
    pub async fn backend_services_token(
        &self,
        key: std::sync::Arc<jose::SigningKey>,
        client_id: &str,
        scope: &str,
    ) -> Result<String, smart::client::SmartError> {
        let unusable = |reason: String| smart::client::SmartError::Discovery { reason };
        let config: smart::discovery::SmartConfiguration =
            serde_json::from_value(self.smart_configuration())
                .map_err(|e| unusable(e.to_string()))?;
        let client = smart::client::SmartClient::new(
            client_id.to_owned(),
            // Never used: client_credentials has no redirect.
            url::Url::parse("urn:backend-services").map_err(|e| unusable(e.to_string()))?,
            smart::client::ClientAuth::PrivateKeyJwt { key },
            fhir::http::client(&fhir::http::HttpLimits::default())
                .map_err(|e| smart::client::SmartError::Unreachable(e.to_string()))?,
        );
        let token = client.client_credentials(&config, scope).await?;
        Ok(token.access_token.expose().to_owned())
    }

    /// A verifier for the access tokens this server issues.
    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier {
            jwks: self.key.jwks(),
            issuer: self.issuer.clone(),
            audience: self.fhir_base.clone(),
            revoked: self.revoked.clone(),
            verified: std::sync::Arc::default(),
        }
    }

    /// Stops honouring every access token issued so far (as an EHR does when a session is
    /// ended early); refresh tokens stay valid.
    pub fn revoke_issued_access_tokens(&self) {
        let issued: Vec<String> =
            std::mem::take(&mut *self.issued.lock().unwrap_or_else(|p| p.into_inner()));
        self.revoked.lock().unwrap_or_else(|p| p.into_inner()).extend(issued);
    }

    pub fn client(&self, client_id: &str) -> Option<&ClientRegistration> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }

    /// Registers an EHR launch and returns its opaque id.
    pub fn create_launch(&self, context: LaunchContext) -> String {
        let id = random_token();
        let now = jose::now();
        let mut state = self.lock();
        state.launches.retain(|_, l| l.expires_at > now);
        state.launches.insert(id.clone(), LaunchRecord { context, expires_at: now + LAUNCH_TTL });
        id
    }

    pub fn smart_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/jwks", self.issuer),
            "authorization_endpoint": format!("{}/authorize", self.issuer),
            "token_endpoint": self.token_endpoint(),
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
            "token_endpoint_auth_signing_alg_values_supported": ["ES384", "RS384"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "scopes_supported": ["openid", "fhirUser", "launch", "launch/patient", "offline_access", "online_access",
                "patient/*.rs", "user/*.rs", "user/*.cruds", "system/*.rs"],
            "response_types_supported": ["code"],
            "capabilities": CAPABILITIES,
            "code_challenge_methods_supported": ["S256"],
        })
    }

    pub fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/jwks", self.issuer),
            "authorization_endpoint": format!("{}/authorize", self.issuer),
            "token_endpoint": self.token_endpoint(),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.key.alg()],
        })
    }

    /// Checks an authorize request. Client and redirect URI problems are pages; the rest go
    /// back to the client as OAuth errors. Long on purpose: the checks in the order RFC 6749
    /// §4.1.2.1 and SMART give them (which ones may redirect depends on it).
    pub fn authorize(&self, p: &AuthorizeParams) -> Result<AuthorizeOutcome, AuthorizeError> {
        let client_id = p.client_id.as_deref().unwrap_or_default();
        let Some(client) = self.client(client_id) else {
            return Err(AuthorizeError::Page(
                StatusCode::BAD_REQUEST,
                format!("Unknown client_id `{client_id}`."),
            ));
        };
        let redirect_uri = p.redirect_uri.clone().unwrap_or_default();
        if !client.redirect_uris.contains(&redirect_uri) {
            return Err(AuthorizeError::Page(
                StatusCode::BAD_REQUEST,
                "The redirect_uri is not registered for this client.".into(),
            ));
        }
        let fail = |error: &'static str, description: &str| AuthorizeError::Redirect {
            redirect_uri: redirect_uri.clone(),
            state: p.state.clone(),
            error,
            description: description.to_owned(),
        };
        if p.response_type.as_deref() != Some("code") {
            return Err(fail("unsupported_response_type", "response_type must be code"));
        }
        if p.state.as_deref().is_none_or(str::is_empty) {
            return Err(fail("invalid_request", "state is required"));
        }
        let challenge = p.code_challenge.clone().unwrap_or_default();
        if p.code_challenge_method.as_deref() != Some("S256")
            || !(43..=128).contains(&challenge.len())
        {
            return Err(fail(
                "invalid_request",
                "PKCE with code_challenge_method S256 is required",
            ));
        }
        if !p.aud.as_deref().is_some_and(|a| fhir::base::same_server(&self.fhir_base, a)) {
            return Err(fail("invalid_request", "aud must be this EHR's FHIR base URL"));
        }
        let scope = p.scope.clone().unwrap_or_default();
        let scopes = ScopeSet::parse(&scope);
        if scope.trim().is_empty() {
            return Err(fail("invalid_scope", "scope is required"));
        }
        let now = jose::now();
        if scopes.contains("launch") || p.launch.is_some() {
            let launch_id = p.launch.as_deref().ok_or_else(|| {
                fail("invalid_request", "the launch scope needs a launch parameter")
            })?;
            let mut state = self.lock();
            let record = state.launches.remove(launch_id).filter(|l| l.expires_at > now);
            drop(state);
            let record = record
                .ok_or_else(|| fail("invalid_request", "the launch is unknown, used or expired"))?;
            let code = self.issue_code(
                client_id,
                &redirect_uri,
                &challenge,
                &scope,
                record.context,
                p.nonce.clone(),
            );
            return Ok(AuthorizeOutcome::Code(code));
        }
        let request_id = random_token();
        let mut state = self.lock();
        state.requests.retain(|_, r| r.expires_at > now);
        state.requests.insert(
            request_id.clone(),
            PendingRequest {
                client_id: client_id.to_owned(),
                redirect_uri,
                state: p.state.clone(),
                scope,
                code_challenge: challenge,
                nonce: p.nonce.clone(),
                expires_at: now + 600,
            },
        );
        Ok(AuthorizeOutcome::Picker {
            request_id,
            needs_patient: scopes.contains("launch/patient"),
        })
    }

    /// The picker's answer: a code, or `access_denied`.
    pub fn decide(&self, d: &Decision) -> Result<(String, RedirectParams), AuthorizeError> {
        self.decide_granting(d, str::to_owned)
    }

    /// The requested scope of a sign-in still pending (for a consent screen).
    pub fn pending_scope(&self, request_id: &str) -> Option<String> {
        self.lock().requests.get(request_id).map(|r| r.scope.clone())
    }

    /// [`Self::decide`], granting `grant(requested scope)`: what the user let the app have.
    pub fn decide_granting(
        &self,
        d: &Decision,
        grant: impl FnOnce(&str) -> String,
    ) -> Result<(String, RedirectParams), AuthorizeError> {
        let now = jose::now();
        let request =
            self.lock().requests.remove(&d.request_id).filter(|r| r.expires_at > now).ok_or_else(
                || {
                    AuthorizeError::Page(
                        StatusCode::BAD_REQUEST,
                        "This sign-in request has expired. Start again from the app.".into(),
                    )
                },
            )?;
        let mut params: RedirectParams = Vec::new();
        if d.decision != "allow" {
            params.push(("error", "access_denied".into()));
            params.push(("error_description", "The user denied access".into()));
        } else {
            let needs_patient = ScopeSet::parse(&request.scope).contains("launch/patient");
            let patient = d.patient.clone().filter(|p| !p.is_empty());
            if needs_patient && patient.is_none() {
                params.push(("error", "invalid_request".into()));
                params.push(("error_description", "no patient was chosen".into()));
            } else {
                let context = LaunchContext {
                    patient,
                    practitioner: d.practitioner.clone(),
                    need_patient_banner: true,
                    ..Default::default()
                };
                let granted = grant(&request.scope);
                let code = self.issue_code(
                    &request.client_id,
                    &request.redirect_uri,
                    &request.code_challenge,
                    &granted,
                    context,
                    request.nonce.clone(),
                );
                params.push(("code", code));
            }
        }
        if let Some(state) = request.state {
            params.push(("state", state));
        }
        Ok((request.redirect_uri, params))
    }

    fn issue_code(
        &self,
        client_id: &str,
        redirect_uri: &str,
        challenge: &str,
        scope: &str,
        context: LaunchContext,
        nonce: Option<String>,
    ) -> String {
        let code = random_token();
        let now = jose::now();
        let mut state = self.lock();
        state.codes.retain(|_, c| c.expires_at > now);
        state.codes.insert(
            code.clone(),
            CodeGrant {
                client_id: client_id.to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                code_challenge: challenge.to_owned(),
                scope: scope.to_owned(),
                context,
                nonce,
                expires_at: now + CODE_TTL,
            },
        );
        self.stats.codes_issued.fetch_add(1, Ordering::Relaxed);
        code
    }

    /// A signed access token (remembered for revocation).
    fn access_token(
        &self,
        client_id: &str,
        subject: &str,
        scope: &str,
        context: &LaunchContext,
        fhir_user: Option<String>,
        now: u64,
    ) -> Result<String, jose::JoseError> {
        let jti = jose::new_jti();
        self.issued.lock().unwrap_or_else(|p| p.into_inner()).push(jti.clone());
        let claims = AccessTokenClaims {
            iss: &self.issuer,
            sub: subject,
            aud: &self.fhir_base,
            exp: now + self.access_token_ttl,
            iat: now,
            jti,
            client_id,
            scope,
            patient: context.patient.as_deref(),
            encounter: context.encounter.as_deref(),
            fhir_user,
        };
        self.key.sign(&claims, None)
    }

    /// An access token for `client_id` outside any OAuth flow (the plan hands one out in a
    /// PDex STU1 card).
    pub fn mint_access_token(
        &self,
        client_id: &str,
        scope: &str,
        patient: Option<&str>,
    ) -> Result<String, jose::JoseError> {
        let context = LaunchContext { patient: patient.map(str::to_owned), ..Default::default() };
        self.access_token(client_id, client_id, scope, &context, None, jose::now())
    }

    /// The token endpoint.
    pub async fn token(&self, headers: &HeaderMap, p: &TokenParams) -> Result<Value, TokenError> {
        let result = self.token_inner(headers, p).await;
        if result.is_err() {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    // Long on purpose: the token endpoint's checks for every grant (RFC 6749 §4-6, SMART's
    // PKCE and Backend Services rules) read top to bottom in the order a strict server makes them.
    async fn token_inner(&self, headers: &HeaderMap, p: &TokenParams) -> Result<Value, TokenError> {
        let (client_id, asymmetric) = self.authenticate_client(headers, p).await?;
        let now = jose::now();
        match p.grant_type.as_deref() {
            Some("authorization_code") => {
                let code = p
                    .code
                    .as_deref()
                    .ok_or_else(|| TokenError::new("invalid_request", "code is required"))?;
                let mut state = self.lock();
                let grant = state.codes.remove(code);
                let replayed = grant.is_none() && state.used_codes.contains(code);
                if grant.is_some() {
                    state.used_codes.insert(code.to_owned());
                }
                drop(state);
                let grant = grant.ok_or_else(|| {
                    TokenError::new(
                        "invalid_grant",
                        if replayed {
                            "the authorization code was already used"
                        } else {
                            "unknown authorization code"
                        },
                    )
                })?;
                if grant.expires_at <= now {
                    return Err(TokenError::new(
                        "invalid_grant",
                        "the authorization code has expired",
                    ));
                }
                if grant.client_id != client_id {
                    return Err(TokenError::new(
                        "invalid_grant",
                        "the code was issued to another client",
                    ));
                }
                if p.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str()) {
                    return Err(TokenError::new(
                        "invalid_grant",
                        "redirect_uri does not match the authorization request",
                    ));
                }
                let verifier = p
                    .code_verifier
                    .as_deref()
                    .ok_or_else(|| TokenError::new("invalid_grant", "code_verifier is required"))?;
                let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(Sha256::digest(verifier.as_bytes()));
                if !constant_time_eq(computed.as_bytes(), grant.code_challenge.as_bytes()) {
                    return Err(TokenError::new(
                        "invalid_grant",
                        "code_verifier does not match the code_challenge",
                    ));
                }
                self.stats.code_exchanges.fetch_add(1, Ordering::Relaxed);
                self.issue_tokens(
                    &client_id,
                    &grant.scope,
                    &grant.context,
                    true,
                    grant.nonce.as_deref(),
                    now,
                )
            }
            Some("refresh_token") => {
                let token = p.refresh_token.as_deref().ok_or_else(|| {
                    TokenError::new("invalid_request", "refresh_token is required")
                })?;
                let grant = self.lock().refresh.get(token).cloned().filter(|g| g.expires_at > now);
                let grant = grant.ok_or_else(|| {
                    TokenError::new("invalid_grant", "unknown or expired refresh token")
                })?;
                if grant.client_id != client_id {
                    return Err(TokenError::new(
                        "invalid_grant",
                        "the refresh token belongs to another client",
                    ));
                }
                let scope = match &p.scope {
                    Some(requested) => {
                        let granted = ScopeSet::parse(&grant.scope);
                        if requested.split_whitespace().any(|s| !granted.contains(s)) {
                            return Err(TokenError::new(
                                "invalid_scope",
                                "a refresh may only narrow the scopes",
                            ));
                        }
                        requested.clone()
                    }
                    None => grant.scope.clone(),
                };
                self.stats.refreshes.fetch_add(1, Ordering::Relaxed);
                let mut body =
                    self.issue_tokens(&client_id, &scope, &grant.context, false, None, now)?;
                // The refresh token stays valid (no rotation): echo it so clients keep it.
                body["refresh_token"] = json!(token);
                Ok(body)
            }
            Some("client_credentials") => {
                if !asymmetric {
                    return Err(TokenError::new(
                        "unauthorized_client",
                        "client_credentials needs private_key_jwt",
                    ));
                }
                let scope = p.scope.clone().unwrap_or_default();
                let context = LaunchContext { practitioner: String::new(), ..Default::default() };
                let mut body = self.issue_tokens(&client_id, &scope, &context, false, None, now)?;
                if let Some(map) = body.as_object_mut() {
                    map.retain(|k, _| {
                        matches!(k.as_str(), "access_token" | "token_type" | "expires_in" | "scope")
                    });
                }
                Ok(body)
            }
            _ => Err(TokenError::new(
                "unsupported_grant_type",
                "grant_type must be authorization_code, refresh_token or client_credentials",
            )),
        }
    }

    // Long on purpose: one token response with every SMART launch context field, each
    // one visible where it is decided.
    fn issue_tokens(
        &self,
        client_id: &str,
        scope: &str,
        context: &LaunchContext,
        first: bool,
        nonce: Option<&str>,
        now: u64,
    ) -> Result<Value, TokenError> {
        let scopes = ScopeSet::parse(scope);
        let fhir_user = (!context.practitioner.is_empty())
            .then(|| format!("{}/Practitioner/{}", self.fhir_base, context.practitioner));
        let subject =
            if context.practitioner.is_empty() { client_id } else { context.practitioner.as_str() };
        let access_token = self
            .access_token(client_id, subject, scope, context, fhir_user.clone(), now)
            .map_err(|_| TokenError::new("server_error", "could not sign"))?;
        let mut body = json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": self.access_token_ttl,
            "scope": scope,
        });
        if let Some(patient) = &context.patient {
            body["patient"] = json!(patient);
        }
        if let Some(encounter) = &context.encounter {
            body["encounter"] = json!(encounter);
        }
        if !context.practitioner.is_empty() {
            body["need_patient_banner"] = json!(context.need_patient_banner);
            body["smart_style_url"] = json!(self.smart_style_url);
            if let Some(u) = &fhir_user {
                body["fhirUser"] = json!(u);
            }
        }
        if let Some(app_context) = &context.app_context {
            body["appContext"] = json!(app_context);
        }
        if let Some(intent) = &context.intent {
            body["intent"] = json!(intent);
        }
        if !context.fhir_context.is_empty() {
            body["fhirContext"] =
                context.fhir_context.iter().map(|r| json!({"reference": r})).collect();
        }
        if let Some(tenant) = &context.tenant {
            body["tenant"] = json!(tenant);
        }
        if first && scopes.contains("openid") {
            #[derive(Serialize)]
            struct IdToken<'a> {
                iss: &'a str,
                sub: &'a str,
                aud: &'a str,
                exp: u64,
                iat: u64,
                #[serde(rename = "fhirUser", skip_serializing_if = "Option::is_none")]
                fhir_user: Option<String>,
                #[serde(skip_serializing_if = "Option::is_none")]
                nonce: Option<&'a str>,
            }
            let claims = IdToken {
                iss: &self.issuer,
                sub: subject,
                aud: client_id,
                exp: now + 3600,
                iat: now,
                fhir_user,
                nonce,
            };
            let id_token = if self.id_token_kid {
                self.key.sign(&claims, None)
            } else {
                self.key.sign_without_kid(&claims)
            }
            .map_err(|_| TokenError::new("server_error", "could not sign"))?;
            body["id_token"] = json!(id_token);
        }
        if first && (scopes.contains("offline_access") || scopes.contains("online_access")) {
            let refresh = random_token();
            let mut state = self.lock();
            state.refresh.retain(|_, g| g.expires_at > now);
            state.refresh.insert(
                refresh.clone(),
                RefreshGrant {
                    client_id: client_id.to_owned(),
                    scope: scope.to_owned(),
                    context: context.clone(),
                    expires_at: now + REFRESH_TTL,
                },
            );
            body["refresh_token"] = json!(refresh);
        }
        Ok(body)
    }

    /// Client authentication: a `private_key_jwt` assertion, or HTTP Basic with the secret.
    /// Returns the client id and whether it authenticated asymmetrically.
    async fn authenticate_client(
        &self,
        headers: &HeaderMap,
        p: &TokenParams,
    ) -> Result<(String, bool), TokenError> {
        let client_id = if let Some(assertion) = &p.client_assertion {
            if p.client_assertion_type.as_deref() != Some(smart::client::JWT_BEARER_ASSERTION) {
                return Err(TokenError::new("invalid_client", "unsupported client_assertion_type"));
            }
            (self.verify_assertion(assertion).await?, true)
        } else if let Some((id, secret)) = basic_credentials(headers) {
            let client = self
                .client(&id)
                .ok_or_else(|| TokenError::new("invalid_client", "unknown client"))?;
            let expected = client
                .client_secret
                .as_deref()
                .ok_or_else(|| TokenError::new("invalid_client", "this client has no secret"))?;
            if !constant_time_eq(expected.as_bytes(), secret.as_bytes()) {
                return Err(TokenError::new("invalid_client", "wrong client secret"));
            }
            (id, false)
        } else {
            return Err(TokenError::new(
                "invalid_client",
                "client authentication is required (private_key_jwt or client_secret_basic)",
            ));
        };
        if p.client_id.as_deref().is_some_and(|id| id != client_id.0) {
            return Err(TokenError::new(
                "invalid_client",
                "client_id does not match the authenticated client",
            ));
        }
        Ok(client_id)
    }

    async fn verify_assertion(&self, assertion: &str) -> Result<String, TokenError> {
        #[derive(Deserialize)]
        struct Peek {
            iss: Option<String>,
        }
        #[derive(Deserialize)]
        struct Claims {
            iss: String,
            sub: String,
            exp: u64,
            jti: String,
        }
        let invalid = |m: &str| TokenError::new("invalid_client", m);
        let header = jose::peek_header(assertion)
            .map_err(|_| invalid("the client assertion is not a JWT"))?;
        if header.typ.as_deref().is_some_and(|t| !t.eq_ignore_ascii_case("JWT")) {
            return Err(invalid("the client assertion typ must be JWT"));
        }
        let peek: Peek = jose::peek_claims(assertion)
            .map_err(|_| invalid("the client assertion is not a JWT"))?;
        let client_id = peek.iss.ok_or_else(|| invalid("the client assertion has no iss"))?;
        let client = self.client(&client_id).ok_or_else(|| invalid("unknown client"))?;
        let jwks = match (&client.jwks, header.jku.as_deref()) {
            (None, _) => return Err(invalid("this client has no registered keys")),
            (Some(ClientJwks::Url(url)), jku) => {
                if jku.is_some_and(|j| j != url) {
                    return Err(invalid("jku is not the client's registered JWKS URL"));
                }
                self.fetch_jwks(url).await.map_err(|m| invalid(&m))?
            }
            (Some(ClientJwks::Inline(set)), None) => set.clone(),
            (Some(ClientJwks::Inline(_)), Some(_)) => {
                return Err(invalid("jku is not allowed for this client"))
            }
        };
        let token_endpoint = self.token_endpoint();
        let claims: Claims = jose::verify(
            assertion,
            &jwks,
            &jose::Expectations {
                issuers: &[client_id.as_str()],
                audiences: &[token_endpoint.as_str()],
                required: &["iss", "sub", "aud", "jti"],
                leeway: Some(5),
                ..Default::default()
            },
        )
        .map_err(|e| invalid(&format!("the client assertion was refused: {e}")))?;
        let now = jose::now();
        if claims.sub != claims.iss {
            return Err(invalid("the client assertion's sub must equal iss"));
        }
        if claims.exp > now + 300 + 5 {
            return Err(invalid("the client assertion's exp is more than five minutes ahead"));
        }
        let mut state = self.lock();
        state.jtis.retain(|_, exp| *exp + 5 >= now);
        let key = format!("{}\u{0}{}", claims.iss, claims.jti);
        if state.jtis.contains_key(&key) {
            return Err(invalid("the client assertion's jti was already used"));
        }
        state.jtis.insert(key, claims.exp);
        Ok(client_id)
    }

    async fn fetch_jwks(&self, url: &str) -> Result<jose::jwk::JwkSet, String> {
        let response = self
            .http
            .get(url)
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|_| "the client's JWKS URL could not be fetched".to_owned())?;
        if !response.status().is_success() {
            return Err(format!("the client's JWKS URL answered {}", response.status().as_u16()));
        }
        let body =
            fhir::http::read_capped(response, 256 * 1024).await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&body).map_err(|_| "the client's JWKS is not a JWK Set".to_owned())
    }
}

/// `Authorization: Basic` credentials, form-url-decoded as RFC 6749 §2.3.1 requires.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

impl IntoResponse for AuthorizeError {
    fn into_response(self) -> Response {
        match self {
            AuthorizeError::Page(status, message) => {
                (status, crate::pages::message_page("Sign-in request refused", &message))
                    .into_response()
            }
            AuthorizeError::Redirect { redirect_uri, state, error, description } => {
                let mut params =
                    vec![("error", error.to_owned()), ("error_description", description)];
                if let Some(state) = state {
                    params.push(("state", state));
                }
                redirect_with(&redirect_uri, &params)
            }
        }
    }
}

/// A 303 to `base` with `params` appended to its query.
pub fn redirect_with(base: &str, params: &[(&str, String)]) -> Response {
    match url::Url::parse(base) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
            Redirect::to(url.as_str()).into_response()
        }
        Err(_) => (StatusCode::BAD_REQUEST, "bad redirect URI").into_response(),
    }
}

/// Adds the token response headers (`Cache-Control: no-store`, `Pragma: no-cache`).
pub fn token_response(body: Value) -> Response {
    let mut r = Json(body).into_response();
    no_store(r.headers_mut());
    r
}
