mod launch_error;
mod review;
mod start;

pub use launch_error::LaunchErrorPage;
pub use review::ReviewPage;
pub use start::StartPage;

use leptos::prelude::*;

#[component]
pub fn NotFound() -> impl IntoView {
    view! {
        <section class="page message">
            <h1>"Page not found"</h1>
            <p>"There is nothing at this address. Launch Member History from a patient's chart, or open the start page."</p>
            <p><a class="button" href="/" rel="external">"Start page"</a></p>
        </section>
    }
}
