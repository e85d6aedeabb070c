//! Member History's side of the sandbox: the switches that shape the simulated EHR and plan,
//! starting them with Member History registered, and the configuration file that points
//! Member History at them. The sandbox runs in its own process (`sandbox` binary) or, in
//! tests, in the test's; the app reads this file like any other (`server --config`).

use std::path::Path;

use url::Url;

use crate::{
    synthetic, AnswerStyle, CdsClientTrust, ClientJwks, ClientRegistration, Sandbox, SandboxConfig,
    SandboxError,
};

/// Member History's client id at the sandbox EHR and plan.
pub const CLIENT_ID: &str = "member-history";

/// How the sandbox's EHR and plan behave (every switch can also be set by environment).
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// The sandbox EHR's port (0 picks a free one).
    #[arg(long, env = "MH_SANDBOX_EHR_PORT", default_value_t = 8081)]
    pub sandbox_ehr_port: u16,

    /// Lifetime of the sandbox EHR's access tokens, in seconds.
    #[arg(long, env = "MH_SANDBOX_TOKEN_TTL", default_value_t = 3600)]
    pub sandbox_token_ttl: u64,

    /// How many synthetic patients the sandbox holds.
    #[arg(long, env = "MH_SANDBOX_PATIENTS", default_value_t = 12)]
    pub sandbox_patients: usize,

    /// The sandbox health plan's port (0 picks a free one).
    #[arg(long, env = "MH_SANDBOX_PLAN_PORT", default_value_t = 8082)]
    pub sandbox_plan_port: u16,

    /// Resources in each member's history at the plan (10000 for a big one).
    #[arg(long, env = "MH_SANDBOX_HISTORY_SIZE", default_value_t = 150)]
    pub sandbox_history_size: usize,

    /// How the plan points at the member's data: `pdex2` (a smart link with appContext;
    /// Member History reads the data with SMART Backend Services) or `stu1` (a card with the
    /// FHIR base and an access token).
    #[arg(long, env = "MH_SANDBOX_PLAN_STYLE", default_value = "pdex2", value_parser = ["pdex2", "stu1"])]
    pub sandbox_plan_style: String,

    /// The resource types the sandbox EHR accepts for writing (comma-separated; the rest goes
    /// into a document). Default: the clinical types, Provenance and DocumentReference.
    #[arg(long, env = "MH_SANDBOX_EHR_WRITABLE", value_delimiter = ',')]
    pub sandbox_ehr_writable: Option<Vec<String>>,

    /// The attachment types the sandbox EHR accepts in documents (comma-separated; default
    /// any), to watch the PDF → HTML → text fallback.
    #[arg(long, env = "MH_SANDBOX_EHR_ATTACHMENTS", value_delimiter = ',')]
    pub sandbox_ehr_attachments: Option<Vec<String>>,

    /// Put another FHIR server behind the sandbox EHR's authorization server (its base URL
    /// becomes the `iss` of launches and the `aud` of tokens). The real FHIR server suite
    /// runs Helios this way.
    #[arg(long, env = "MH_SANDBOX_EHR_FHIR_BASE")]
    pub sandbox_ehr_fhir_base: Option<Url>,

    /// The sandbox EHR refuses transactions (and leaves `transaction` out of its
    /// CapabilityStatement), as many EHRs do; Member History writes by batch or single creates.
    #[arg(long, env = "MH_SANDBOX_EHR_NO_TRANSACTIONS")]
    pub sandbox_ehr_no_transactions: bool,

    /// The sandbox EHR refuses batches too (with no transactions either, each resource is one
    /// conditional create).
    #[arg(long, env = "MH_SANDBOX_EHR_NO_BATCH")]
    pub sandbox_ehr_no_batch: bool,

    /// The sandbox EHR refuses a transaction with more than this many conditional entries
    /// (`too-costly`), as some servers do; Member History splits the write.
    #[arg(long, env = "MH_SANDBOX_EHR_MAX_CONDITIONAL_ENTRIES")]
    pub sandbox_ehr_max_conditional_entries: Option<usize>,

    /// The sandbox EHR's id_tokens have no `kid` and its JWKS key no `alg` or `use`, as
    /// OpenID Connect allows an issuer with one key.
    #[arg(long, env = "MH_SANDBOX_EHR_ID_TOKEN_WITHOUT_KID")]
    pub sandbox_ehr_id_token_without_kid: bool,
}

impl SandboxArgs {
    /// The defaults, on free ports.
    pub fn for_tests() -> Self {
        SandboxArgs {
            sandbox_ehr_port: 0,
            sandbox_token_ttl: 3600,
            sandbox_patients: 12,
            sandbox_plan_port: 0,
            sandbox_history_size: 150,
            sandbox_plan_style: "pdex2".into(),
            sandbox_ehr_writable: None,
            sandbox_ehr_attachments: None,
            sandbox_ehr_fhir_base: None,
            sandbox_ehr_no_transactions: false,
            sandbox_ehr_no_batch: false,
            sandbox_ehr_max_conditional_entries: None,
            sandbox_ehr_id_token_without_kid: false,
        }
    }
}

