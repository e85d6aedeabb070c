use api::{ErrorCode, LaunchErrorCode, LaunchId, ReviewContext};
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::components::{PatientBanner, PlanPanel};
use crate::pages::LaunchErrorPage;
use crate::server_fns::load_review_context;

/// The review page of one launch: banner, user, and the plan's history.
#[component]
pub fn ReviewPage() -> impl IntoView {
    let params = use_params_map();
    // Not a launch id at all (a mangled URL): nothing to open, as for an expired launch.
    let Ok(launch) = LaunchId::parse(&params.read_untracked().get("launch").unwrap_or_default())
    else {
        return view! { <LaunchErrorPage code=LaunchErrorCode::SessionExpired /> }.into_any();
    };
    provide_context(launch.clone());
    let context = LocalResource::new(move || load_review_context(launch.clone()));
    view! {
        <Suspense fallback=|| view! { <p class="loading" aria-busy="true">"Opening the patient's record…"</p> }>
            {move || Suspend::new(async move {
                match context.await {
                    Ok(ctx) => view! { <Review ctx /> }.into_any(),
                    Err(e) if e.code == ErrorCode::SessionExpired => {
                        view! { <LaunchErrorPage code=LaunchErrorCode::SessionExpired /> }.into_any()
                    }
                    Err(e) => view! {
                        <section class="page message error" role="alert">
                            <h1>"The patient's record could not be opened"</h1>
                            <p>{e.message}</p>
                            <p><button class="button" on:click=move |_| context.refetch()>"Try again"</button></p>
                        </section>
                    }.into_any(),
                }
            })}
        </Suspense>
    }
    .into_any()
}

#[component]
fn Review(ctx: ReviewContext) -> impl IntoView {
    if let Some(style) = &ctx.style {
        crate::dom::apply_smart_style(style);
    }
    let user = ctx.user.clone();
    view! {
        <header class="app-header">
            <span class="app-name">"Member History"</span>
            <span class="ehr-name">{ctx.ehr_name.clone()}</span>
            {user.map(|u| view! { <span class="user" data-testid="user-name">{u.name}</span> })}
        </header>
        {ctx.need_patient_banner.then(|| view! { <PatientBanner patient=ctx.patient.clone() /> })}
        <PlanPanel launch_kind=ctx.launch_kind />
    }
}
