// Loads the app's wasm-bindgen glue and WebAssembly. An external module so the Content
// Security Policy needs no inline script ('self' + 'wasm-unsafe-eval' only).
const boot = document.getElementById("mh-boot");
const glue = await import(boot.dataset.js);
await glue.default({ module_or_path: boot.dataset.wasm });
