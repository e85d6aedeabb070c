//! Member histories a plan pushes (Da Vinci PDex §3-4-3: a `Patient/$everything` Bundle
//! sent over a secure channel). A configured plan POSTs the Bundle to `/pdex/push` with a
//! JWT signed by its registered key that names this endpoint, lives at most five minutes, is
//! used once, and carries the SHA-256 of the body it signs. The Bundle is read into review
//! items at once (one member's, as every export is) and kept in the durable queue under the
//! plan and the member's identifier; when a clinician next opens a patient whose coverage
//! names that member, the review offers it, after the same identity check as every route.
//! Nothing is stored from a push that is refused, and the same Bundle pushed twice is kept
//! once.

use std::time::{Duration, Instant};

use api::{HistoryView, PushedHistoryView};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest as _;

use crate::clock::now_rfc3339;
use crate::error::{Refusal, ServiceError};
use crate::launches::StoredItems;
use crate::owned::OwnedLaunch;
use crate::plan::identify::covering_plan;
use crate::provider_access::collect::Collector;
use crate::provider_access::AccessResult;
use crate::state::{AppState, PayerRuntime};

/// A push token may live at most this long (`exp` − `iat`).
const MAX_TOKEN_LIFETIME: i64 = 300;
/// A plan's keys are read again after this long, or sooner for a `kid` not seen yet.
const KEYS_TTL: Duration = Duration::from_secs(3600);
/// … but not more often than this (a stream of unknown `kid`s must not become a stream of
/// requests to the plan).
const KEYS_MIN_REFRESH: Duration = Duration::from_secs(60);
/// Entries of one pushed Bundle read at most.
const MAX_ENTRIES: usize = 200_000;

/// Why a push was refused: the plan gets the status and a sentence saying what to fix;
/// nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum PushRefusal {
    #[error("no bearer token")]
    NoToken,
    #[error("the token's issuer is not a plan configured to push")]
    UnknownPlan,
    #[error("the plan's keys could not be read: {0}")]
    Keys(String),
    #[error("token refused: {0}")]
    BadToken(String),
    #[error("the token does not sign this body")]
    WrongBody,
    #[error("the token was used before")]
    Replay,
    #[error("the body is over {0} bytes")]
    TooLarge(usize),
    #[error("the body is not application/fhir+json")]
    ContentType,
    #[error("not a FHIR Bundle: {0}")]
    Malformed(String),
    #[error("no member: {0}")]
    NoMember(&'static str),
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("the server is stopping")]
    Stopping,
}

impl PushRefusal {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            PushRefusal::NoToken
            | PushRefusal::UnknownPlan
            | PushRefusal::BadToken(_)
            | PushRefusal::WrongBody => 401,
            PushRefusal::Replay => 409,
            PushRefusal::TooLarge(_) => 413,
            PushRefusal::ContentType => 415,
            PushRefusal::Malformed(_) => 400,
            PushRefusal::NoMember(_) => 422,
            PushRefusal::Keys(_) | PushRefusal::Store(_) | PushRefusal::Stopping => 503,
        }
    }

    /// What the plan reads (no detail of ours, nothing of the Bundle's).
    pub fn message(&self) -> String {
        match self {
            PushRefusal::NoToken => "Send the push with Authorization: Bearer and a JWT signed with the plan's registered key.".into(),
            PushRefusal::UnknownPlan => "The token's iss is not a plan registered to push to Member History. Ask the Member History administrator to register the plan (payer push issuer and jwks_url).".into(),
            PushRefusal::Keys(_) => "Member History could not read the plan's public keys (its jwks_url) to check the signature. Nothing was stored; push again later.".into(),
            PushRefusal::BadToken(why) => format!("The push token was refused ({why}). Sign a new token: iss and sub the plan's registered issuer, aud this endpoint's URL, iat, exp at most 5 minutes later, a unique jti, and bundle_sha256."),
            PushRefusal::WrongBody => "The token's bundle_sha256 is not the SHA-256 (base64url, no padding) of this request's body. Sign the exact bytes sent.".into(),
            PushRefusal::Replay => "This push token was used before. Sign a new token (a new jti) for each push.".into(),
            PushRefusal::TooLarge(limit) => format!("The Bundle is larger than {limit} bytes. Push the member's history in parts (by date, with $everything's start and end)."),
            PushRefusal::ContentType => "Send the Bundle as Content-Type: application/fhir+json.".into(),
            PushRefusal::Malformed(why) => format!("The body is not a FHIR Bundle Member History can read ({why}). Push one member's Patient/$everything Bundle."),
            PushRefusal::NoMember(why) => format!("The Bundle does not name one member: {why}. Push one member's Patient/$everything Bundle, with their Patient and its member identifier (type MB) or their Coverage."),
            PushRefusal::Store(_) | PushRefusal::Stopping => "Member History could not store the push. Nothing was stored; push again later.".into(),
        }
    }
}

