//! A history the patient's plan pushed on its own (PDex §3-4-3, a `Patient/$everything`
//! Bundle): offered on the review page when the plan sent one for this member, and opened
//! for review after the identity check.

use api::PayerSummary;
use leptos::prelude::*;

use super::provider_access::{instant, AccessOpened, Opened};
use crate::server_fns::{pushed_history_open, pushed_history_status};

#[component]
pub fn PushedHistoryPanel(payer: PayerSummary) -> impl IntoView {
    let launch = crate::launch_id();
    let status = {
        let launch = launch.clone();
        LocalResource::new(move || pushed_history_status(launch.clone()))
    };
    let AccessOpened(opened) = expect_context::<AccessOpened>();
    let open = Action::new_local(move |_: &()| {
        let opening = pushed_history_open(launch.clone());
        async move {
            let view = opening.await;
            if view.is_ok() {
                opened.set(Some(Opened::Pushed));
            }
            view
        }
    });
    let name = payer.name;
    let offer = move || {
        let pushed = status.get().and_then(Result::ok).flatten()?;
        let said = format!(
            "{name} sent history on {}: {} records.",
            instant(&pushed.received_at),
            pushed.resources
        );
        Some(view! {
            <section class="pushed-history" aria-labelledby="pushed-heading" data-testid="pushed-history">
                <h3 id="pushed-heading">"History the plan sent"</h3>
                <p role="status" data-testid="pushed-said">{said}</p>
                <button class="button" data-testid="pushed-open" disabled=move || open.pending().get()
                    on:click=move |_| { open.dispatch(()); }>
                    "Review what the plan sent"
                </button>
                {move || open.value().get().and_then(Result::err).map(|e| view! {
                    <div class="plan-error" role="alert" data-testid="pushed-open-error"><p>{e.message}</p></div>
                })}
            </section>
        })
    };
    view! {
        {offer}
        {move || (opened.get() == Some(Opened::Pushed)).then(|| view! {
            <div class="pa-review" data-testid="pushed-review"><crate::components::HistoryReview /></div>
        })}
    }
    .into_any()
}
