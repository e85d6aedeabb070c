//! The plan part of the review page: which plan, asking it, its cards, feedback.

use api::{
    ApiError, CardFeedback, CardView, Identification, LaunchKind, LinkKind, MemberId,
    MemberIdSource, PayerId, PayerSummary, PlanAnswer, PlanStatus,
};
use leptos::prelude::*;

use super::member_access::MemberAccessPanel;
use super::provider_access::{AccessOpened, ProviderAccessPanel};
use super::pushed::PushedHistoryPanel;
use crate::server_fns::{card_feedback, load_plan_status, request_plan_history};

/// The plan identified from the coverage, when it offers `route`.
fn offering(identification: &Identification, route: api::PlanRoute) -> Option<PayerSummary> {
    match identification {
        Identification::Ready { payer, .. } if payer.routes.contains(&route) => Some(payer.clone()),
        _ => None,
    }
}

/// Whether the hook may be asked: the plan offers it, or the member is typed (the hook is
/// the route that takes a typed member id).
fn hook_offered(identification: &Identification) -> bool {
    !matches!(identification, Identification::Ready { .. })
        || offering(identification, api::PlanRoute::CdsHooks).is_some()
}

/// What the clinician asked for: a plan and a typed member id, or neither (use the coverage).
#[derive(Debug, Clone, Default, PartialEq)]
struct Ask {
    payer: Option<PayerId>,
    member_id: Option<MemberId>,
}