/// A push accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The push's id in the queue.
    pub id: String,
    /// `false` when the same Bundle was already held (it is kept once).
    pub new: bool,
    /// Records kept for review.
    pub resources: usize,
}

/// A push as the queue keeps it (sealed in the store).
#[derive(Serialize, Deserialize)]
struct Pushed {
    payer_id: String,
    /// What the member is known by at the plan, each a key the push is queued under: the
    /// Patient's member identifier (type MB), then the `subscriberId` of their Coverages.
    member_keys: Vec<String>,
    received_at: String,
    resources: usize,
    result: AccessResult,
}

/// The claims a push token carries (`aud` and `exp` are checked by the verifier).
#[derive(Debug, Deserialize)]
struct PushClaims {
    iss: String,
    sub: Option<String>,
    jti: String,
    iat: i64,
    exp: i64,
    bundle_sha256: String,
}

/// The key pushes are found by: one plan's member.
fn subject(payer_id: &str, member_id: &str) -> String {
    format!("{payer_id}|{member_id}")
}

/// A push whose token and headers checked out, holding one of the server's history-read
/// turns for its Bundle (parsing takes several times the Bundle's size): nothing of the
/// body is read before this.
#[derive(Debug)]
pub struct Authorized<'a> {
    payer: std::sync::Arc<PayerRuntime>,
    claims: PushClaims,
    _turn: tokio::sync::SemaphorePermit<'a>,
}

/// Checks a push's headers (`Authorization`, `Content-Type`) before its body is read.
pub async fn authorize<'a>(
    state: &'a AppState,
    authorization: Option<&str>,
    content_type: Option<&str>,
) -> Result<Authorized<'a>, PushRefusal> {
    let token = authorization
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(PushRefusal::NoToken)?;
    let (payer, claims) = verified(state, token).await?;
    let media = content_type.and_then(|c| c.split(';').next()).map(str::trim);
    if !matches!(media, Some("application/fhir+json" | "application/json")) {
        return Err(PushRefusal::ContentType);
    }
    let turn = state.history_reads.acquire().await.map_err(|_| PushRefusal::Stopping)?;
    Ok(Authorized { payer, claims, _turn: turn })
}

/// Receives the body of an authorized push (read within `limits.max_push_bytes`): the one
/// the token signs, one member's Bundle, a token not used before; queued once.
pub async fn accept(
    state: &AppState,
    authorized: Authorized<'_>,
    body: &[u8],
) -> Result<Received, PushRefusal> {
    let Authorized { payer, claims, .. } = &authorized;
    let digest = sha2::Sha256::digest(body);
    if base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest) != claims.bundle_sha256 {
        return Err(PushRefusal::WrongBody);
    }
    let pushed = read_bundle(state, payer, body)?;
    if !state.launches.store().first_use(&claims.iss, &claims.jti, claims.exp).await? {
        return Err(PushRefusal::Replay);
    }
    let resources = pushed.resources;
    let payload = serde_json::to_vec(&pushed).expect("a push serialises");
    // Queued under each key the member is known by: a chart whose coverage gives only the
    // subscriber id finds it too (the identity check decides at opening).
    let mut first = None;
    for (n, key) in pushed.member_keys.iter().enumerate() {
        let dedupe = match n {
            0 => format!("push:{}:{}", payer.config.id, claims.bundle_sha256),
            _ => format!("push:{}:{}:{key}", payer.config.id, claims.bundle_sha256),
        };
        let queued = state
            .launches
            .store()
            .enqueue(
                store::NewJob {
                    kind: store::JobKind::PushedHistory,
                    dedupe_key: Some(dedupe),
                    launch_id: None,
                    subject: Some(subject(&pushed.payer_id, key)),
                    payload: payload.clone(),
                    run_after: store::now(),
                    leased_to: None,
                },
                store::now(),
            )
            .await?;
        first.get_or_insert(queued);
    }
    let queued = first.ok_or(PushRefusal::NoMember("its Patient has no member identifier"))?;
    tracing::info!(payer = %payer.config.id, resources, new = queued.new, "member history pushed");
    Ok(Received { id: queued.id, new: queued.new, resources })
}

