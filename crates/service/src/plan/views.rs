//! What the page shows of the plan: how Member History will ask, and the answer so far.

use api::{
    CardFeedback, CardView, Identification, LinkKind, LinkView, PlanAnswer, PlanStatus, ReasonView,
    SuggestionView,
};
use cds_hooks::{pdex, CheckedCard, LinkType};

use super::access::follow_if_needed;
use super::identify::identify;
use crate::error::ServiceError;
use crate::launch_state::{MemberState, PlanState};
use crate::owned::OwnedLaunch;
use crate::state::PayerRuntime;

/// The plan status of a launch: how Member History will ask, and the answer so far.
pub async fn status(owned: &OwnedLaunch) -> Result<PlanStatus, ServiceError> {
    let snapshot = owned.snapshot().await;
    if let Some(plan) = &snapshot.plan {
        if let Some(payer) = owned.state().payer(&plan.payer_id) {
            let identification = if plan.hook_instance.is_none() {
                Identification::FromCardLink { payer: payer.summary() }
            } else {
                identify(owned, &snapshot).await?.0
            };
            let plan = follow_if_needed(owned, payer, plan.clone()).await;
            return Ok(PlanStatus { identification, answer: Some(answer_view(payer, &plan)) });
        }
    }
    let (identification, _) = identify(owned, &snapshot).await?;
    Ok(PlanStatus { identification, answer: None })
}

/// The page's view of a plan state.
pub fn answer_view(payer: &PayerRuntime, plan: &PlanState) -> PlanAnswer {
    let mut view = PlanAnswer {
        payer: payer.summary(),
        outcome: plan.member.outcome(),
        cards: Vec::new(),
        notes: Vec::new(),
        member: None,
        data_problem: None,
        member_mismatch: None,
    };
    if let MemberState::Mismatch(mismatch) = &plan.member {
        // The plan's cards are about its member, who is someone else: none of it is shown.
        view.member_mismatch = Some(mismatch.clone());
        return view;
    }
    view.cards = plan
        .cards
        .iter()
        .enumerate()
        .map(|(i, c)| card_view(payer, i, c, plan.feedback.get(&i)))
        .collect();
    view.notes = plan.notes.clone();
    match &plan.member {
        MemberState::Confirmed { member, .. } => view.member = Some(member.clone()),
        MemberState::NoData { problem, .. } => {
            view.data_problem = Some(problem.message(&payer.config.name))
        }
        _ => {}
    }
    view
}

pub(crate) fn card_view(
    payer: &PayerRuntime,
    index: usize,
    checked: &CheckedCard,
    feedback: Option<&CardFeedback>,
) -> CardView {
    let card = &checked.card;
    CardView {
        index,
        uuid: card.uuid.clone(),
        summary: card.summary.clone(),
        detail_html: card.detail.as_deref().map(cds_hooks::markdown::to_safe_html),
        indicator: match checked.indicator {
            cds_hooks::Indicator::Info => api::CardIndicator::Info,
            cds_hooks::Indicator::Warning => api::CardIndicator::Warning,
            cds_hooks::Indicator::Critical => api::CardIndicator::Critical,
        },
        source_label: card.source.label.clone(),
        source_url: card.source.url.clone(),
        suggestions: card
            .suggestions
            .iter()
            .map(|s| SuggestionView {
                uuid: s.uuid.clone(),
                label: s.label.clone(),
                recommended: s.is_recommended.unwrap_or(false),
            })
            .collect(),
        override_reasons: card
            .override_reasons
            .iter()
            .map(|r| ReasonView {
                code: r.code.clone(),
                display: r.display.clone().unwrap_or_else(|| r.code.clone()),
            })
            .collect(),
        links: card.links.iter().map(|l| link_view(payer, l)).collect(),
        feedback_allowed: checked.feedback_allowed,
        feedback: feedback.cloned(),
    }
}

/// A card link as the page offers it: a SMART link to this plan's own data opens here; any
/// other SMART link is another app's.
fn link_view(payer: &PayerRuntime, link: &cds_hooks::Link) -> LinkView {
    let kind = match link.link_type {
        LinkType::Absolute => LinkKind::Web,
        LinkType::Smart => {
            let ours =
                link.app_context.as_deref().and_then(pdex::pointer_from_app_context).is_some_and(
                    |p| fhir::base::same_server(payer.config.fhir_base.as_str(), &p.fhir_server),
                );
            if ours {
                LinkKind::PlanData
            } else {
                LinkKind::OtherApp
            }
        }
    };
    LinkView { label: link.label.clone(), url: link.url.clone(), kind }
}
