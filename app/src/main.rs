//! The WASM entry point Trunk builds.

#[cfg(feature = "csr")]
fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}

#[cfg(not(feature = "csr"))]
fn main() {}
