//! Member-authorized access on the review page: the link the patient signs in by at their
//! plan (opened on this device, or handed to them), the wait while they do, and what they
//! shared, opened for review once the plan's member is confirmed as this patient.

use std::time::Duration;

use api::{MemberAccessStage, MemberAccessView, PayerSummary};
use leptos::prelude::*;

use super::provider_access::{AccessOpened, Opened};
use crate::server_fns::{member_access_start, member_access_status};

#[component]
pub fn MemberAccessPanel(payer: PayerSummary) -> impl IntoView {
    let launch = crate::launch_id();
    let status = {
        let launch = launch.clone();
        LocalResource::new(move || member_access_status(launch.clone()))
    };
    let start = Action::new_local(move |_: &()| member_access_start(launch.clone()));
    let AccessOpened(opened) = expect_context::<AccessOpened>();
    // The sign-in as last seen: this page's start until a poll says more.
    let current = Signal::derive(move || {
        let polled = status.get().and_then(Result::ok).flatten();
        let started = start.value().get().and_then(Result::ok);
        match (polled, started) {
            (Some(p), Some(s)) if p.stage == MemberAccessStage::Waiting => {
                Some(MemberAccessView { link: s.link, ..p })
            }
            (p, s) => p.or(s),
        }
    });
    Effect::new(move |_| match current.get().map(|v| v.stage) {
        Some(MemberAccessStage::Waiting) => {
            set_timeout(move || status.refetch(), Duration::from_secs(2));
        }
        Some(MemberAccessStage::Shared { .. }) if opened.get_untracked().is_none() => {
            opened.set(Some(Opened::Member));
        }
        _ => {}
    });
    let name = payer.name.clone();
    view! {
        <section class="member-access" aria-labelledby="ma-heading" data-testid="member-access">
            <h3 id="ma-heading">{format!("The patient shares their {name} records")}</h3>
            <p class="muted">"The patient signs in at their plan, on this device or their phone, and chooses what to share. Member History never sees their password."</p>
            {move || current.get().map(|view| view! { <SignInStatus view /> })}
            <button class="button" data-testid="ma-start" disabled=move || start.pending().get()
                on:click=move |_| { start.dispatch(()); }>
                {format!("Let the patient sign in at {name}")}
            </button>
            {move || start.value().get().and_then(Result::err).map(|e| view! {
                <p class="error" role="alert" data-testid="ma-error">{e.message}</p>
            })}
        </section>
        {move || (opened.get() == Some(Opened::Member)).then(|| view! {
            <div class="pa-review" data-testid="ma-review"><crate::components::HistoryReview /></div>
        })}
    }
    .into_any()
}

#[component]
fn SignInStatus(view: MemberAccessView) -> impl IntoView {
    match view.stage {
        MemberAccessStage::Waiting => view! {
            <div data-testid="ma-waiting" data-stage="waiting">
                <p role="status" aria-busy="true"><span class="spinner" aria-hidden="true"></span>"Waiting for the patient to sign in…"</p>
                <p>"Give the patient this link, or "<a href=view.link.clone() target="_blank" rel="noopener noreferrer" data-testid="ma-link">"open the sign-in on this device"</a>":"</p>
                <p><code data-testid="ma-link-text">{view.link.clone()}</code></p>
                <img class="ma-qr" src=format!("{}/qr.svg", view.link) width="160" height="160"
                    alt="The sign-in link as a QR code, for the patient's phone" data-testid="ma-qr" />
            </div>
        }.into_any(),
        MemberAccessStage::Shared { withheld } => view! {
            <div data-testid="ma-shared" data-stage="shared">
                <p role="status">{format!("The patient signed in at {} and shared their records.", view.payer.name)}</p>
                {(!withheld.is_empty()).then(|| view! {
                    <p data-testid="ma-withheld">{format!("They chose not to share: {}.", withheld.join(", "))}</p>
                })}
            </div>
        }.into_any(),
        MemberAccessStage::Refused { message } => view! {
            <p class="error" role="alert" data-testid="ma-refused">{message}</p>
        }.into_any(),
    }
}
