//! Member History's browser app: the start page (standalone launch), the review page, and
//! the launch error page. Data comes only from our server's functions (same origin).

mod components;
mod dom;
mod pages;
pub mod server_fns;

use leptos::prelude::*;
use leptos_router::components::{Route, Router, Routes};
use leptos_router::path;

use crate::pages::{LaunchErrorPage, NotFound, ReviewPage, StartPage};

/// The launch the review page is about, provided by the page to everything under it.
pub(crate) fn launch_id() -> api::LaunchId {
    expect_context::<api::LaunchId>()
}

/// Referenced by the server so this crate (and its server functions) are linked in.
pub fn register_server_fns() {}

#[component]
pub fn App() -> impl IntoView {
    // The server renders launch failures as this page with the error code in a meta tag.
    let launch_error = dom::launch_error_from_meta();
    view! {
        <Router>
            {match launch_error {
                Some(code) => view! { <LaunchErrorPage code /> }.into_any(),
                None => view! {
                    <Routes fallback=|| view! { <NotFound /> }>
                        <Route path=path!("/") view=StartPage />
                        <Route path=path!("/review/:launch") view=ReviewPage />
                    </Routes>
                }
                .into_any(),
            }}
        </Router>
    }
}
