//! The few direct DOM touches the app needs.

use api::{LaunchErrorCode, SmartStyle};

/// The launch error code the server put in `<meta name="mh-launch-error">`, if any.
pub fn launch_error_from_meta() -> Option<LaunchErrorCode> {
    let document = web_sys::window()?.document()?;
    let meta = document.query_selector("meta[name=mh-launch-error]").ok()??;
    LaunchErrorCode::parse(&meta.get_attribute("content")?)
}

/// Applies the EHR's SMART style as CSS custom properties on the root element. CSSOM writes
/// are allowed under our CSP (no `style` attributes are parsed).
pub fn apply_smart_style(style: &SmartStyle) {
    let Some(root) =
        web_sys::window().and_then(|w| w.document()).and_then(|d| d.document_element())
    else {
        return;
    };
    use wasm_bindgen::JsCast;
    let Ok(root) = root.dyn_into::<web_sys::HtmlElement>() else { return };
    let css = root.style();
    for (name, value) in &style.properties {
        let _ = css.set_property(name, value);
    }
}

/// Runs `f` after the browser has painted the current frame (two animation frames).
fn after_paint(f: impl FnOnce() + 'static) {
    use wasm_bindgen::closure::Closure;
    use wasm_bindgen::JsCast;
    let Some(window) = web_sys::window() else { return };
    let inner = Closure::once_into_js(f);
    let outer = Closure::once_into_js(move || {
        if let Some(w) = web_sys::window() {
            let _ = w.request_animation_frame(inner.unchecked_ref());
        }
    });
    let _ = window.request_animation_frame(outer.unchecked_ref());
}

/// A `performance.mark` once what is on screen now has been painted.
pub fn mark_after_paint(name: &'static str) {
    after_paint(move || {
        if let Some(performance) = web_sys::window().and_then(|w| w.performance()) {
            let _ = performance.mark(name);
        }
    });
}

/// Focuses the element with `id` (or the first focusable element inside it) after the next paint.
pub fn focus_after_paint(id: String) {
    after_paint(move || {
        use wasm_bindgen::JsCast;
        let Some(document) = web_sys::window().and_then(|w| w.document()) else { return };
        let Some(element) = document.get_element_by_id(&id) else { return };
        let target = match element.tag_name().as_str() {
            "BUTTON" | "INPUT" => Some(element),
            _ => element.query_selector("input, button").ok().flatten(),
        };
        if let Some(el) = target.and_then(|t| t.dyn_into::<web_sys::HtmlElement>().ok()) {
            let _ = el.focus();
        }
    });
}
