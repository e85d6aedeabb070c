//! CDS Hooks feedback: what the clinician did with a card, told to the plan and recorded on
//! the same card of the same answer.

use api::{CardFeedback, CardView};
use cds_hooks::CheckedCard;

use super::views::card_view;
use crate::clock::now_rfc3339;
use crate::error::{PlanFailure, Refusal, ServiceError};
use crate::owned::OwnedLaunch;
use crate::state::PayerRuntime;

/// What the clinician did with a card.
#[derive(Debug, Clone)]
pub enum FeedbackInput {
    Accept { suggestion: String },
    Dismiss { reason: Option<String>, comment: Option<String> },
}

/// Sends CDS Hooks feedback for card `index` of the launch's answer.
pub async fn send_feedback(
    owned: &OwnedLaunch,
    index: usize,
    input: FeedbackInput,
) -> Result<CardView, ServiceError> {
    let (_, payer) = owned.plan().await?;
    feedback_for_launch(owned, &payer, index, input).await
}

/// Feedback on card `index` of the answer `payer` gave this launch.
pub(crate) async fn feedback_for_launch(
    owned: &OwnedLaunch,
    payer: &PayerRuntime,
    index: usize,
    input: FeedbackInput,
) -> Result<CardView, ServiceError> {
    let plan = owned.snapshot().await.plan.ok_or(Refusal::AskPlanFirst)?;
    let checked = plan.cards.get(index).ok_or(Refusal::NoSuchCard)?;
    let uuid = match (&checked.card.uuid, checked.feedback_allowed) {
        (Some(uuid), true) => uuid.clone(),
        _ => return Err(Refusal::CardTakesNoFeedback.into()),
    };
    let service_id = plan.service_id.clone().ok_or(Refusal::NoHookCall)?;
    let (item, recorded) = feedback_item(checked, uuid, &input)?;
    let card_uuid = item.card.clone();
    payer
        .cds
        .feedback(
            &payer.config.cds_base,
            &service_id,
            &cds_hooks::FeedbackRequest { feedback: vec![item] },
        )
        .await
        .map_err(|e| ServiceError::Plan {
            plan: payer.config.name.clone(),
            cause: PlanFailure::Hook(e),
        })?;
    // The launch may have changed while the plan was asked (another tab asked the plan again):
    // record the feedback only on the same card of the same plan's answer.
    owned
        .update(|launch| {
            let stored = launch
                .plan
                .as_mut()
                .filter(|p| {
                    p.payer_id == plan.payer_id && p.service_id.as_deref() == Some(&service_id)
                })
                .ok_or(ServiceError::Stale)?;
            let card = stored
                .cards
                .get(index)
                .filter(|c| c.card.uuid.as_deref() == Some(card_uuid.as_str()))
                .ok_or(ServiceError::Stale)?;
            let view = card_view(payer, index, card, Some(&recorded));
            stored.feedback.insert(index, recorded.clone());
            Ok(view)
        })
        .await
}

/// The feedback message for one card, and what the launch records of it. Checks the chosen
/// suggestion or override reason is one the card offers.
fn feedback_item(
    checked: &CheckedCard,
    uuid: String,
    input: &FeedbackInput,
) -> Result<(cds_hooks::Feedback, CardFeedback), ServiceError> {
    let card = &checked.card;
    let (outcome, accepted, override_reason, recorded) = match input {
        FeedbackInput::Accept { suggestion } => {
            let found = card.suggestions.iter().find(|s| s.uuid.as_deref() == Some(suggestion));
            let label = found.map(|s| s.label.clone()).ok_or(Refusal::NoSuchSuggestion)?;
            let accepted = vec![cds_hooks::AcceptedSuggestion { id: suggestion.clone() }];
            (
                cds_hooks::Outcome::Accepted,
                accepted,
                None,
                CardFeedback::Accepted { suggestion: label },
            )
        }
        FeedbackInput::Dismiss { reason, comment } => {
            let coding = match reason {
                Some(code) => Some(
                    card.override_reasons
                        .iter()
                        .find(|r| &r.code == code)
                        .cloned()
                        .ok_or(Refusal::NoSuchReason)?,
                ),
                None => None,
            };
            let comment = comment
                .as_deref()
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(|c| c.chars().take(500).collect::<String>());
            let display =
                coding.as_ref().map(|c| c.display.clone().unwrap_or_else(|| c.code.clone()));
            let override_reason = (coding.is_some() || comment.is_some())
                .then_some(cds_hooks::OverrideReason { reason: coding, user_comment: comment });
            (
                cds_hooks::Outcome::Overridden,
                Vec::new(),
                override_reason,
                CardFeedback::Dismissed { reason: display },
            )
        }
    };
    let feedback = cds_hooks::Feedback {
        card: uuid,
        outcome,
        accepted_suggestions: accepted,
        override_reason,
        outcome_timestamp: now_rfc3339(),
    };
    Ok((feedback, recorded))
}
