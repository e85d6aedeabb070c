//! The plan's Provider Access API on the review page: the clinician's treatment attestation,
//! the request (import, view only, or changes since the last import), its progress polled
//! while the plan works (and found again in a later launch of the patient), and its result
//! opened for review.

use std::time::Duration;

use api::{ExportPurpose, PayerSummary, ProviderAccessStage, ProviderAccessView};
use leptos::prelude::*;

use crate::server_fns::{provider_access_ask, provider_access_open, provider_access_status};

/// Which route's data this page shows for review, when not the hook's (then the hook's
/// answer does not show its own, and only the route opened last shows the review).
#[derive(Clone, Copy)]
pub struct AccessOpened(pub RwSignal<Option<Opened>>);

/// A route whose data is opened for review apart from the hook's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    ProviderAccess,
    Pushed,
    Member,
}

fn running(stage: &ProviderAccessStage) -> bool {
    matches!(stage, ProviderAccessStage::Matching | ProviderAccessStage::Exporting)
}

#[component]
pub fn ProviderAccessPanel(payer: PayerSummary) -> impl IntoView {
    let launch = crate::launch_id();
    let status = {
        let launch = launch.clone();
        LocalResource::new(move || provider_access_status(launch.clone()))
    };
    let ask = {
        let launch = launch.clone();
        Action::new_local(move |purpose: &ExportPurpose| {
            provider_access_ask(launch.clone(), *purpose)
        })
    };
    let AccessOpened(opened) = expect_context::<AccessOpened>();
    let open = Action::new_local(move |_: &()| {
        let opening = provider_access_open(launch.clone());
        async move {
            let view = opening.await;
            if view.is_ok() {
                opened.set(Some(Opened::ProviderAccess));
            }
            view
        }
    });
    // The request as last seen: the newer of this page's ask and the last poll.
    let current = Signal::derive(move || {
        let polled = status.get().and_then(Result::ok).flatten();
        let asked = ask.value().get().and_then(Result::ok);
        match (polled, asked) {
            (Some(p), Some(a)) => Some(if p.updated_at >= a.updated_at { p } else { a }),
            (p, a) => p.or(a),
        }
    });
    // While the plan works, look again every two seconds.
    Effect::new(move |_| {
        if current.get().is_some_and(|v| running(&v.stage)) {
            set_timeout(move || status.refetch(), Duration::from_secs(2));
        }
    });
    let name = payer.name.clone();
    view! {
        <section class="provider-access" aria-labelledby="pa-heading" data-testid="provider-access">
            <h3 id="pa-heading">{format!("Full history from {name} (Provider Access)")}</h3>
            <p class="muted">"The plan sends claims, encounters and clinical data since 2016 for a patient you treat. It may take from seconds to a business day; you can close Member History meanwhile and find the result here when you next open this patient."</p>
            {move || current.get().map(|view| view! { <RequestStatus view open /> })}
            <AskForm payer=payer.clone() ask current />
            {move || ask.value().get().and_then(Result::err).map(|e| view! {
                <p class="error" role="alert" data-testid="pa-ask-error">{e.message}</p>
            })}
            {move || open.value().get().and_then(Result::err).map(|e| view! {
                <div class="plan-error" role="alert" data-testid="pa-open-error"><p>{e.message}</p></div>
            })}
        </section>
        {move || (opened.get() == Some(Opened::ProviderAccess)).then(|| view! {
            <div class="pa-review" data-testid="pa-review"><crate::components::HistoryReview /></div>
        })}
    }
    // Type-erased: the page's view type is deep enough already.
    .into_any()
}

