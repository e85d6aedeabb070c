//! HTML for the sandbox's own pages (launcher, patient picker, messages). Escaped by maud.

use axum::response::Html;
use maud::{html, Markup, DOCTYPE};

/// The sandbox stylesheet, served at `/sandbox.css` (no inline styles, so a strict CSP holds).
pub const STYLESHEET: &str = r#"
body { font-family: system-ui, sans-serif; margin: 0; background: #f4f6f8; color: #1d2733; }
header { background: #234; color: #fff; padding: .75rem 1.5rem; }
header h1 { margin: 0; font-size: 1.2rem; }
header p { margin: .2rem 0 0; opacity: .8; font-size: .9rem; }
main { padding: 1.5rem; max-width: 70rem; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .45rem .6rem; border-bottom: 1px solid #dde3ea; vertical-align: middle; }
th { background: #e9eef3; font-size: .85rem; }
button, .button { background: #1f6feb; color: #fff; border: 0; border-radius: 4px; padding: .4rem .8rem; cursor: pointer; font-size: .9rem; text-decoration: none; display: inline-block; }
button.secondary { background: #6b7785; }
fieldset { border: 1px solid #cbd5df; background: #fff; margin-bottom: 1rem; }
label { display: block; margin: .3rem 0; }
.card { background: #fff; border: 1px solid #dde3ea; border-radius: 6px; padding: 1rem; margin-bottom: 1rem; }
.muted { color: #5b6776; font-size: .9rem; }
"#;

/// The sandbox's clinicians to choose from (a `practitioner` field).
pub fn clinician_select() -> Markup {
    html! {
        select name="practitioner" {
            @for c in crate::synthetic::clinicians() {
                option value=(c.id) { "Dr. " (c.given) " " (c.family) }
            }
        }
    }
}

pub fn layout(title: &str, subtitle: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) }
                    link rel="stylesheet" href="/sandbox.css";
                }
                body {
                    header { h1 { (title) } p { (subtitle) } }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

pub fn message_page(title: &str, message: &str) -> Html<String> {
    layout(title, "Sandbox EHR", html! { div.card { p { (message) } } })
}