#[component]
pub fn PlanPanel(launch_kind: LaunchKind) -> impl IntoView {
    let launch = crate::launch_id();
    provide_context(AccessOpened(RwSignal::new(None)));
    let status = {
        let launch = launch.clone();
        LocalResource::new(move || load_plan_status(launch.clone()))
    };
    let ask = {
        let launch = launch.clone();
        Action::new_local(move |input: &Ask| {
            request_plan_history(
                launch.clone(),
                input.payer.clone(),
                input.member_id.as_ref().map(|m| m.to_string()),
            )
        })
    };
    // After an EHR launch the plan is asked straight away; a standalone launch waits for the button.
    Effect::new(move |_| {
        if let Some(Ok(s)) = status.get() {
            let ready = matches!(s.identification, Identification::Ready { .. })
                && hook_offered(&s.identification);
            if launch_kind == LaunchKind::Ehr
                && ready
                && s.answer.is_none()
                && ask.version().get_untracked() == 0
            {
                ask.dispatch(Ask::default());
            }
        }
    });
    view! {
        <section class="plan" aria-labelledby="plan-heading" aria-live="polite">
            <Suspense fallback=|| view! { <p class="loading" aria-busy="true">"Checking the patient's coverage…"</p> }>
                {move || Suspend::new(async move {
                    match status.await {
                        Ok(s) => view! { <PlanBody status=s ask /> }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{e.message}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn PlanBody(status: PlanStatus, ask: Action<Ask, Result<PlanAnswer, ApiError>>) -> impl IntoView {
    let identification = status.identification.clone();
    let initial = status.answer.clone();
    let payer_name = match &identification {
        Identification::Ready { payer, .. } | Identification::FromCardLink { payer } => {
            Some(payer.name.clone())
        }
        _ => None,
    };
    let payers = match &identification {
        Identification::UnconfiguredPlan { payers, .. } | Identification::NoCoverage { payers } => {
            payers.clone()
        }
        Identification::Ready { payer, .. } | Identification::FromCardLink { payer } => {
            vec![payer.clone()]
        }
    };
    // The latest answer: from this page's request, else what the server already had.
    let answer = Signal::derive(move || match ask.value().get() {
        Some(result) => Some(result),
        None => initial.clone().map(Ok),
    });
    // A typed member id only where the coverage did not name the member (the server
    // refuses it otherwise: a typed id could name anyone).
    let typed_allowed = !matches!(
        identification,
        Identification::Ready { member_id: Some(_), .. } | Identification::FromCardLink { .. }
    );
    let waiting_for = payer_name.clone().unwrap_or_else(|| "the plan".into());
    let button_payer = payer_name.clone();
    let provider_access = offering(&identification, api::PlanRoute::ProviderAccess);
    let pushed = match &identification {
        Identification::Ready { payer, .. } if payer.pushes => Some(payer.clone()),
        _ => None,
    };
    let member_access = match &identification {
        Identification::Ready { payer, .. } if payer.member_access => Some(payer.clone()),
        _ => None,
    };
    let hook = hook_offered(&identification);
    view! {
        <h2 id="plan-heading">"Health plan"</h2>
        <Intro identification=identification.clone() />
        // Each route's panel polls on its own: its own boundary, so a poll never re-renders
        // the rest of the page (or another route's form under the clinician's hand).
        {pushed.map(|payer| view! { <Transition fallback=|| ()><PushedHistoryPanel payer /></Transition> })}
        {member_access.map(|payer| view! { <Transition fallback=|| ()><MemberAccessPanel payer /></Transition> })}
        {provider_access.map(|payer| view! { <Transition fallback=|| ()><ProviderAccessPanel payer /></Transition> })}
        {move || {
            let can_ask = matches!(identification, Identification::Ready { .. }) && hook;
            (can_ask && answer.get().is_none() && !ask.pending().get()).then(|| {
                let name = button_payer.clone().unwrap_or_default();
                view! {
                    <button class="button" data-testid="request-history" on:click=move |_| { ask.dispatch(Ask::default()); }>
                        {format!("Request plan history from {name}")}
                    </button>
                }
            })
        }}
        {move || ask.pending().get().then(|| view! {
            <p class="progress" role="status" aria-busy="true" data-testid="plan-progress">
                <span class="spinner" aria-hidden="true"></span>
                {format!("Asking {waiting_for} for the patient's history…")}
            </p>
        })}
        {
            let payers = payers.clone();
            move || match answer.get() {
                Some(Ok(answer)) => view! { <Answer answer payers=payers.clone() ask typed_allowed /> }.into_any(),
                Some(Err(e)) => view! {
                    <div class="plan-error" role="alert" data-testid="plan-error">
                        <p>{e.message.clone()}</p>
                        <button class="button" on:click=move |_| { ask.dispatch(ask.input().get_untracked().unwrap_or_default()); }>"Try again"</button>
                    </div>
                    {typed_allowed.then(|| view! { <MemberIdForm payers=payers.clone() ask /> })}
                }.into_any(),
                None => ().into_any(),
            }
        }
        {
            let payers = payers.clone();
            let no_plan = matches!(status.identification, Identification::UnconfiguredPlan { .. } | Identification::NoCoverage { .. });
            no_plan.then(|| view! { <MemberIdForm payers ask /> })
        }
    }
}

#[component]
fn Intro(identification: Identification) -> impl IntoView {
    match identification {
        Identification::Ready { payer, source, member_id, subscriber_id } => {
            let how = match (source, member_id, subscriber_id) {
                (MemberIdSource::Coverage, Some(id), _) => format!("member id {id} from the patient's coverage"),
                (_, _, Some(sub)) => format!("subscriber id {sub} with the patient's name and birth date"),
                _ => "the patient's coverage".into(),
            };
            view! { <p class="intro" data-testid="plan-intro">{format!("Covered by {}. The plan is asked with {how}.", payer.name)}</p> }.into_any()
        }
        Identification::FromCardLink { payer } => view! {
            <p class="intro" data-testid="plan-intro">{format!("Opened from {}'s card: its data for this member came with the launch.", payer.name)}</p>
        }
        .into_any(),
        Identification::UnconfiguredPlan { plan_names, .. } => view! {
            <p class="intro" data-testid="plan-intro">
                {format!(
                    "The patient's coverage is with {}, which Member History is not set up to ask. If the patient is also a member of one of the plans below, enter their member id.",
                    if plan_names.is_empty() { "an unknown plan".to_owned() } else { plan_names.join(", ") }
                )}
            </p>
        }
        .into_any(),
        Identification::NoCoverage { .. } => view! {
            <p class="intro" data-testid="plan-intro">"No coverage is on file for this patient. Choose the plan and enter the member id from the patient's insurance card."</p>
        }
        .into_any(),
    }
}

#[component]
fn MemberIdForm(
    payers: Vec<PayerSummary>,
    ask: Action<Ask, Result<PlanAnswer, ApiError>>,
) -> impl IntoView {
    let first = payers.first().map(|p| p.id.clone()).unwrap_or_default();
    let payer = RwSignal::new(first);
    let member_id = RwSignal::new(String::new());
    // Checked here as the server checks it, so the clinician reads why before anything is sent.
    let invalid =
        move || MemberId::parse(&member_id.get()).err().filter(|_| !member_id.get().is_empty());
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if let (Ok(payer), Ok(member)) =
            (PayerId::parse(&payer.get_untracked()), MemberId::parse(&member_id.get_untracked()))
        {
            ask.dispatch(Ask { payer: Some(payer), member_id: Some(member) });
        }
    };
    view! {
        <form class="member-id-form" on:submit=submit data-testid="member-id-form">
            <label>"Plan "
                <select on:change=move |ev| payer.set(event_target_value(&ev)) prop:value=move || payer.get()>
                    {payers.into_iter().map(|p| view! { <option value=p.id.clone()>{p.name}</option> }).collect_view()}
                </select>
            </label>
            <label>"Member id "
                <input type="text" name="member_id" required autocomplete="off" maxlength="64"
                    prop:value=move || member_id.get() on:input=move |ev| member_id.set(event_target_value(&ev)) />
            </label>
            {move || invalid().map(|e| view! { <p class="error" role="alert" data-testid="member-id-invalid">{e.to_string()}</p> })}
            <button class="button" type="submit" disabled=move || ask.pending().get() || invalid().is_some()>"Ask the plan"</button>
        </form>
    }
}

#[component]
fn Answer(
    answer: PlanAnswer,
    payers: Vec<PayerSummary>,
    ask: Action<Ask, Result<PlanAnswer, ApiError>>,
    typed_allowed: bool,
) -> impl IntoView {
    if let Some(mismatch) = answer.member_mismatch.clone() {
        return view! { <MemberMismatch mismatch payers ask typed_allowed /> }.into_any();
    }
    let not_matched = answer.outcome == api::AnswerOutcome::NotMatched && typed_allowed;
    view! {
        <div class="answer" data-testid="plan-answer">
            {answer.member.clone().map(|m| view! {
                <p class="plan-member" data-testid="plan-member">
                    {format!(
                        "{} at {}: {}{}{}",
                        "Member",
                        answer.payer.name,
                        m.name,
                        m.birth_date.map(|d| format!(", born {d}")).unwrap_or_default(),
                        m.member_id.map(|id| format!(", member {id}")).unwrap_or_default(),
                    )}
                    {m.records.map(|n| view! { <span class="records" data-testid="plan-records">{format!(" · {n} resources in the plan's record")}</span> })}
                </p>
            })}
            {answer.data_problem.clone().map(|p| view! { <p class="error" role="alert" data-testid="plan-data-problem">{p}</p> })}
            <ul class="cards">
                {answer.cards.into_iter().map(|card| view! { <Card card /> }).collect_view()}
            </ul>
            {(!answer.notes.is_empty()).then(|| view! {
                <details class="notes" data-testid="plan-notes">
                    <summary>{format!("{} note(s) on the plan's answer", answer.notes.len())}</summary>
                    <ul>{answer.notes.into_iter().map(|n| view! { <li>{n}</li> }).collect_view()}</ul>
                </details>
            })}
            {not_matched.then(|| view! { <MemberIdForm payers ask /> })}
        </div>
        {
            let AccessOpened(opened) = expect_context::<AccessOpened>();
            let member = answer.member.is_some();
            move || (member && opened.get().is_none()).then(|| view! { <crate::components::HistoryReview /> })
        }
    }
    .into_any()
}

/// The plan's member is not this patient: what did not match and what to do; nothing of the
/// plan's data.
#[component]
fn MemberMismatch(
    mismatch: api::MemberMismatch,
    payers: Vec<PayerSummary>,
    ask: Action<Ask, Result<PlanAnswer, ApiError>>,
    typed_allowed: bool,
) -> impl IntoView {
    view! {
        <div class="plan-error" role="alert" data-testid="plan-member-mismatch">
            <h3>"This may be someone else's record"</h3>
            <p>{mismatch.message}</p>
        </div>
        {typed_allowed.then(|| view! { <MemberIdForm payers ask /> })}
    }
}

/// What the clinician sends about a card: an accepted suggestion, or a dismissal with an
/// optional reason and comment.
type FeedbackSend =
    Action<(Option<String>, Option<String>, Option<String>), Result<CardView, ApiError>>;

/// The dismissal being written: kept by the card, so an answer from the plan (or an error)
/// that redraws the actions keeps what the clinician chose and typed.
#[derive(Clone, Copy)]
struct Dismissal {
    open: RwSignal<bool>,
    reason: RwSignal<String>,
    comment: RwSignal<String>,
}

#[component]
fn Card(card: CardView) -> impl IntoView {
    let dismissing = RwSignal::new(false);
    let dismissal = Dismissal {
        open: dismissing,
        reason: RwSignal::new(
            card.override_reasons.first().map(|r| r.code.clone()).unwrap_or_default(),
        ),
        comment: RwSignal::new(String::new()),
    };
    let index = card.index;
    let send: FeedbackSend = {
        let launch = crate::launch_id();
        Action::new_local(move |input: &(Option<String>, Option<String>, Option<String>)| {
            let (suggestion, reason, comment) = input.clone();
            let sent = card_feedback(launch.clone(), index, suggestion, reason, comment);
            async move {
                let answer = sent.await;
                if answer.is_ok() {
                    dismissing.set(false);
                }
                answer
            }
        })
    };
    // What the plan recorded: the latest answer to this page's feedback, else what it had.
    let recorded = card.feedback.clone();
    let feedback = move || match send.value().get() {
        Some(Ok(view)) => view.feedback,
        _ => recorded.clone(),
    };
    let error = move || send.value().get().and_then(Result::err).map(|e| e.message);
    let indicator = card.indicator;
    let actions = card.clone();
    view! {
        <li class=format!("card indicator-{}", indicator.as_str()) data-testid="plan-card" data-card-index=index>
            <h3 class="card-summary">
                <span class="indicator" aria-label=indicator.as_str()>{indicator.label()}</span>
                {card.summary.clone()}
            </h3>
            {card.detail_html.clone().map(|html| view! { <div class="card-detail" inner_html=html></div> })}
            <p class="card-source">
                "Source: "
                {match card.source_url.clone() {
                    Some(url) => view! { <a href=url target="_blank" rel="noopener noreferrer">{card.source_label.clone()}</a> }.into_any(),
                    None => view! { <span>{card.source_label.clone()}</span> }.into_any(),
                }}
            </p>
            {(!card.links.is_empty()).then(|| view! { <CardLinks links=card.links.clone() /> })}
            {move || match feedback() {
                Some(CardFeedback::Accepted { suggestion }) => view! { <p class="feedback done" data-testid="card-feedback">{format!("Accepted: {suggestion}. The plan has been told.")}</p> }.into_any(),
                Some(CardFeedback::Dismissed { reason }) => view! {
                    <p class="feedback done" data-testid="card-feedback">{format!("Dismissed{}. The plan has been told.", reason.map(|r| format!(" ({r})")).unwrap_or_default())}</p>
                }.into_any(),
                None if !actions.feedback_allowed => ().into_any(),
                None => view! { <CardActions card=actions.clone() send dismissal /> }.into_any(),
            }}
            {move || error().map(|e| view! { <p class="error" role="alert">{e}</p> })}
        </li>
    }
}

/// A card's links: web pages open apart; a SMART link to this plan's data is this page.
#[component]
fn CardLinks(links: Vec<api::LinkView>) -> impl IntoView {
    view! {
        <ul class="card-links">
            {links.into_iter().map(|l| match l.kind {
                LinkKind::Web => view! { <li><a href=l.url target="_blank" rel="noopener noreferrer external">{l.label}</a></li> }.into_any(),
                LinkKind::PlanData => view! { <li class="muted">{format!("{} — the plan's data is shown on this page.", l.label)}</li> }.into_any(),
                LinkKind::OtherApp => view! { <li class="muted">{format!("{} — open this app from your EHR.", l.label)}</li> }.into_any(),
            }).collect_view()}
        </ul>
    }
}

/// Accept one of the card's suggestions, or dismiss it (with one of its reasons).
#[component]
fn CardActions(card: CardView, send: FeedbackSend, dismissal: Dismissal) -> impl IntoView {
    let Dismissal { open: dismissing, reason, comment } = dismissal;
    let reasons = card.override_reasons.clone();
    view! {
        <div class="card-actions">
            {card.suggestions.into_iter().filter_map(|s| {
                let uuid = s.uuid.clone()?;
                Some(view! {
                    <button class="button" data-testid="accept-suggestion" disabled=move || send.pending().get()
                        on:click=move |_| { send.dispatch((Some(uuid.clone()), None, None)); }>
                        {format!("Accept: {}", s.label)}
                    </button>
                })
            }).collect_view()}
            <button class="button secondary" data-testid="dismiss-card" on:click=move |_| dismissing.set(true)>"Dismiss"</button>
            {move || dismissing.get().then(|| {
                let reasons = reasons.clone();
                view! {
                    <form class="dismiss-form" on:submit=move |ev: leptos::ev::SubmitEvent| {
                        ev.prevent_default();
                        let r = reason.get_untracked();
                        let c = comment.get_untracked();
                        send.dispatch((None, (!r.is_empty()).then_some(r), (!c.trim().is_empty()).then_some(c)));
                    }>
                        {(!reasons.is_empty()).then(|| view! {
                            <label>"Reason "
                                <select data-testid="override-reason" on:change=move |ev| reason.set(event_target_value(&ev)) prop:value=move || reason.get()>
                                    {reasons.iter().map(|r| view! { <option value=r.code.clone()>{r.display.clone()}</option> }).collect_view()}
                                </select>
                            </label>
                        })}
                        <label>"Comment (optional) "
                            <input type="text" maxlength="500" prop:value=move || comment.get() on:input=move |ev| comment.set(event_target_value(&ev)) />
                        </label>
                        <button class="button" type="submit" data-testid="send-dismiss" disabled=move || send.pending().get()>"Send"</button>
                    </form>
                }
            })}
        </div>
    }
}
