//! The SMART App Launch client: authorize URL, callback checks, code exchange, refresh and
//! backend services. OAuth mechanics come from the `oauth2` crate; what SMART adds (`aud`,
//! `launch`, `private_key_jwt`, the launch context in the token response) is layered on top.

use std::sync::Arc;

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError,
    Scope, StandardRevocableToken, TokenUrl,
};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::discovery::SmartConfiguration;
pub use crate::error::SmartError;
use crate::secret::Secret;
use crate::token::{OAuthTokenResponse, TokenResponse};

/// `client_assertion_type` for `private_key_jwt` (RFC 7523).
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long a pending authorization (state + PKCE verifier) stays valid.
pub const PENDING_TTL_SECS: u64 = 600;

/// Error codes of RFC 6749 (§4.1.2.1, §5.2), RFC 6750 and OpenID Connect Core (§3.1.2.6).
const OAUTH_ERROR_CODES: &[&str] = &[
    "invalid_request",
    "unauthorized_client",
    "access_denied",
    "unsupported_response_type",
    "invalid_scope",
    "server_error",
    "temporarily_unavailable",
    "invalid_client",
    "invalid_grant",
    "unsupported_grant_type",
    "invalid_token",
    "insufficient_scope",
    "interaction_required",
    "login_required",
    "account_selection_required",
    "consent_required",
    "invalid_request_uri",
    "invalid_request_object",
    "request_not_supported",
    "request_uri_not_supported",
    "registration_not_supported",
];

/// An OAuth `error` value from outside (a redirect's query, a token endpoint's body), reduced
/// to what is safe in a log line: a registered code as it is; anything else to at most 40
/// characters of `[A-Za-z0-9_.-]`, marked as unregistered.
pub fn oauth_error_code(raw: &str) -> String {
    if OAUTH_ERROR_CODES.contains(&raw) {
        return raw.to_owned();
    }
    let kept: String =
        raw.chars().filter(|c| c.is_ascii_alphanumeric() || "_.-".contains(*c)).take(40).collect();
    format!("unregistered error code `{kept}`")
}

/// Outside free text made safe to keep: control characters replaced by spaces, at most
/// `max` characters.
pub fn log_safe(raw: &str, max: usize) -> String {
    raw.chars().take(max).map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// How the app authenticates to the token endpoint.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// `private_key_jwt` (client-confidential-asymmetric), signed with our ES384/RS384 key.
    PrivateKeyJwt { key: Arc<jose::SigningKey> },
    /// `client_secret_basic` (client-confidential-symmetric).
    ClientSecretBasic { secret: Secret },
    /// A public client (PKCE only).
    Public,
}

/// What starts an authorization: the issuer, the EHR's `launch` (EHR launch only) and scopes.
#[derive(Debug, Clone, Copy)]
pub struct LaunchRequest<'a> {
    pub iss: &'a Url,
    pub launch: Option<&'a str>,
    pub scope: &'a str,
}

/// What the app remembers (server side) between the redirect to `authorize` and the callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingAuthorization {
    pub state: Secret,
    pub code_verifier: Secret,
    pub iss: String,
    pub scope: String,
    pub created_at: u64,
    pub ehr_launch: bool,
    /// The OpenID Connect `nonce` sent when the scope asks for an id_token; the id_token must
    /// carry it back (a replayed id_token from another sign-in fails).
    #[serde(default)]
    pub nonce: Option<Secret>,
}

/// The query of the redirect back to the app.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// Claims the app reads from a verified id_token.
#[derive(Debug, Clone, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    #[serde(rename = "fhirUser")]
    pub fhir_user: Option<String>,
    pub name: Option<String>,
    pub nonce: Option<String>,
}

type SmartOAuthClient<HasAuth, HasToken> = oauth2::Client<
    BasicErrorResponse,
    OAuthTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    HasAuth,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    HasToken,
>;

/// A SMART client registration at one EHR.
#[derive(Debug, Clone)]
pub struct SmartClient {
    client_id: String,
    redirect_uri: Url,
    auth: ClientAuth,
    http: reqwest::Client,
}

