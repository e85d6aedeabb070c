use leptos::prelude::*;

use crate::server_fns::configured_ehrs;

/// Standalone "ad-hoc history refresh": pick an EHR, then its patient picker.
#[component]
pub fn StartPage() -> impl IntoView {
    let ehrs = LocalResource::new(configured_ehrs);
    view! {
        <section class="page start">
            <h1>"Member History"</h1>
            <p class="lede">
                "See what happened to your patient elsewhere: ask the patient's health plan for their history, "
                "review it, and add what matters to the chart."
            </p>
            <h2>"Open a patient from your EHR"</h2>
            <Suspense fallback=|| view! { <p class="loading" aria-busy="true">"Loading EHRs…"</p> }>
                {move || Suspend::new(async move {
                    match ehrs.await {
                        Ok(list) if list.is_empty() => view! {
                            <p>"No EHR is configured. Ask your administrator to add one to Member History's configuration."</p>
                        }.into_any(),
                        Ok(list) => view! {
                            <ul class="ehr-list">
                                {list.into_iter().map(|ehr| {
                                    let href = format!("/launch?iss={}", encode(&ehr.issuer));
                                    view! {
                                        <li><a class="button" href=href rel="external" data-ehr=ehr.id.clone()>{format!("Sign in with {}", ehr.name)}</a></li>
                                    }
                                }).collect_view()}
                            </ul>
                            <p class="hint">"You will sign in to the EHR and choose the patient there."</p>
                        }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{e.message}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
