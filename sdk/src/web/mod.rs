//! Thin web-sys adapters. They translate browser callbacks into Rust values
//! and carry out what the stage logic decides; they decide nothing. Every
//! registration is owned by a struct that undoes it on `Drop`.
//!
//! Only the chat adapters are always built; the rest follow the `stage` and
//! `broadcast` crate features.
#![cfg_attr(not(all(feature = "stage", feature = "broadcast")), allow(dead_code))]

pub mod chat_socket;
#[cfg(feature = "broadcast")]
pub mod clock;
#[cfg(feature = "broadcast")]
pub mod compositor;
#[cfg(any(feature = "stage", feature = "broadcast"))]
pub mod http;
#[cfg(feature = "broadcast")]
pub mod ingest;
#[cfg(feature = "broadcast")]
pub mod mixer;
#[cfg(any(feature = "stage", feature = "broadcast"))]
pub mod peer;
#[cfg(any(feature = "stage", feature = "broadcast"))]
pub mod sdp;
#[cfg(feature = "stage")]
pub mod socket;
#[cfg(feature = "stage")]
pub mod stats;
pub mod timer;

use wasm_bindgen::JsValue;

/// Runs `f` on the microtask queue rather than inside the browser callback,
/// so the handler may drop the very adapter (and closure) that called it.
pub(crate) fn defer(f: impl FnOnce() + 'static) {
    wasm_bindgen_futures::spawn_local(async move { f() });
}

/// Best-effort text of a JS exception, for error messages.
pub(crate) fn js_error_text(e: &JsValue) -> String {
    if let Some(s) = e.as_string() {
        return s;
    }
    js_sys::Reflect::get(e, &JsValue::from_str("message"))
        .ok()
        .and_then(|m| m.as_string())
        .unwrap_or_else(|| "unknown browser error".to_owned())
}

/// The page's document.
pub(crate) fn document() -> Result<web_sys::Document, JsValue> {
    web_sys::window()
        .and_then(|w| w.document())
        .ok_or_else(|| JsValue::from_str("no document"))
}

/// `performance.now()` (falls back to `Date.now()` without a window).
pub(crate) fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map(|p| p.now())
        .unwrap_or_else(js_sys::Date::now)
}

/// Awaits `p` and drops its outcome, so a rejection is not reported as
/// unhandled (e.g. `video.play()` interrupted by teardown).
pub(crate) fn ignore_rejection(p: js_sys::Promise) {
    wasm_bindgen_futures::spawn_local(async move {
        let _ = wasm_bindgen_futures::JsFuture::from(p).await;
    });
}