impl SmartClient {
    /// `http` must not follow redirects (see `fhir::http::client`).
    pub fn new(
        client_id: String,
        redirect_uri: Url,
        auth: ClientAuth,
        http: reqwest::Client,
    ) -> Self {
        Self { client_id, redirect_uri, auth, http }
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    fn oauth(&self) -> SmartOAuthClient<EndpointNotSet, EndpointNotSet> {
        let client = oauth2::Client::new(ClientId::new(self.client_id.clone()))
            .set_redirect_uri(RedirectUrl::from_url(self.redirect_uri.clone()));
        match &self.auth {
            ClientAuth::ClientSecretBasic { secret } => client
                .set_client_secret(ClientSecret::new(secret.expose().to_owned()))
                .set_auth_type(AuthType::BasicAuth),
            _ => client.set_auth_type(AuthType::RequestBody),
        }
    }

    fn token_client(
        &self,
        config: &SmartConfiguration,
    ) -> Result<SmartOAuthClient<EndpointNotSet, EndpointSet>, SmartError> {
        let token_url = TokenUrl::new(config.token_endpoint.clone())
            .map_err(|_| SmartError::Discovery { reason: "token_endpoint is not a URL".into() })?;
        Ok(self.oauth().set_token_uri(token_url))
    }

    /// Builds the authorization redirect (PKCE S256, 256-bit `state`, `aud` = the issuer,
    /// `launch` for an EHR launch) and what must be kept until the callback.
    pub fn authorize(
        &self,
        config: &SmartConfiguration,
        request: LaunchRequest<'_>,
        now: u64,
    ) -> Result<(Url, PendingAuthorization), SmartError> {
        config.check_for_app_launch()?;
        let auth_url =
            config.authorization_endpoint.clone().and_then(|u| AuthUrl::new(u).ok()).ok_or_else(
                || SmartError::Discovery { reason: "authorization_endpoint is not a URL".into() },
            )?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let oauth = self.oauth().set_auth_uri(auth_url);
        let mut builder = oauth
            .authorize_url(|| CsrfToken::new_random_len(32))
            .add_scopes(request.scope.split_whitespace().map(|s| Scope::new(s.to_owned())))
            .set_pkce_challenge(challenge)
            .add_extra_param("aud", request.iss.as_str().trim_end_matches('/'));
        if let Some(launch) = request.launch {
            builder = builder.add_extra_param("launch", launch);
        }
        let nonce = request
            .scope
            .split_whitespace()
            .any(|s| s == "openid")
            .then(|| CsrfToken::new_random_len(32).secret().clone());
        if let Some(nonce) = &nonce {
            builder = builder.add_extra_param("nonce", nonce.clone());
        }
        let (url, state) = builder.url();
        let pending = PendingAuthorization {
            state: Secret::new(state.secret().clone()),
            code_verifier: Secret::new(verifier.secret().clone()),
            iss: request.iss.as_str().trim_end_matches('/').to_owned(),
            scope: request.scope.to_owned(),
            created_at: now,
            ehr_launch: request.launch.is_some(),
            nonce: nonce.map(Secret::new),
        };
        Ok((url, pending))
    }

    /// Matches a callback to one pending authorization by `state` (compared in constant time)
    /// before looking at anything else — an `error` response must carry our state too — and
    /// returns its index and the authorization code.
    pub fn check_callback(
        pending: &[PendingAuthorization],
        params: &CallbackParams,
        now: u64,
    ) -> Result<(usize, String), SmartError> {
        let state =
            params.state.as_deref().filter(|s| !s.is_empty()).ok_or(SmartError::StateMissing)?;
        let index = pending
            .iter()
            .position(|p| constant_time_eq(p.state.expose().as_bytes(), state.as_bytes()))
            .ok_or(SmartError::StateMismatch)?;
        if now.saturating_sub(pending[index].created_at) > PENDING_TTL_SECS {
            return Err(SmartError::AuthorizationExpired);
        }
        if let Some(error) = &params.error {
            // The description is free text from outside: it is neither logged nor shown.
            return Err(SmartError::Denied {
                error: oauth_error_code(error),
                description: params.error_description.as_deref().map(|d| log_safe(d, 200)),
            });
        }
        let code = params.code.clone().filter(|c| !c.is_empty()).ok_or(SmartError::CodeMissing)?;
        Ok((index, code))
    }

    /// Exchanges the authorization code (with the PKCE verifier) for tokens.
    pub async fn exchange_code(
        &self,
        config: &SmartConfiguration,
        pending: &PendingAuthorization,
        code: &str,
    ) -> Result<TokenResponse, SmartError> {
        let client = self.token_client(config)?;
        let mut request = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pending.code_verifier.expose().to_owned()));
        for (name, value) in self.assertion_params(config)? {
            request = request.add_extra_param(name, value);
        }
        request.request_async(&self.http).await.map(Into::into).map_err(token_error)
    }

    /// Uses the refresh token for a new access token.
    pub async fn refresh(
        &self,
        config: &SmartConfiguration,
        refresh_token: &Secret,
    ) -> Result<TokenResponse, SmartError> {
        let client = self.token_client(config)?;
        let token = RefreshToken::new(refresh_token.expose().to_owned());
        let mut request = client.exchange_refresh_token(&token);
        for (name, value) in self.assertion_params(config)? {
            request = request.add_extra_param(name, value);
        }
        request.request_async(&self.http).await.map(Into::into).map_err(token_error)
    }

    /// SMART Backend Services: `client_credentials` with `private_key_jwt`.
    pub async fn client_credentials(
        &self,
        config: &SmartConfiguration,
        scope: &str,
    ) -> Result<TokenResponse, SmartError> {
        let client = self.token_client(config)?;
        let mut request = client
            .exchange_client_credentials()
            .add_scopes(scope.split_whitespace().map(|s| Scope::new(s.to_owned())));
        for (name, value) in self.assertion_params(config)? {
            request = request.add_extra_param(name, value);
        }
        request.request_async(&self.http).await.map(Into::into).map_err(token_error)
    }

    /// The `client_assertion` parameters for `private_key_jwt`; none for other methods.
    fn assertion_params(
        &self,
        config: &SmartConfiguration,
    ) -> Result<Vec<(&'static str, String)>, SmartError> {
        let ClientAuth::PrivateKeyJwt { key } = &self.auth else { return Ok(Vec::new()) };
        let assertion = client_assertion(key, &self.client_id, &config.token_endpoint)?;
        Ok(vec![
            ("client_assertion_type", JWT_BEARER_ASSERTION.to_owned()),
            ("client_assertion", assertion),
        ])
    }

    /// Verifies an id_token against the EHR's `jwks_uri` (`iss` = the configuration's
    /// `issuer`, `aud` = our client id, the header's `kid` or else each key of the matching
    /// type, and the `nonce` when we sent one) and returns its claims.
    pub async fn verify_id_token(
        &self,
        config: &SmartConfiguration,
        id_token: &Secret,
        expected_nonce: Option<&Secret>,
    ) -> Result<IdTokenClaims, SmartError> {
        let jwks_uri = config
            .jwks_uri
            .as_deref()
            .ok_or_else(|| SmartError::IdToken("the EHR publishes no jwks_uri".into()))?;
        let jwks = crate::http::fetch_jwks(&self.http, jwks_uri).await?;
        let issuers: Vec<&str> = config.issuer.as_deref().into_iter().collect();
        let claims = jose::verify::<IdTokenClaims>(
            id_token.expose(),
            &jwks,
            &jose::Expectations {
                issuers: &issuers,
                audiences: &[self.client_id.as_str()],
                required: &["iss", "sub", "aud"],
                algorithms: &jose::ID_TOKEN_ALGORITHMS,
                ..Default::default()
            },
        )
        .map_err(|e| SmartError::IdToken(e.to_string()))?;
        if let Some(expected) = expected_nonce {
            let sent_back = claims.nonce.as_deref().unwrap_or_default();
            if !constant_time_eq(expected.expose().as_bytes(), sent_back.as_bytes()) {
                return Err(SmartError::IdToken("the nonce does not match this sign-in".into()));
            }
        }
        Ok(claims)
    }
}

