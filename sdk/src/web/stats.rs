//! `requestRTCStats()` of a stage stream: the browser's stats of the
//! RTCRtpSender or RTCRtpReceiver carrying it. (`requestQualityStats()` is
//! the package's JS over these, graded by [`crate::core::quality`].)

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;

fn get_stats(source: &JsValue) -> Option<Function> {
    Reflect::get(source, &JsValue::from_str("getStats")).ok()?.dyn_into().ok()
}

/// The stats of `source` (a sender or receiver), or an empty report when
/// the stream is not being sent or received.
pub fn rtc_stats(source: Option<&JsValue>) -> Promise {
    let call = source.and_then(|s| Some(get_stats(s)?.call0(s)));
    match call {
        None => Promise::resolve(&JsValue::from(js_sys::Map::new())),
        Some(Ok(p)) => p.dyn_into::<Promise>().unwrap_or_else(|v| Promise::resolve(&v)),
        Some(Err(e)) => Promise::reject(&e),
    }
}

/// Gives a remote stream object `requestRTCStats()` over `receiver`.
pub fn attach(stream: &Object, receiver: &JsValue) {
    if let Some(f) = get_stats(receiver) {
        let _ = Reflect::set(stream, &JsValue::from_str("requestRTCStats"), &f.bind0(receiver));
    }
}