/// Member History as the sandbox knows it: where it is served, and its public keys when they
/// are given (else fetched from `{public_url}/.well-known/jwks.json`, as a real EHR would).
#[derive(Debug, Clone)]
pub struct AppRegistration {
    pub public_url: Url,
    pub jwks: Option<jose::jwk::JwkSet>,
}

impl AppRegistration {
    fn at(&self, path: &str) -> String {
        format!("{}/{path}", self.public_url.as_str().trim_end_matches('/'))
    }
}

/// Starts the sandbox EHR and plan with Member History registered at both.
pub async fn start(args: &SandboxArgs, app: &AppRegistration) -> Result<Sandbox, SandboxError> {
    let jwks_url = app.at(".well-known/jwks.json");
    let client = ClientRegistration {
        client_id: CLIENT_ID.into(),
        name: "Member History".into(),
        // The EHR launch's callback, and the member sign-in's at the plan.
        redirect_uris: vec![app.at("callback"), app.at("member-callback")],
        launch_url: app.at("launch"),
        jwks: Some(match &app.jwks {
            Some(jwks) => ClientJwks::Inline(jwks.clone()),
            None => ClientJwks::Url(jwks_url.clone()),
        }),
        client_secret: None,
    };
    let cds_trust = CdsClientTrust {
        issuer: app.public_url.as_str().trim_end_matches('/').to_owned(),
        jku: jwks_url,
        jwks: app.jwks.clone(),
    };
    Sandbox::start(SandboxConfig {
        ehr_port: args.sandbox_ehr_port,
        patients: args.sandbox_patients,
        access_token_ttl_secs: args.sandbox_token_ttl,
        clients: vec![client],
        plan_port: args.sandbox_plan_port,
        plan_style: if args.sandbox_plan_style == "stu1" {
            AnswerStyle::Stu1Token
        } else {
            AnswerStyle::Pdex2AppContext
        },
        history_size: args.sandbox_history_size,
        cds_clients: vec![cds_trust],
        ehr_writable: args.sandbox_ehr_writable.clone(),
        ehr_attachment_types: args.sandbox_ehr_attachments.clone(),
        ehr_transactions: !args.sandbox_ehr_no_transactions,
        ehr_batch: !args.sandbox_ehr_no_batch,
        ehr_max_conditional_entries: args.sandbox_ehr_max_conditional_entries,
        ehr_id_token_kid: !args.sandbox_ehr_id_token_without_kid,
        ehr_fhir_base: args
            .sandbox_ehr_fhir_base
            .as_ref()
            .map(|u| u.as_str().trim_end_matches('/').to_owned()),
        ..SandboxConfig::default()
    })
    .await
}

/// Member History's configuration file for this sandbox (see
/// `config/member-history.sample.toml` for what each field means).
pub fn app_config(sandbox: &Sandbox, public_url: &Url, data_dir: &Path) -> String {
    let quote = |s: &str| toml_string(s);
    format!(
        r#"# Written by the sandbox for the demo: Member History against the sandbox EHR and plan.
public_url = {public_url}
data_dir = {data_dir}

[[ehr]]
id = "sandbox-ehr"
name = "Sandbox EHR"
issuer = {issuer}
client_id = {client_id}
client_auth = {{ method = "private_key_jwt" }}
frame_ancestors = [{ehr_origin}]
own_organization = [{clinic}]
timeout_seconds = 30

[[payer]]
id = "sandbox-plan"
name = {plan_name}
payor_identifiers = [{payer_id}]
payor_names = [{plan_name}]
routes = ["provider_access", "cds_hooks"]
cds_base = {cds_base}
fhir_base = {fhir_base}
fhir_auth = {{ method = "backend_services", client_id = {client_id}, scope = "system/*.rs" }}
timeout_seconds = 15
record_identifier_system = {record_system}
push = {{ issuer = {push_issuer}, jwks_url = {push_jwks} }}
member_access = {{ client_id = {client_id} }}
"#,
        public_url = quote(public_url.as_str()),
        data_dir = quote(&data_dir.to_string_lossy()),
        issuer = quote(sandbox.ehr_fhir_base().as_str()),
        client_id = quote(CLIENT_ID),
        ehr_origin = quote(sandbox.ehr_url()),
        clinic = quote(&format!("{}|{}", synthetic::systems::NPI, synthetic::CLINIC_NPI)),
        plan_name = quote(synthetic::PLAN_NAME),
        payer_id = quote(&format!("{}|{}", synthetic::systems::PAYER_ID, synthetic::PLAN_PAYER_ID)),
        cds_base = quote(sandbox.plan_url()),
        fhir_base = quote(sandbox.plan_fhir_base()),
        record_system = quote(crate::history::code_systems::PLAN_RECORD),
        push_issuer = quote(sandbox.plan.push_issuer()),
        push_jwks = quote(&sandbox.plan.push_jwks_url()),
    )
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