/// The `private_key_jwt` client assertion (SMART client-confidential-asymmetric): `iss` and
/// `sub` = client id, `aud` = the token endpoint, `exp` under 5 minutes ahead, a fresh `jti`.
pub fn client_assertion(
    key: &jose::SigningKey,
    client_id: &str,
    token_endpoint: &str,
) -> Result<String, jose::JoseError> {
    #[derive(Serialize)]
    struct Claims<'a> {
        iss: &'a str,
        sub: &'a str,
        aud: &'a str,
        exp: u64,
        iat: u64,
        jti: String,
    }
    let now = jose::now();
    key.sign(
        &Claims {
            iss: client_id,
            sub: client_id,
            aud: token_endpoint,
            exp: now + 240,
            iat: now,
            jti: jose::new_jti(),
        },
        None,
    )
}

fn token_error<E: std::error::Error>(e: RequestTokenError<E, BasicErrorResponse>) -> SmartError {
    match e {
        RequestTokenError::ServerResponse(response) => {
            SmartError::TokenRefused { error: oauth_error_code(response.error().as_ref()) }
        }
        RequestTokenError::Request(e) => SmartError::Unreachable(e.to_string()),
        // The body may hold tokens: only the parser's message is kept.
        RequestTokenError::Parse(e, _body) => SmartError::InvalidTokenResponse(e.to_string()),
        RequestTokenError::Other(m) => SmartError::InvalidTokenResponse(m),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn outside_oauth_errors_are_reduced_to_a_code() {
        assert_eq!(oauth_error_code("access_denied"), "access_denied");
        let forged = oauth_error_code("x\n2026-12-03T00:00:00Z  INFO forged\r\u{1b}[31mred");
        assert!(!forged.chars().any(char::is_control), "{forged}");
        assert!(!forged.contains(' ') || forged.starts_with("unregistered error code"));
        assert!(forged.len() < 80);
        assert_eq!(log_safe("a\nb\u{1b}c", 10), "a b c");
        assert_eq!(log_safe(&"é".repeat(500), 200).chars().count(), 200);
    }

    fn config() -> SmartConfiguration {
        SmartConfiguration {
            authorization_endpoint: Some("https://ehr.example/auth/authorize".into()),
            token_endpoint: "https://ehr.example/auth/token".into(),
            code_challenge_methods_supported: vec!["S256".into()],
            capabilities: vec!["launch-ehr".into()],
            ..Default::default()
        }
    }

    fn client() -> SmartClient {
        SmartClient::new(
            "member-history".into(),
            Url::parse("https://app.example/callback").unwrap(),
            ClientAuth::Public,
            reqwest::Client::new(),
        )
    }

    #[test]
    fn authorize_url_carries_every_required_parameter() {
        let iss = Url::parse("https://ehr.example/fhir").unwrap();
        let scope = "launch openid fhirUser patient/Patient.rs";
        let (url, pending) = client()
            .authorize(&config(), LaunchRequest { iss: &iss, launch: Some("L123"), scope }, 1000)
            .unwrap();
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(url.as_str().split('?').next(), Some("https://ehr.example/auth/authorize"));
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "member-history");
        assert_eq!(q["redirect_uri"], "https://app.example/callback");
        assert_eq!(q["launch"], "L123");
        assert_eq!(q["scope"], scope);
        assert_eq!(q["aud"], "https://ehr.example/fhir");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["state"], pending.state.expose());
        // 32 random bytes, base64url without padding: 43 characters, 256 bits.
        assert_eq!(q["state"].len(), 43);
        let expected = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
            pending.code_verifier.expose().to_owned(),
        ));
        assert_eq!(&q["code_challenge"], expected.as_str());
        assert!(pending.ehr_launch);
        // openid in the scope: a fresh nonce, kept for the id_token check.
        assert_eq!(Some(q["nonce"].as_str()), pending.nonce.as_ref().map(Secret::expose));
        assert_eq!(q["nonce"].len(), 43);
    }

    #[test]
    fn standalone_authorize_url_has_no_launch() {
        let iss = Url::parse("https://ehr.example/fhir").unwrap();
        let (url, pending) = client()
            .authorize(
                &config(),
                LaunchRequest { iss: &iss, launch: None, scope: "launch/patient" },
                0,
            )
            .unwrap();
        assert!(!url.query_pairs().any(|(k, _)| k == "launch"));
        assert!(!pending.ehr_launch);
        // No openid: no id_token, so no nonce.
        assert!(!url.query_pairs().any(|(k, _)| k == "nonce"));
        assert!(pending.nonce.is_none());
    }

    #[test]
    fn states_are_fresh_each_time() {
        let iss = Url::parse("https://ehr.example/fhir").unwrap();
        let req = LaunchRequest { iss: &iss, launch: None, scope: "launch/patient" };
        let (_, a) = client().authorize(&config(), req, 0).unwrap();
        let (_, b) = client().authorize(&config(), req, 0).unwrap();
        assert_ne!(a.state, b.state);
        assert_ne!(a.code_verifier, b.code_verifier);
    }

    #[test]
    fn pkce_matches_rfc7636_appendix_b() {
        let verifier = PkceCodeVerifier::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into());
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&verifier);
        assert_eq!(challenge.as_str(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert_eq!(challenge.method().as_str(), "S256");
    }

    fn pending(state: &str, created_at: u64) -> PendingAuthorization {
        PendingAuthorization {
            state: Secret::new(state),
            code_verifier: Secret::new("v"),
            iss: "https://ehr.example/fhir".into(),
            scope: "launch".into(),
            created_at,
            ehr_launch: true,
            nonce: None,
        }
    }

    fn params(state: Option<&str>, code: Option<&str>, error: Option<&str>) -> CallbackParams {
        CallbackParams {
            state: state.map(Into::into),
            code: code.map(Into::into),
            error: error.map(Into::into),
            error_description: None,
        }
    }

    #[test]
    fn callback_state_is_checked() {
        let list = [pending("aaa", 100), pending("bbb", 100)];
        assert_eq!(
            SmartClient::check_callback(&list, &params(Some("bbb"), Some("c1"), None), 120)
                .unwrap(),
            (1, "c1".to_owned())
        );
        assert!(matches!(
            SmartClient::check_callback(&list, &params(Some("zzz"), Some("c1"), None), 120),
            Err(SmartError::StateMismatch)
        ));
        assert!(matches!(
            SmartClient::check_callback(&list, &params(None, Some("c1"), None), 120),
            Err(SmartError::StateMissing)
        ));
        assert!(matches!(
            SmartClient::check_callback(&[], &params(Some("aaa"), Some("c1"), None), 120),
            Err(SmartError::StateMismatch)
        ));
    }

    #[test]
    fn callback_errors_need_our_state_and_expire() {
        let list = [pending("aaa", 100)];
        let denied = SmartClient::check_callback(
            &list,
            &params(Some("aaa"), None, Some("access_denied")),
            120,
        )
        .unwrap_err();
        assert_eq!(denied.code(), "consent_denied");
        // An error redirect with someone else's state is a state mismatch, not a denial.
        assert!(matches!(
            SmartClient::check_callback(
                &list,
                &params(Some("x"), None, Some("access_denied")),
                120
            ),
            Err(SmartError::StateMismatch)
        ));
        assert!(matches!(
            SmartClient::check_callback(
                &list,
                &params(Some("aaa"), Some("c"), None),
                100 + PENDING_TTL_SECS + 1
            ),
            Err(SmartError::AuthorizationExpired)
        ));
    }

    #[test]
    fn client_assertion_has_the_smart_claims() {
        let key = jose::SigningKey::generate_es384().unwrap();
        let jwt =
            client_assertion(&key, "member-history", "https://ehr.example/auth/token").unwrap();
        let header = jose::peek_header(&jwt).unwrap();
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        #[derive(Deserialize)]
        struct C {
            iss: String,
            sub: String,
            aud: String,
            exp: u64,
            jti: String,
        }
        let c: C = jose::verify(
            &jwt,
            &key.jwks(),
            &jose::Expectations {
                audiences: &["https://ehr.example/auth/token"],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((c.iss.as_str(), c.sub.as_str()), ("member-history", "member-history"));
        assert_eq!(c.aud, "https://ehr.example/auth/token");
        assert!(c.exp <= jose::now() + 300);
        assert!(!c.jti.is_empty());
    }
}