/// The plan whose registered key signed `token`, and the token's claims.
async fn verified(
    state: &AppState,
    token: &str,
) -> Result<(std::sync::Arc<PayerRuntime>, PushClaims), PushRefusal> {
    #[derive(Deserialize)]
    struct Issuer {
        iss: Option<String>,
    }
    // Unverified: only to know whose keys to verify with.
    let claimed = jose::peek_claims::<Issuer>(token)
        .map_err(|e| PushRefusal::BadToken(e.to_string()))?
        .iss
        .ok_or_else(|| PushRefusal::BadToken("no iss".into()))?;
    let payer = state
        .payers
        .iter()
        .find(|p| p.config.push.as_ref().is_some_and(|push| push.issuer == claimed))
        .cloned()
        .ok_or(PushRefusal::UnknownPlan)?;
    let audience = state.config.push_url().to_string();
    let verify = |keys: &jose::jwk::JwkSet| {
        jose::verify::<PushClaims>(
            token,
            keys,
            &jose::Expectations {
                issuers: &[claimed.as_str()],
                audiences: &[audience.as_str()],
                required: &["iss", "aud", "iat", "jti"],
                ..Default::default()
            },
        )
    };
    let keys = plan_keys(state, &payer, false).await?;
    let claims = match verify(&keys) {
        Err(jose::JoseError::UnknownKid(_) | jose::JoseError::NoMatchingKey(_)) => {
            // The plan may have rolled its key: read its keys again (rarely) and retry.
            verify(&plan_keys(state, &payer, true).await?)
        }
        other => other,
    }
    .map_err(|e| PushRefusal::BadToken(e.to_string()))?;
    if claims.sub.as_deref().is_some_and(|sub| sub != claims.iss) {
        return Err(PushRefusal::BadToken("sub is not the issuer".into()));
    }
    if claims.exp - claims.iat > MAX_TOKEN_LIFETIME {
        return Err(PushRefusal::BadToken("it lives more than 5 minutes".into()));
    }
    if claims.iat > store::now() + 60 {
        return Err(PushRefusal::BadToken("iat is in the future".into()));
    }
    if claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err(PushRefusal::BadToken("jti is empty or over 256 characters".into()));
    }
    Ok((payer, claims))
}

/// The plan's published keys, cached; `again` reads them anew unless read a moment ago.
async fn plan_keys(
    state: &AppState,
    payer: &PayerRuntime,
    again: bool,
) -> Result<jose::jwk::JwkSet, PushRefusal> {
    let mut cached = payer.push_keys.lock().await;
    if let Some((at, keys)) = cached.as_ref() {
        let fresh = at.elapsed() < if again { KEYS_MIN_REFRESH } else { KEYS_TTL };
        if fresh {
            return Ok(keys.clone());
        }
    }
    let url =
        payer.config.push.as_ref().map(|p| p.jwks_url.clone()).ok_or(PushRefusal::UnknownPlan)?;
    let keys = smart::http::fetch_jwks(&state.http, url.as_str())
        .await
        .map_err(|e| PushRefusal::Keys(e.to_string()))?;
    *cached = Some((Instant::now(), keys.clone()));
    Ok(keys)
}

