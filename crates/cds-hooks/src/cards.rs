//! Checks a service's answer card by card: what is valid is kept, what is not is left out
//! with a note that says why, so one bad card never hides the good ones and nothing from the
//! plan reaches the page unchecked.

use std::collections::HashMap;

use serde_json::Value;

use crate::markdown::is_web_url;
use crate::model::{Action, Card, Indicator, LinkType};

/// Summaries longer than this are cut (the spec asks for under 140 characters).
pub const SUMMARY_LIMIT: usize = 140;
/// Longest `detail` kept, in characters.
pub const DETAIL_LIMIT: usize = 20_000;
/// Longest label (links, suggestions, source), in characters.
pub const LABEL_LIMIT: usize = 200;

/// A card that passed the checks.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckedCard {
    pub card: Card,
    pub indicator: Indicator,
    /// False when the card has no `uuid`, or shares it with another card: feedback must name
    /// one card unambiguously.
    pub feedback_allowed: bool,
}

/// The checked answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CheckedResponse {
    pub cards: Vec<CheckedCard>,
    pub system_actions: Vec<Action>,
    /// What was changed or left out, in words for the clinician.
    pub notes: Vec<String>,
}

/// Why an answer could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedResponse(pub String);

/// Checks a parsed JSON answer, keeping at most `max_cards` cards.
pub fn check_response(
    body: &Value,
    max_cards: usize,
) -> Result<CheckedResponse, MalformedResponse> {
    let object = body
        .as_object()
        .ok_or_else(|| MalformedResponse("the answer is not a JSON object".into()))?;
    let cards = object
        .get("cards")
        .and_then(Value::as_array)
        .ok_or_else(|| MalformedResponse("the answer has no `cards` list".into()))?;
    let mut out = CheckedResponse::default();
    if cards.len() > max_cards {
        out.notes
            .push(format!("The plan sent {} cards; the first {max_cards} are shown.", cards.len()));
    }
    for (index, raw) in cards.iter().take(max_cards).enumerate() {
        if let Some(card) = check_card(raw, index + 1, &mut out.notes) {
            out.cards.push(card);
        }
    }
    mark_duplicate_uuids(&mut out);
    if let Some(actions) = object.get("systemActions").and_then(Value::as_array) {
        out.system_actions =
            actions.iter().filter_map(|a| serde_json::from_value(a.clone()).ok()).collect();
    }
    Ok(out)
}

/// One card, checked field by field against CDS Hooks 2.0 §card attributes; what fails is
/// left out with a note. Long on purpose: one check per attribute, in the spec's order.
fn check_card(raw: &Value, number: usize, notes: &mut Vec<String>) -> Option<CheckedCard> {
    let mut card: Card = match serde_json::from_value(raw.clone()) {
        Ok(card) => card,
        Err(e) => {
            notes.push(format!(
                "Card {number} was left out because it is not a valid CDS Hooks card: {e}."
            ));
            return None;
        }
    };
    if card.summary.trim().is_empty() {
        notes.push(format!("Card {number} was left out because its summary is empty."));
        return None;
    }
    if card.source.label.trim().is_empty() {
        notes.push(format!("Card {number} was left out because its source has no label."));
        return None;
    }
    if card.summary.chars().count() > SUMMARY_LIMIT {
        card.summary = truncate(&card.summary, SUMMARY_LIMIT);
        notes.push(format!(
            "Card {number}'s summary was longer than {SUMMARY_LIMIT} characters and was shortened."
        ));
    }
    if let Some(detail) = &card.detail {
        if detail.chars().count() > DETAIL_LIMIT {
            card.detail = Some(truncate(detail, DETAIL_LIMIT));
            notes.push(format!("Card {number}'s detail was very long and was shortened."));
        }
    }
    let indicator = match Indicator::parse(&card.indicator) {
        Some(i) => i,
        None => {
            notes.push(format!(
                "Card {number} has the unknown indicator `{}`; it is shown as information.",
                truncate(&card.indicator, 30)
            ));
            Indicator::Info
        }
    };
    if !card.suggestions.is_empty() {
        match card.selection_behavior.as_deref() {
            Some("at-most-one") | Some("any") => {}
            other => {
                notes.push(format!(
                    "Card {number} was left out: it has suggestions but {} selectionBehavior.",
                    other
                        .map(|o| format!("the unknown `{}`", truncate(o, 30)))
                        .unwrap_or_else(|| "no".into())
                ));
                return None;
            }
        }
    }
    card.source.label = truncate(&card.source.label, LABEL_LIMIT);
    if card.source.url.as_deref().is_some_and(|u| !is_web_url(u)) {
        card.source.url = None;
    }
    if card.source.icon.as_deref().is_some_and(|u| !is_web_url(u)) {
        card.source.icon = None;
    }
    let before = card.links.len();
    card.links.retain(|l| is_web_url(&l.url));
    if card.links.len() < before {
        notes.push(format!(
            "{} link(s) on card {number} were removed: only http and https links are allowed.",
            before - card.links.len()
        ));
    }
    for link in &mut card.links {
        link.label = truncate(&link.label, LABEL_LIMIT);
        if link.link_type == LinkType::Absolute {
            link.app_context = None;
        }
    }
    for suggestion in &mut card.suggestions {
        suggestion.label = truncate(&suggestion.label, LABEL_LIMIT);
    }
    card.override_reasons.retain(|r| !r.code.is_empty());
    let feedback_allowed = card.uuid.as_deref().is_some_and(|u| !u.is_empty());
    Some(CheckedCard { card, indicator, feedback_allowed })
}

