//! Browser tests of the wasm surface (headless Chromium):
//! `CHROMEDRIVER=/usr/bin/chromedriver CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
//!  cargo test -p stagecast-sdk --target wasm32-unknown-unknown`
#![cfg(target_arch = "wasm32")]

use js_sys::{Function, Object, Reflect};
use stagecast_sdk::{LocalStageStream, Stage};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn canvas_track() -> web_sys::MediaStreamTrack {
    let doc = web_sys::window()
        .and_then(|w| w.document())
        .expect("test runs in a window");
    let canvas: web_sys::HtmlCanvasElement = doc
        .create_element("canvas")
        .expect("canvas")
        .dyn_into()
        .expect("is a canvas");
    canvas.set_width(64);
    canvas.set_height(64);
    let ctx: web_sys::CanvasRenderingContext2d = canvas
        .get_context("2d")
        .expect("2d")
        .expect("2d")
        .dyn_into()
        .expect("2d ctx");
    ctx.fill_rect(0.0, 0.0, 64.0, 64.0);
    let stream = canvas.capture_stream().expect("captureStream");
    stream
        .get_video_tracks()
        .get(0)
        .dyn_into()
        .expect("a video track")
}

/// A strategy object that publishes nothing and subscribes to nobody.
fn idle_strategy() -> JsValue {
    let s = Object::new();
    let _ = Reflect::set(
        &s,
        &"stageStreamsToPublish".into(),
        &Function::new_no_args("return []"),
    );
    let _ = Reflect::set(
        &s,
        &"shouldPublishParticipant".into(),
        &Function::new_no_args("return false"),
    );
    let _ = Reflect::set(
        &s,
        &"shouldSubscribeToParticipant".into(),
        &Function::new_no_args("return 'none'"),
    );
    s.into()
}