/// The Bundle read into one member's review items.
fn read_bundle(state: &AppState, payer: &PayerRuntime, body: &[u8]) -> Result<Pushed, PushRefusal> {
    let mut bundle: Value = serde_json::from_slice(body)
        .map_err(|e| PushRefusal::Malformed(format!("not JSON: {e}")))?;
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(PushRefusal::Malformed("its resourceType is not Bundle".into()));
    }
    let mut resources: Vec<Value> = match bundle.get_mut("entry").map(Value::take) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(entries)) => entries
            .into_iter()
            .filter_map(|mut entry| entry.get_mut("resource").map(Value::take))
            .filter(|r| r.get("resourceType").and_then(Value::as_str).is_some())
            .collect(),
        Some(_) => return Err(PushRefusal::Malformed("entry is not an array".into())),
    };
    if resources.len() > MAX_ENTRIES {
        return Err(PushRefusal::Malformed(format!("it has more than {MAX_ENTRIES} entries")));
    }
    // Whose subscriber ids the Coverages give (kept for the member's once known).
    let subscribers: Vec<(String, String)> = resources
        .iter()
        .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("Coverage"))
        .filter_map(|c| {
            let beneficiary = c.pointer("/beneficiary/reference")?.as_str()?;
            let subscriber = cds_hooks::pdex::subscriber_id(c)?;
            Some((beneficiary.to_owned(), subscriber.to_owned()))
        })
        .collect();
    // Context first, Provenance last: each resource is resolved as it is read.
    resources.sort_by_key(|r| {
        pdex::normalise::read_order(r.get("resourceType").and_then(Value::as_str).unwrap_or(""))
    });
    let mut collector = Collector::new(None, state.config.limits.review_items);
    for resource in resources {
        collector.add(resource);
    }
    let collected = collector.finish(&payer.config.name, "pushed history");
    match collected.patients {
        0 => return Err(PushRefusal::NoMember("it holds no Patient")),
        1 => {}
        _ => return Err(PushRefusal::NoMember("it holds more than one Patient")),
    }
    let plan_patient =
        collected.plan_patient.ok_or(PushRefusal::NoMember("its Patient has no id"))?;
    let own = collected.member.as_deref().map(|m| format!("Patient/{m}")).unwrap_or_default();
    let mut member_keys: Vec<String> =
        cds_hooks::pdex::member_id(&plan_patient).map(str::to_owned).into_iter().collect();
    for (beneficiary, subscriber) in subscribers {
        let theirs = fhir::Reference::parse(&beneficiary).local().is_some_and(|r| r == own);
        if theirs && !member_keys.contains(&subscriber) {
            member_keys.push(subscriber);
        }
    }
    if member_keys.is_empty() {
        return Err(PushRefusal::NoMember(
            "its Patient has no member identifier and no Coverage of theirs a subscriber id",
        ));
    }
    let resources = collected.items.len();
    Ok(Pushed {
        payer_id: payer.config.id.clone(),
        member_keys,
        received_at: now_rfc3339(),
        resources,
        result: AccessResult {
            member: collected.member,
            plan_patient: Some(plan_patient),
            items: StoredItems::from(collected.items),
            notes: collected.notes,
        },
    })
}

/// The newest push about the launched patient: their coverage's plan and member (member id,
/// else subscriber id). Only the coverage names whose pushes to look for; the identity check
/// at [`open`] decides whether it is this patient's.
async fn newest(
    owned: &OwnedLaunch,
) -> Result<Option<(std::sync::Arc<PayerRuntime>, store::JobRecord, Pushed)>, ServiceError> {
    let Some((payer, found)) = covering_plan(owned).await? else { return Ok(None) };
    if payer.config.push.is_none() {
        return Ok(None);
    }
    let subscriber =
        found.coverage.as_ref().and_then(cds_hooks::pdex::subscriber_id).map(str::to_owned);
    let store = owned.state().launches.store();
    for member_id in found.member_id.iter().chain(subscriber.iter()) {
        let key = subject(&payer.config.id, member_id);
        let records = store.jobs_about(store::JobKind::PushedHistory, &key, 1).await?;
        for record in records {
            let Ok(pushed) = serde_json::from_slice::<Pushed>(&record.payload) else { continue };
            // The subject names the member; the payload must agree (never another's).
            if pushed.payer_id == payer.config.id && pushed.member_keys.contains(member_id) {
                return Ok(Some((payer, record, pushed)));
            }
        }
    }
    Ok(None)
}

/// The newest history the patient's plan pushed for them, if any.
pub async fn status(owned: &OwnedLaunch) -> Result<Option<PushedHistoryView>, ServiceError> {
    Ok(newest(owned).await?.map(|(payer, _, pushed)| PushedHistoryView {
        payer: payer.summary(),
        received_at: pushed.received_at,
        resources: pushed.resources,
    }))
}

/// Opens the newest pushed history of the launched patient for review, after the identity
/// check (as a Provider Access result is).
pub async fn open(owned: &OwnedLaunch) -> Result<HistoryView, ServiceError> {
    let (payer, record, pushed) = newest(owned).await?.ok_or(Refusal::NoPushedHistory)?;
    let origin = format!("push:{}", record.id);
    crate::provider_access::review_result(owned, &payer, origin, pushed.result, false).await
}