fn mark_duplicate_uuids(out: &mut CheckedResponse) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for c in &out.cards {
        if let Some(uuid) = &c.card.uuid {
            *counts.entry(uuid.clone()).or_default() += 1;
        }
    }
    let duplicated: Vec<&String> = counts.iter().filter(|(_, n)| **n > 1).map(|(u, _)| u).collect();
    if duplicated.is_empty() {
        return;
    }
    out.notes.push(format!(
        "{} cards share a uuid with another card; feedback is turned off for them.",
        duplicated.iter().map(|u| counts[*u]).sum::<usize>()
    ));
    for c in &mut out.cards {
        if c.card.uuid.as_ref().is_some_and(|u| counts.get(u).is_some_and(|n| *n > 1)) {
            c.feedback_allowed = false;
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn card(extra: Value) -> Value {
        let mut c = json!({"uuid": "u1", "summary": "Member found", "indicator": "info", "source": {"label": "Plan"}});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    #[test]
    fn keeps_good_cards_and_explains_bad_ones() {
        let body = json!({"cards": [
            card(json!({})),
            {"uuid": "u2", "indicator": "info", "source": {"label": "Plan"}},
            card(json!({"uuid": "u3", "indicator": "success"})),
            card(json!({"uuid": "u4", "suggestions": [{"label": "Add"}]})),
        ]});
        let checked = check_response(&body, 50).unwrap();
        assert_eq!(checked.cards.len(), 2);
        assert_eq!(checked.cards[1].indicator, Indicator::Info);
        assert!(
            checked.notes.iter().any(|n| n.contains("missing field `summary`")),
            "{:?}",
            checked.notes
        );
        assert!(checked.notes.iter().any(|n| n.contains("unknown indicator `success`")));
        assert!(checked.notes.iter().any(|n| n.contains("selectionBehavior")));
    }

    #[test]
    fn removes_unsafe_links_and_caps_counts() {
        let body = json!({"cards": [card(json!({"links": [
            {"label": "ok", "url": "https://plan.example/a", "type": "absolute"},
            {"label": "js", "url": "javascript:alert(1)", "type": "absolute"},
            {"label": "data", "url": "data:text/html,<b>", "type": "absolute"},
            {"label": "app", "url": "https://app.example/launch", "type": "smart", "appContext": "x"}
        ], "source": {"label": "Plan", "url": "javascript:x", "icon": "data:image/png;base64,AA"}}))]});
        let checked = check_response(&body, 50).unwrap();
        let c = &checked.cards[0].card;
        assert_eq!(c.links.len(), 2);
        assert_eq!(c.source.url, None);
        assert_eq!(c.source.icon, None);
        let many = json!({"cards": (0..5000).map(|i| card(json!({"uuid": format!("u{i}")}))).collect::<Vec<_>>()});
        let checked = check_response(&many, 50).unwrap();
        assert_eq!(checked.cards.len(), 50);
        assert!(checked.notes[0].contains("5000 cards"));
    }

    #[test]
    fn duplicate_uuids_turn_feedback_off() {
        let body =
            json!({"cards": [card(json!({})), card(json!({})), card(json!({"uuid": "other"}))]});
        let checked = check_response(&body, 50).unwrap();
        assert!(!checked.cards[0].feedback_allowed && !checked.cards[1].feedback_allowed);
        assert!(checked.cards[2].feedback_allowed);
    }

    #[test]
    fn long_summaries_are_shortened_and_shapes_refused() {
        let body = json!({"cards": [card(json!({"summary": "x".repeat(500)}))]});
        let checked = check_response(&body, 50).unwrap();
        assert_eq!(checked.cards[0].card.summary.chars().count(), SUMMARY_LIMIT);
        assert!(check_response(&json!([]), 50).is_err());
        assert!(check_response(&json!({"cards": "none"}), 50).is_err());
    }
}