/// An unsigned token with the given claims (the SDK never verifies).
fn token(exp_secs: f64, events_url: &str, whip_url: &str) -> String {
    let claims = format!(
        r#"{{"topic":"st","jti":"p1","user_id":"u","attributes":{{}},"capabilities":{{"allow_publish":true,"allow_subscribe":true}},"exp":{},"iat":0,"events_url":"{events_url}","whip_url":"{whip_url}","version":"1.0"}}"#,
        exp_secs as i64
    );
    let window = web_sys::window().expect("window");
    let b64 = |s: &str| {
        window
            .btoa(s)
            .expect("btoa")
            .trim_end_matches('=')
            .replace('+', "-")
            .replace('/', "_")
    };
    format!(
        "{}.{}.c2ln",
        b64(r#"{"alg":"ES384","typ":"JWT"}"#),
        b64(&claims)
    )
}

async fn join_error(stage: &Stage) -> JsValue {
    match JsFuture::from(stage.join()).await {
        Ok(_) => panic!("join() should have been rejected"),
        Err(e) => e,
    }
}

#[wasm_bindgen_test]
fn local_stream_mutes_and_unmutes_the_track() {
    let track = canvas_track();
    let stream = LocalStageStream::new(JsValue::from(&track), JsValue::UNDEFINED).expect("stream");
    assert_eq!(stream.stream_type(), "video");
    assert_eq!(stream.id(), track.id());
    assert!(!stream.is_muted());
    stream.set_muted(JsValue::TRUE);
    assert!(stream.is_muted());
    assert!(!track.enabled());
    stream.set_muted(JsValue::FALSE);
    assert!(!stream.is_muted());
    assert!(track.enabled());
}

#[wasm_bindgen_test]
fn video_configs_are_checked_against_ivs_limits() {
    let config = |json: &str| js_sys::JSON::parse(json).expect("test JSON");
    let ok = |json: &str| LocalStageStream::new(JsValue::from(&canvas_track()), config(json)).is_ok();
    assert!(ok(r#"{"simulcast":{"enabled":true}}"#));
    assert!(ok(r#"{"maxBitrate":900,"maxFramerate":20,"simulcast":{"enabled":false}}"#));
    assert!(ok(r#"{"simulcast":{"enabled":true,"layers":[{"width":1280,"height":720,"maxBitrateKbps":2500,"maxFramerate":30},{"width":320,"height":180,"maxBitrateKbps":150,"maxFramerate":15}]}}"#));
    for bad in [
        r#"{"maxBitrate":20}"#,
        r#"{"maxFramerate":60}"#,
        r#"{"simulcast":{"enabled":true,"layers":[]}}"#,
        r#"{"simulcast":{"enabled":true,"layers":[{"width":100,"height":100,"maxBitrateKbps":200,"maxFramerate":15}]}}"#,
    ] {
        let e = LocalStageStream::new(JsValue::from(&canvas_track()), config(bad)).err().expect(bad);
        assert!(e.is_instance_of::<js_sys::RangeError>(), "{bad}");
    }
}

#[wasm_bindgen_test]
fn bad_arguments_throw_type_errors() {
    let e = LocalStageStream::new(JsValue::from_str("not a track"), JsValue::UNDEFINED)
        .err()
        .expect("throws");
    assert!(e.is_instance_of::<js_sys::TypeError>());
    let e = Stage::new(JsValue::from_f64(1.0), idle_strategy())
        .err()
        .expect("throws");
    assert!(e.is_instance_of::<js_sys::TypeError>());
    let e = Stage::new(JsValue::from_str("t"), JsValue::NULL)
        .err()
        .expect("throws");
    assert!(e.is_instance_of::<js_sys::TypeError>());
    let stage = Stage::new(JsValue::from_str("t"), idle_strategy()).expect("stage");
    assert!(stage
        .on(JsValue::from_str("error"), JsValue::from_str("not a fn"))
        .is_err());
}

#[wasm_bindgen_test]
async fn garbage_token_rejects_with_token_malformed() {
    let stage = Stage::new(JsValue::from_str("garbage"), idle_strategy()).expect("stage");
    let e = join_error(&stage).await;
    assert!(e.is_instance_of::<js_sys::Error>());
    assert_eq!(get(&e, "name"), "StageError");
    assert_eq!(get(&e, "code"), 1);
    assert_eq!(get(&e, "category"), "JOIN_ERROR");
}

#[wasm_bindgen_test]
async fn expired_token_rejects_before_any_network() {
    let now = js_sys::Date::now() / 1000.0;
    // Unroutable endpoints: any network attempt would give FAILED, not TOKEN_EXPIRED.
    let t = token(
        now - 60.0,
        "ws://127.0.0.1:1/v1/stage/events",
        "http://127.0.0.1:1/v1/stage/whip",
    );
    let stage = Stage::new(JsValue::from_str(&t), idle_strategy()).expect("stage");
    let states = Rc::new(RefCell::new(Vec::<JsValue>::new()));
    let s = states.clone();
    let cb = Closure::<dyn FnMut(JsValue)>::new(move |v| s.borrow_mut().push(v));
    stage
        .on("stageConnectionStateChanged".into(), cb.as_ref().clone())
        .expect("on");
    let e = join_error(&stage).await;
    assert_eq!(get(&e, "code"), 2);
    assert_eq!(get(&e, "name"), "StageError");
    assert!(
        states.borrow().is_empty(),
        "no connection attempt for an expired token"
    );
}

#[wasm_bindgen_test]
async fn unreachable_server_fails_and_on_off_work() {
    let now = js_sys::Date::now() / 1000.0;
    let t = token(
        now + 600.0,
        "ws://127.0.0.1:1/v1/stage/events",
        "http://127.0.0.1:1/v1/stage/whip",
    );
    let stage = Stage::new(JsValue::from_str(&t), idle_strategy()).expect("stage");
    let kept = Rc::new(RefCell::new(Vec::<String>::new()));
    let removed = Rc::new(RefCell::new(Vec::<String>::new()));
    let (k, r) = (kept.clone(), removed.clone());
    let kept_cb = Closure::<dyn FnMut(JsValue)>::new(move |v: JsValue| {
        k.borrow_mut().push(v.as_string().unwrap_or_default())
    });
    let removed_cb = Closure::<dyn FnMut(JsValue)>::new(move |v: JsValue| {
        r.borrow_mut().push(v.as_string().unwrap_or_default())
    });
    let ev = || JsValue::from_str("stageConnectionStateChanged");
    stage.on(ev(), kept_cb.as_ref().clone()).expect("on");
    stage.on(ev(), removed_cb.as_ref().clone()).expect("on");
    stage.off(ev(), removed_cb.as_ref().clone()).expect("off");
    let e = join_error(&stage).await;
    assert_eq!(get(&e, "code"), 4, "FAILED");
    assert_eq!(*kept.borrow(), ["connecting", "errored"]);
    assert!(removed.borrow().is_empty());
    // A second join after a failure is allowed (and fails the same way).
    let e = join_error(&stage).await;
    assert_eq!(get(&e, "code"), 4);
}
