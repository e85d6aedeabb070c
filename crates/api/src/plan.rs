//! The plan's answer as the review page shows it.

use serde::{Deserialize, Serialize};

/// A configured health plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayerSummary {
    pub id: String,
    pub name: String,
    /// The routes to its members' history it offers, in the order the page offers them.
    pub routes: Vec<PlanRoute>,
    /// It pushes members' history to Member History (`Patient/$everything` Bundles).
    #[serde(default)]
    pub pushes: bool,
    /// Its members may sign in there and let Member History read their records.
    #[serde(default)]
    pub member_access: bool,
}

/// A way to a plan's member history (the configuration names them the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanRoute {
    /// Da Vinci PDex Provider Access API: `$provider-member-match`, then `$davinci-data-export`.
    ProviderAccess,
    /// The PDex `appointment-book` CDS Hooks member-history request, in place of the EMR.
    CdsHooks,
}

/// How the member will be named to the plan (Da Vinci PDex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberIdSource {
    /// The member id on the patient's Coverage.
    Coverage,
    /// No member id: the subscriber id plus the patient's demographics.
    SubscriberAndDemographics,
    /// Typed in by the clinician.
    Typed,
}

/// What Member History knows before asking the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Identification {
    /// Ready to ask `payer`.
    Ready {
        payer: PayerSummary,
        source: MemberIdSource,
        member_id: Option<String>,
        subscriber_id: Option<String>,
    },
    /// The patient's coverage is with plans Member History is not set up to ask.
    UnconfiguredPlan { plan_names: Vec<String>, payers: Vec<PayerSummary> },
    /// No coverage on file: the clinician picks the plan and types the member id.
    NoCoverage { payers: Vec<PayerSummary> },
    /// The app was opened from a plan's card: its data came with the launch.
    FromCardLink { payer: PayerSummary },
}

/// The review page's view of the plan: how to ask, and the answer so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStatus {
    pub identification: Identification,
    pub answer: Option<PlanAnswer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnswerOutcome {
    /// The plan found the member.
    Matched,
    /// The plan could not match the member; its cards say why.
    NotMatched,
}

/// The member as the plan knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanMember {
    pub name: String,
    pub birth_date: Option<String>,
    pub member_id: Option<String>,
    /// How many records the plan holds, when it said.
    pub records: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanAnswer {
    pub payer: PayerSummary,
    pub outcome: AnswerOutcome,
    pub cards: Vec<CardView>,
    /// What was changed or left out of the plan's answer, in plain words.
    pub notes: Vec<String>,
    pub member: Option<PlanMember>,
    /// Why the plan's data could not be read, if it could not.
    pub data_problem: Option<String>,
    /// The plan's member is not this patient: nothing of the plan's data is shown or written.
    pub member_mismatch: Option<MemberMismatch>,
}

/// The plan's member record did not match the patient in the chart (only which parts, never
/// the other record's values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberMismatch {
    pub fields: Vec<pdex::identity::IdentityField>,
    /// What did not match and what to do, in plain words.
    pub message: String,
}

/// A card, checked and made safe: `detail_html` is sanitised HTML, links are http(s).
/// How urgent a card is (CDS Hooks `indicator`), on the wire as `info`, `warning` or
/// `critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CardIndicator {
    Info,
    Warning,
    Critical,
}

impl CardIndicator {
    /// The CDS Hooks value (also the page's class name).
    pub fn as_str(self) -> &'static str {
        match self {
            CardIndicator::Info => "info",
            CardIndicator::Warning => "warning",
            CardIndicator::Critical => "critical",
        }
    }

    /// What the clinician reads.
    pub fn label(self) -> &'static str {
        match self {
            CardIndicator::Info => "Info",
            CardIndicator::Warning => "Warning",
            CardIndicator::Critical => "Critical",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardView {
    /// Position of the card in the answer (stable key for the page).
    pub index: usize,
    pub uuid: Option<String>,
    pub summary: String,
    pub detail_html: Option<String>,
    pub indicator: CardIndicator,
    pub source_label: String,
    pub source_url: Option<String>,
    pub suggestions: Vec<SuggestionView>,
    pub override_reasons: Vec<ReasonView>,
    pub links: Vec<LinkView>,
    pub feedback_allowed: bool,
    pub feedback: Option<CardFeedback>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuggestionView {
    pub uuid: Option<String>,
    pub label: String,
    pub recommended: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonView {
    pub code: String,
    pub display: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkKind {
    /// A web page, opened in a new tab.
    Web,
    /// A SMART app link pointing at the plan's data for this member: Member History follows it itself.
    PlanData,
    /// A SMART app link for another app: only the EHR can launch it.
    OtherApp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkView {
    pub label: String,
    pub url: String,
    pub kind: LinkKind,
}

/// What the clinician told the plan about a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CardFeedback {
    Accepted { suggestion: String },
    Dismissed { reason: Option<String> },
}

/// What a Provider Access export is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportPurpose {
    /// Everything the plan holds, to review and import.
    Download,
    /// Everything, to view only.
    Snapshot,
    /// What changed since this patient's last import.
    Delta,
}

/// How far a Provider Access request at a plan is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProviderAccessStage {
    /// The plan is matching the member (checking the treatment attestation).
    Matching,
    /// Matched; the plan is preparing the member's data.
    Exporting,
    /// The data is in: `resources` read, ready for review.
    Ready { resources: usize },
    /// The plan found no member for this patient (or one it may not share: the plan did not
    /// say which).
    NotMatched,
    /// The plan says the member has asked it not to share their data with providers.
    OptedOut,
    /// The request failed; `message` says why and what to do.
    Failed { message: String },
}

/// A Provider Access request as the page shows it: what was asked, when, by whom, how far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderAccessView {
    pub payer: PayerSummary,
    pub purpose: ExportPurpose,
    /// RFC 3339.
    pub asked_at: String,
    pub asked_by: Option<String>,
    pub stage: ProviderAccessStage,
    /// The plan's own words on its progress (`X-Progress`).
    pub progress: Option<String>,
    pub updated_at: String,
}

/// A member's history the plan pushed (a `Patient/$everything` Bundle), waiting for review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushedHistoryView {
    pub payer: PayerSummary,
    /// When Member History received it (RFC 3339).
    pub received_at: String,
    /// Records kept for review.
    pub resources: usize,
}

/// Member-authorized access at the patient's plan: the link the member signs in by, and how far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAccessView {
    pub payer: PayerSummary,
    /// Where the member signs in (open on this device, or on theirs).
    pub link: String,
    pub stage: MemberAccessStage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberAccessStage {
    /// Waiting for the member to sign in.
    Waiting,
    /// The member signed in and is this patient; `withheld` names what they chose not to share.
    Shared { withheld: Vec<String> },
    /// Nothing is shown: why, and what to do.
    Refused { message: String },
}
