use api::LaunchErrorCode;
use leptos::prelude::*;

/// Says what went wrong with a launch and what to do next.
#[component]
pub fn LaunchErrorPage(code: LaunchErrorCode) -> impl IntoView {
    view! {
        <section class="page message error" role="alert" data-error-code=code.as_str()>
            <h1>{code.title()}</h1>
            <p class="what-happened">{code.what_happened()}</p>
            <p class="what-to-do"><strong>"What to do: "</strong>{code.what_to_do()}</p>
            <p><a class="button" href="/" rel="external">"Start page"</a></p>
        </section>
    }
}