/// What was asked, when, and how far the plan is.
#[component]
fn RequestStatus(
    view: ProviderAccessView,
    open: Action<(), Result<api::HistoryView, api::ApiError>>,
) -> impl IntoView {
    let purpose = match view.purpose {
        ExportPurpose::Download => "the full history to import",
        ExportPurpose::Snapshot => "the full history to view only",
        ExportPurpose::Delta => "what changed since the last import",
    };
    let asked = format!("Asked {} for {purpose} on {}.", view.payer.name, instant(&view.asked_at));
    let progress = view.progress.clone().map(|p| format!(" ({p})")).unwrap_or_default();
    let stage = match view.stage.clone() {
        ProviderAccessStage::Matching => view! {
            <p class="progress" role="status" aria-busy="true" data-testid="pa-stage" data-stage="matching">
                <span class="spinner" aria-hidden="true"></span>{format!("The plan is matching the member and checking the treatment attestation…{progress}")}
            </p>
        }.into_any(),
        ProviderAccessStage::Exporting => view! {
            <p class="progress" role="status" aria-busy="true" data-testid="pa-stage" data-stage="exporting">
                <span class="spinner" aria-hidden="true"></span>{format!("Matched. The plan is preparing the member's data…{progress}")}
            </p>
        }.into_any(),
        ProviderAccessStage::Ready { resources } => view! {
            <p role="status" data-testid="pa-stage" data-stage="ready">{format!("Ready: {resources} records from the plan.")}</p>
            <button class="button" data-testid="pa-open" disabled=move || open.pending().get()
                on:click=move |_| { open.dispatch(()); }>
                {format!("Review the {resources} records")}
            </button>
        }.into_any(),
        ProviderAccessStage::NotMatched => view! {
            <p role="status" data-testid="pa-stage" data-stage="not-matched">"The plan found no member it can share for this patient. Check the patient's coverage in the EHR, or ask the plan."</p>
        }.into_any(),
        ProviderAccessStage::OptedOut => view! {
            <p role="status" data-testid="pa-stage" data-stage="opted-out">"The plan says this member has asked it not to share their data with providers."</p>
        }.into_any(),
        ProviderAccessStage::Failed { message } => view! {
            <p class="error" role="alert" data-testid="pa-stage" data-stage="failed">{message}</p>
        }.into_any(),
    };
    view! {
        <div class="pa-request" data-testid="pa-request">
            <p>{asked}</p>
            {stage}
            <p class="muted">{format!("Last checked {}.", instant(&view.updated_at))}</p>
        </div>
    }
}

/// The attestation and the ask.
#[component]
fn AskForm(
    payer: PayerSummary,
    ask: Action<ExportPurpose, Result<ProviderAccessView, api::ApiError>>,
    current: Signal<Option<ProviderAccessView>>,
) -> impl IntoView {
    let attested = RwSignal::new(false);
    let purpose = RwSignal::new(ExportPurpose::Download);
    // A delta needs an import to start from.
    let imported = move || {
        current.get().is_some_and(|v| {
            matches!(v.stage, ProviderAccessStage::Ready { .. })
                && matches!(v.purpose, ExportPurpose::Download | ExportPurpose::Delta)
        })
    };
    let busy = move || ask.pending().get() || current.get().is_some_and(|v| running(&v.stage));
    let choice = move |value: ExportPurpose, label: &'static str, testid: &'static str| {
        view! {
            <label>
                <input type="radio" name="pa-purpose" data-testid=testid
                    prop:checked=move || purpose.get() == value
                    on:change=move |_| purpose.set(value) />
                {label}
            </label>
        }
    };
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if attested.get_untracked() {
            ask.dispatch(purpose.get_untracked());
        }
    };
    view! {
        <form class="pa-ask" on:submit=submit data-testid="pa-ask-form">
            <fieldset>
                <legend>"Ask for"</legend>
                {choice(ExportPurpose::Download, "the full history, to review and add to the chart", "pa-download")}
                {choice(ExportPurpose::Snapshot, "the full history, to view only", "pa-snapshot")}
                {move || imported().then(|| choice(ExportPurpose::Delta, "what changed since the last import", "pa-delta"))}
            </fieldset>
            <label class="attest">
                <input type="checkbox" data-testid="pa-attest" prop:checked=move || attested.get()
                    on:change=move |ev| attested.set(event_target_checked(&ev)) />
                {format!("I attest that I have a treatment relationship with this patient, and ask {} for their data to treat them.", payer.name)}
            </label>
            <button class="button" type="submit" data-testid="pa-ask" disabled=move || !attested.get() || busy()>
                {format!("Ask {}", payer.name)}
            </button>
        </form>
    }
    .into_any()
}

/// An RFC 3339 instant as a clinician reads it (minutes, UTC).
pub(crate) fn instant(at: &str) -> String {
    match (at.get(..10), at.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} at {time} UTC"),
        _ => at.to_owned(),
    }
}
