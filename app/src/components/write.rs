//! "Add to chart": the confirmation with what will be written how, the progress, and the
//! outcome of each item, printable.

use api::{ApiError, OutcomeStatus, WriteResult};
use leptos::prelude::*;

use crate::server_fns::{add_to_chart, load_write_preview};

#[component]
pub fn WriteConfirm(on_written: Callback<WriteResult>, on_cancel: Callback<()>) -> impl IntoView {
    let launch = crate::launch_id();
    let preview = {
        let launch = launch.clone();
        LocalResource::new(move || load_write_preview(launch.clone()))
    };
    // The outcome goes to the page as the write completes (no effect watching the value).
    let write = Action::new_local(move |_: &()| {
        let launch = launch.clone();
        async move {
            let result = add_to_chart(launch).await;
            if let Ok(written) = &result {
                on_written.run(written.clone());
            }
            result
        }
    });
    crate::dom::focus_after_paint("write-confirm-button".into());
    view! {
        <section class="write-panel" role="dialog" aria-labelledby="write-title" data-testid="write-confirm">
            <h2 id="write-title">"Add to chart"</h2>
            <Suspense fallback=|| view! { <p class="loading">"Checking what the EHR accepts…"</p> }>
                {move || Suspend::new(async move {
                    match preview.await {
                        Ok(p) => view! {
                            <p>{format!("{} selected item(s) will be added to the chart in {}.", p.total, p.ehr)}</p>
                            {(!p.as_records.is_empty()).then(|| view! {
                                <p class="write-group">"As records: " {groups(&p.as_records)}</p>
                            })}
                            {(!p.in_document.is_empty()).then(|| view! {
                                <p class="write-group" data-testid="write-in-document">
                                    {format!("In one document ({} does not take these as records): ", p.ehr)} {groups(&p.in_document)}
                                </p>
                            })}
                            {(!p.not_writable.is_empty()).then(|| view! {
                                <p class="write-group error">{format!("{} accepts neither records nor documents for: ", p.ehr)} {groups(&p.not_writable)}</p>
                            })}
                            <p class="muted">"Each item keeps a record of where it came from (Provenance). Adding the same items again never duplicates them."</p>
                        }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{e.message}</p> }.into_any(),
                    }
                })}
            </Suspense>
            {move || write.pending().get().then(|| view! {
                <p class="progress" role="status" aria-busy="true" data-testid="write-progress"><span class="spinner" aria-hidden="true"></span>"Adding to the chart…"</p>
            })}
            {move || match write.value().get() {
                Some(Err(ApiError { message, .. })) => Some(view! { <p class="plan-error" role="alert" data-testid="write-error">{message}</p> }),
                _ => None,
            }}
            <div class="write-actions">
                <button class="button" id="write-confirm-button" data-testid="write-confirm-button" disabled=move || write.pending().get()
                    on:click=move |_| { write.dispatch(()); }>
                    {move || if matches!(write.value().get(), Some(Err(_))) { "Try again" } else { "Add to chart" }}
                </button>
                <button class="button secondary" disabled=move || write.pending().get() on:click=move |_| on_cancel.run(())>"Cancel"</button>
            </div>
        </section>
    }
}

fn groups(groups: &[(api::Category, usize)]) -> String {
    groups.iter().map(|(c, n)| format!("{} {n}", c.label())).collect::<Vec<_>>().join(", ")
}

fn status_label(status: OutcomeStatus) -> &'static str {
    match status {
        OutcomeStatus::Created => "Added",
        OutcomeStatus::AlreadyPresent => "Already in the chart",
        OutcomeStatus::InDocument => "In the document",
        OutcomeStatus::Failed => "Not added",
    }
}

#[component]
pub fn WriteSummary(result: WriteResult) -> impl IntoView {
    let count = |s: OutcomeStatus| result.outcomes.iter().filter(|o| o.status == s).count();
    let (created, present, in_document, failed) = (
        count(OutcomeStatus::Created),
        count(OutcomeStatus::AlreadyPresent),
        count(OutcomeStatus::InDocument),
        count(OutcomeStatus::Failed),
    );
    let print = |_| {
        if let Some(w) = web_sys::window() {
            let _ = w.print();
        }
    };
    view! {
        <section class="write-summary" aria-labelledby="write-summary-title" data-testid="write-summary">
            <h2 id="write-summary-title">"Added to chart"</h2>
            <p data-testid="write-counts">
                {format!("{created} added, {present} already in the chart, {in_document} in a document, {failed} not added")}
                {format!(" · {} · from {} · {}", result.ehr, result.plan, result.written_at)}
            </p>
            <p class="muted">{format!("Patient: {}", result.patient)}
                {(!result.provenance.is_empty()).then(|| format!(" · Provenance {}", result.provenance.join(", ")))}
                {result.document.clone().map(|d| format!(" · Document {d} ({})", result.document_format.clone().unwrap_or_default()))}
            </p>
            {result.notes.iter().map(|n| view! { <p class="muted">{n.clone()}</p> }).collect_view()}
            <button class="button secondary no-print" on:click=print>"Print summary"</button>
            <ul class="outcomes" data-testid="write-outcomes">
                {result.outcomes.iter().map(|o| view! {
                    <li class=format!("outcome {:?}", o.status).to_lowercase() data-status=format!("{:?}", o.status)>
                        <span class="outcome-status">{status_label(o.status)}</span>
                        <span class="outcome-display">{o.display.clone()}</span>
                        <span class="outcome-ref">{match (&o.link, &o.reference) {
                            (Some(link), Some(reference)) => view! { <a href=link.clone() target="_blank" rel="noopener noreferrer">{reference.clone()}</a> }.into_any(),
                            _ => view! { <span>{o.reason.clone().unwrap_or_default()}</span> }.into_any(),
                        }}</span>
                    </li>
                }).collect_view()}
            </ul>
        </section>
    }
}
