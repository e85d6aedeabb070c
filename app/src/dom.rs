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
