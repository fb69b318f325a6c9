//! Browser tests of the broadcast client and `autoLayout` (headless Chromium):
//! `CHROMEDRIVER=/usr/bin/chromedriver CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
//!  cargo test -p stagecast-sdk --target wasm32-unknown-unknown --test broadcast_web`
#![cfg(target_arch = "wasm32")]

use js_sys::{Array, Function, Object, Promise, Reflect};
use stagecast_sdk::{auto_layout, create_broadcast_client, BroadcastClient};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, MediaStream, MediaStreamTrack};

wasm_bindgen_test_configure!(run_in_browser);

type Rgb = (u8, u8, u8);
const RED: Rgb = (255, 0, 0);
const BLUE: Rgb = (0, 0, 255);
const GREEN: Rgb = (0, 255, 0);
const BLACK: Rgb = (0, 0, 0);
/// The avatar card's background.
const CARD: Rgb = (0x1c, 0x1f, 0x26);

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn obj(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in pairs {
        Reflect::set(&o, &JsValue::from_str(k), v).expect("set");
    }
    o.into()
}

fn comp(index: f64, x: f64, y: f64, w: f64, h: f64) -> JsValue {
    obj(&[
        ("index", index.into()),
        ("x", x.into()),
        ("y", y.into()),
        ("width", w.into()),
        ("height", h.into()),
    ])
}

async fn sleep(ms: i32) {
    let p = Promise::new(&mut |resolve, _| {
        web_sys::window()
            .expect("window")
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms)
            .expect("setTimeout");
    });
    let _ = JsFuture::from(p).await;
}

fn ctx_of(canvas: &HtmlCanvasElement) -> CanvasRenderingContext2d {
    canvas
        .get_context("2d")
        .expect("2d")
        .expect("2d")
        .dyn_into()
        .expect("2d ctx")
}

fn canvas(w: u32, h: u32, fill: Option<Rgb>) -> HtmlCanvasElement {
    let doc = web_sys::window()
        .and_then(|w| w.document())
        .expect("document");
    let c: HtmlCanvasElement = doc
        .create_element("canvas")
        .expect("canvas")
        .dyn_into()
        .expect("is a canvas");
    c.set_width(w);
    c.set_height(h);
    if let Some((r, g, b)) = fill {
        let ctx = ctx_of(&c);
        ctx.set_fill_style_str(&format!("rgb({r},{g},{b})"));
        ctx.fill_rect(0.0, 0.0, f64::from(w), f64::from(h));
    }
    c
}

/// A live video track of a solid colour (a canvas repainted every 50 ms).
fn colour_track(colour: Rgb) -> (MediaStreamTrack, HtmlCanvasElement) {
    let c = canvas(160, 90, Some(colour));
    let stream = c.capture_stream().expect("captureStream");
    let ctx = ctx_of(&c);
    let (r, g, b) = colour;
    let style = format!("rgb({r},{g},{b})");
    let repaint = Closure::<dyn FnMut()>::new(move || {
        ctx.set_fill_style_str(&style);
        ctx.fill_rect(0.0, 0.0, 160.0, 90.0);
    });
    web_sys::window()
        .expect("window")
        .set_interval_with_callback_and_timeout_and_arguments_0(
            repaint.as_ref().unchecked_ref(),
            50,
        )
        .expect("setInterval");
    repaint.forget();
    let track = stream
        .get_video_tracks()
        .get(0)
        .dyn_into()
        .expect("a video track");
    (track, c)
}

fn pixel(c: &HtmlCanvasElement, x: f64, y: f64) -> Rgb {
    let data = ctx_of(c)
        .get_image_data(x, y, 1.0, 1.0)
        .expect("getImageData");
    let d = data.data();
    (d[0], d[1], d[2])
}

fn close(a: Rgb, b: Rgb) -> bool {
    let d = |x: u8, y: u8| (i16::from(x) - i16::from(y)).abs();
    d(a.0, b.0) <= 40 && d(a.1, b.1) <= 40 && d(a.2, b.2) <= 40
}

/// Waits (up to ~3 s) until the preview shows `want` at (x, y).
async fn expect_pixel(preview: &HtmlCanvasElement, x: f64, y: f64, want: Rgb, what: &str) {
    let mut got = BLACK;
    for _ in 0..60 {
        got = pixel(preview, x, y);
        if close(got, want) {
            return;
        }
        sleep(50).await;
    }
    panic!("{what}: pixel ({x},{y}) is {got:?}, wanted {want:?}");
}

fn client() -> BroadcastClient {
    let cfg = obj(&[(
        "streamConfig",
        obj(&[
            (
                "maxResolution",
                obj(&[("width", 852.into()), ("height", 480.into())]),
            ),
            ("maxFramerate", 30.into()),
            ("maxBitrate", 1500.into()),
        ]),
    )]);
    create_broadcast_client(cfg).expect("create")
}

fn preview_of(c: &BroadcastClient) -> HtmlCanvasElement {
    let preview = canvas(426, 240, None);
    c.attach_preview(preview.clone().into())
        .expect("attachPreview");
    preview
}

fn code_of(err: &JsValue) -> f64 {
    get(err, "code").as_f64().unwrap_or(-1.0)
}

async fn rejection(p: Promise) -> JsValue {
    match JsFuture::from(p).await {
        Ok(v) => panic!("expected a rejection, got {v:?}"),
        Err(e) => e,
    }
}

fn video_track_id(c: &BroadcastClient) -> String {
    let t: MediaStreamTrack = c
        .get_output_stream()
        .get_video_tracks()
        .get(0)
        .dyn_into()
        .expect("an output video track");
    t.id()
}

// Preview coordinates (426×240 = the 852×480 canvas at half size).
const LEFT: (f64, f64) = (106.0, 120.0);
const RIGHT: (f64, f64) = (319.0, 120.0);

#[wasm_bindgen_test]
async fn composes_sources_into_their_boxes_in_index_order() {
    let c = client();
    let dims = c.get_canvas_dimensions();
    assert_eq!(get(&dims, "width").as_f64(), Some(852.0));
    assert_eq!(get(&dims, "height").as_f64(), Some(480.0));
    let preview = preview_of(&c);
    let track_id = video_track_id(&c);
    assert_eq!(c.get_output_stream().get_audio_tracks().length(), 1);

    let red = canvas(160, 90, Some(RED));
    let blue = canvas(160, 90, Some(BLUE));
    JsFuture::from(c.add_image_source(red.into(), "red".into(), comp(0.0, 0.0, 0.0, 426.0, 480.0)))
        .await
        .expect("add red");
    JsFuture::from(c.add_image_source(
        blue.into(),
        "blue".into(),
        comp(1.0, 426.0, 0.0, 426.0, 480.0),
    ))
    .await
    .expect("add blue");

    expect_pixel(&preview, LEFT.0, LEFT.1, RED, "red on the left").await;
    expect_pixel(&preview, RIGHT.0, RIGHT.1, BLUE, "blue on the right").await;
    // Letterboxed: a 16:9 source in a 426×480 box leaves black above it.
    expect_pixel(&preview, LEFT.0, 5.0, BLACK, "letterbox").await;

    // Move them with updateVideoDeviceComposition.
    c.update_video_device_composition("red".into(), comp(0.0, 426.0, 0.0, 426.0, 480.0))
        .expect("update red");
    c.update_video_device_composition("blue".into(), comp(1.0, 0.0, 0.0, 426.0, 480.0))
        .expect("update blue");
    expect_pixel(&preview, LEFT.0, LEFT.1, BLUE, "blue moved left").await;
    expect_pixel(&preview, RIGHT.0, RIGHT.1, RED, "red moved right").await;

    // And back with exchangeVideoDevicePositions.
    c.exchange_video_device_positions("red".into(), "blue".into())
        .expect("exchange");
    expect_pixel(&preview, LEFT.0, LEFT.1, RED, "exchanged: red left").await;
    expect_pixel(&preview, RIGHT.0, RIGHT.1, BLUE, "exchanged: blue right").await;

    // Index order: a full-canvas green on top covers both; below, it doesn't.
    let green = canvas(160, 90, Some(GREEN));
    JsFuture::from(c.add_image_source(
        green.into(),
        "green".into(),
        comp(5.0, 0.0, 0.0, 852.0, 480.0),
    ))
    .await
    .expect("add green");
    expect_pixel(&preview, LEFT.0, LEFT.1, GREEN, "green on top").await;
    c.update_video_device_composition("green".into(), comp(-1.0, 0.0, 0.0, 852.0, 480.0))
        .expect("green below");
    expect_pixel(&preview, LEFT.0, LEFT.1, RED, "green below red").await;
    c.remove_image("green".into()).expect("remove green");

    // Removing leaves black.
    c.remove_image("red".into()).expect("remove red");
    expect_pixel(&preview, LEFT.0, LEFT.1, BLACK, "red removed").await;
    expect_pixel(&preview, RIGHT.0, RIGHT.1, BLUE, "blue still there").await;

    assert_eq!(
        video_track_id(&c),
        track_id,
        "one stable output video track"
    );
    let stats = c.get_stats();
    assert!(get(&stats, "framesComposed").as_f64().unwrap_or(0.0) > 5.0);
    assert!(get(&stats, "fps").as_f64().unwrap_or(0.0) > 5.0);
    assert_eq!(get(&stats, "workerClock").as_bool(), Some(true));
    assert!(get(&stats, "composeMsP95").as_f64().is_some());
    c.delete();
}

#[wasm_bindgen_test]
async fn video_input_device_is_drawn_from_its_media_stream() {
    let c = client();
    let preview = preview_of(&c);
    let (track, _keep) = colour_track(GREEN);
    let stream = MediaStream::new_with_tracks(&Array::of1(&track)).expect("stream");
    JsFuture::from(c.add_video_input_device(
        Clone::clone(&stream).into(),
        "cam".into(),
        comp(0.0, 0.0, 0.0, 426.0, 480.0),
    ))
    .await
    .expect("add cam");
    expect_pixel(&preview, LEFT.0, LEFT.1, GREEN, "camera on the left").await;
    expect_pixel(&preview, RIGHT.0, RIGHT.1, BLACK, "nothing on the right").await;
    let dev = c.get_video_input_device("cam".into());
    assert_eq!(get(&dev, "name").as_string().as_deref(), Some("cam"));
    assert_eq!(get(&get(&dev, "position"), "width").as_f64(), Some(426.0));
    assert!(c.get_video_input_device("nope".into()).is_undefined());

    // Audio devices: a video-only stream is refused, an audio one is mixed.
    let e = rejection(c.add_audio_input_device(stream.into(), "mic".into())).await;
    assert_eq!(code_of(&e), 4001.0);
    let ac: web_sys::AudioContext = c.get_audio_context().dyn_into().expect("an AudioContext");
    let dest = ac.create_media_stream_destination().expect("destination");
    JsFuture::from(c.add_audio_input_device(dest.stream().into(), "mic".into()))
        .await
        .expect("add mic");
    assert!(c
        .get_audio_input_device("mic".into())
        .is_instance_of::<MediaStream>());
    c.remove_audio_input_device("mic".into())
        .expect("remove mic");

    c.remove_video_input_device("cam".into())
        .expect("remove cam");
    expect_pixel(&preview, LEFT.0, LEFT.1, BLACK, "camera removed").await;
    c.delete();
}

#[wasm_bindgen_test]
async fn errors_carry_ivs_codes() {
    let c = client();
    let red = canvas(16, 9, Some(RED));
    JsFuture::from(c.add_image_source(
        red.clone().into(),
        "a".into(),
        comp(0.0, 0.0, 0.0, 10.0, 10.0),
    ))
    .await
    .expect("add a");
    let dup =
        rejection(c.add_image_source(red.into(), "a".into(), comp(0.0, 0.0, 0.0, 10.0, 10.0)))
            .await;
    assert_eq!(code_of(&dup), 4000.0);
    let e = rejection(c.add_video_input_device(
        JsValue::NULL,
        "v".into(),
        comp(0.0, 0.0, 0.0, 1.0, 1.0),
    ))
    .await;
    assert_eq!(code_of(&e), 4001.0);

    let err = |r: Result<(), JsValue>| code_of(&r.expect_err("should fail"));
    assert_eq!(err(c.remove_video_input_device("nope".into())), 5000.0);
    assert_eq!(err(c.remove_image("nope".into())), 5000.0);
    assert_eq!(err(c.remove_audio_input_device("nope".into())), 6000.0);
    assert_eq!(
        err(c.update_video_device_composition("nope".into(), comp(0.0, 0.0, 0.0, 1.0, 1.0))),
        7000.0
    );
    assert_eq!(
        err(c.exchange_video_device_positions("a".into(), "nope".into())),
        8000.0
    );

    let e = rejection(c.start_broadcast("".into(), "http://127.0.0.1:9/whip".into())).await;
    assert_eq!(code_of(&e), 10003.0);
    let e = rejection(c.start_broadcast("bad key!".into(), "http://127.0.0.1:9/whip".into())).await;
    assert_eq!(code_of(&e), 18000.0);
    let e = rejection(c.start_broadcast("sk_1".into(), JsValue::UNDEFINED)).await;
    assert_eq!(code_of(&e), 13000.0);

    // Nothing listening: the WHIP POST fails → PeerSetup, state "failed",
    // and a clientError event.
    let seen = Array::new();
    let on_error = Function::new_with_args("e", "this.push(e.code)").bind0(&seen);
    c.on("clientError".into(), on_error.into()).expect("on");
    let e = rejection(c.start_broadcast("sk_1".into(), "http://127.0.0.1:9/whip".into())).await;
    assert_eq!(code_of(&e), 10000.0);
    assert_eq!(c.get_connection_state(), "failed");
    sleep(10).await;
    assert_eq!(seen.get(0).as_f64(), Some(10000.0));

    let bad = obj(&[("streamConfig", obj(&[("maxFramerate", 500.into())]))]);
    match create_broadcast_client(bad) {
        Ok(_) => panic!("a 500 fps config must be refused"),
        Err(e) => assert_eq!(code_of(&e), 12000.0),
    }

    c.delete();
    let e =
        rejection(c.add_image_source(canvas(4, 4, None).into(), "b".into(), JsValue::UNDEFINED))
            .await;
    assert_eq!(code_of(&e), 16000.0);
}

/// A stand-in for `Stage` with the same `on`/`off` API and an `emit` helper.
fn fake_stage() -> JsValue {
    Function::new_no_args(
        "const l = new Map();
         return {
           on(e, f) { (l.get(e) || l.set(e, []).get(e)).push(f); },
           off(e, f) { const a = l.get(e) || []; const i = a.indexOf(f); if (i >= 0) a.splice(i, 1); },
           emit(e, ...args) { for (const f of [...(l.get(e) || [])]) f(...args); },
           count() { let n = 0; for (const a of l.values()) n += a.length; return n; },
         };",
    )
    .call0(&JsValue::UNDEFINED)
    .expect("fake stage")
}

fn emit(stage: &JsValue, event: &str, args: &[JsValue]) {
    let f: Function = get(stage, "emit").dyn_into().expect("emit");
    let all: Array = std::iter::once(JsValue::from_str(event))
        .chain(args.iter().cloned())
        .collect();
    f.apply(stage, &all).expect("emit");
}

fn info(id: &str, name: &str) -> JsValue {
    obj(&[
        ("id", id.into()),
        ("userId", name.into()),
        ("attributes", obj(&[("username", name.into())])),
        ("isLocal", false.into()),
        ("videoStopped", false.into()),
        ("audioMuted", false.into()),
    ])
}

fn stage_stream(track: &MediaStreamTrack, muted: bool) -> JsValue {
    obj(&[
        ("id", track.id().into()),
        ("streamType", track.kind().into()),
        ("mediaStreamTrack", track.into()),
        ("isMuted", muted.into()),
    ])
}

#[wasm_bindgen_test]
async fn auto_layout_follows_the_stage() {
    let c = client();
    let preview = preview_of(&c);
    let stage = fake_stage();
    let handle = auto_layout(&c, stage.clone(), JsValue::UNDEFINED).expect("autoLayout");
    let track_id = video_track_id(&c);

    // One participant: full frame.
    let (red, _r) = colour_track(RED);
    let a = info("a", "Alice");
    emit(&stage, "stageParticipantJoined", std::slice::from_ref(&a));
    emit(
        &stage,
        "stageParticipantStreamsAdded",
        &[a.clone(), Array::of1(&stage_stream(&red, false)).into()],
    );
    expect_pixel(&preview, LEFT.0, LEFT.1, RED, "alone: red left").await;
    expect_pixel(&preview, RIGHT.0, RIGHT.1, RED, "alone: red right").await;

    // A second: side by side.
    let (blue, _b) = colour_track(BLUE);
    let b = info("b", "Bob");
    emit(&stage, "stageParticipantJoined", std::slice::from_ref(&b));
    emit(
        &stage,
        "stageParticipantStreamsAdded",
        &[b.clone(), Array::of1(&stage_stream(&blue, false)).into()],
    );
    expect_pixel(&preview, LEFT.0, LEFT.1, RED, "two: red left").await;
    expect_pixel(&preview, RIGHT.0, RIGHT.1, BLUE, "two: blue right").await;
    assert_eq!(
        handle.participant_ids(),
        vec!["a".to_owned(), "b".to_owned()]
    );

    // A joined participant without streams gets no (dead) tile.
    let g = info("g", "Guest");
    emit(&stage, "stageParticipantJoined", std::slice::from_ref(&g));
    assert_eq!(handle.participant_ids().len(), 2);

    // Bob stops his video: his avatar card replaces it.
    let muted = stage_stream(&blue, true);
    emit(&stage, "stageStreamMuteChanged", &[b.clone(), muted]);
    expect_pixel(
        &preview,
        RIGHT.0,
        80.0,
        CARD,
        "stopped video shows the card",
    )
    .await;
    emit(
        &stage,
        "stageStreamMuteChanged",
        &[b.clone(), stage_stream(&blue, false)],
    );
    expect_pixel(&preview, RIGHT.0, RIGHT.1, BLUE, "video back").await;

    // Versus keeps two halves; pip puts the featured one full frame.
    handle.set_mode("pip".into(), "b".into()).expect("pip");
    expect_pixel(&preview, LEFT.0, LEFT.1, BLUE, "pip: bob full frame").await;
    // Alice's thumbnail sits in the bottom-right corner.
    expect_pixel(&preview, 400.0, 215.0, RED, "pip: alice thumbnail").await;
    handle
        .set_mode("grid".into(), JsValue::UNDEFINED)
        .expect("grid");

    // Alice leaves: Bob takes the whole frame.
    emit(&stage, "stageParticipantLeft", &[a]);
    expect_pixel(&preview, LEFT.0, LEFT.1, BLUE, "after leave: blue left").await;
    expect_pixel(&preview, RIGHT.0, RIGHT.1, BLUE, "after leave: blue right").await;

    assert_eq!(
        video_track_id(&c),
        track_id,
        "output track survives re-slotting"
    );

    // stop() removes its listeners and sources.
    handle.stop();
    let count: Function = get(&stage, "count").dyn_into().expect("count");
    assert_eq!(count.call0(&stage).expect("count").as_f64(), Some(0.0));
    expect_pixel(&preview, LEFT.0, LEFT.1, BLACK, "stopped: black").await;
    c.delete();
}

#[wasm_bindgen_test]
async fn auto_layout_labels_each_video_with_its_name() {
    use stagecast_sdk::core::layout::{label_font_px, name_label, Rect};
    let c = client();
    let preview = preview_of(&c);
    let stage = fake_stage();
    let options = obj(&[("nameLabels", true.into())]);
    let handle = auto_layout(&c, stage.clone(), options).expect("autoLayout");
    let (red, _r) = colour_track(RED);
    let a = info("a", "Alice");
    emit(&stage, "stageParticipantJoined", std::slice::from_ref(&a));
    emit(
        &stage,
        "stageParticipantStreamsAdded",
        &[a.clone(), Array::of1(&stage_stream(&red, false)).into()],
    );
    // Where the layout engine puts a full frame's label; the preview is half size.
    let full = Rect { x: 0.0, y: 0.0, width: 852.0, height: 480.0 };
    let font = label_font_px(&full).expect("a full frame has a label");
    let label = name_label(&full, font, 0.0, &[]).rect;
    // Left of the name, in the box's padding: the dark box over the video.
    let x = (label.x + 4.0) / 2.0;
    let mid = (label.y + label.height / 2.0) / 2.0;
    expect_pixel(&preview, x, mid, (102, 0, 0), "the label box over red").await;
    expect_pixel(&preview, x, (label.y - 8.0) / 2.0, RED, "the video above the label").await;
    expect_pixel(&preview, LEFT.0, LEFT.1, RED, "the rest of the tile").await;
    // Without the option there is no label.
    handle.stop();
    let plain = auto_layout(&c, stage.clone(), JsValue::UNDEFINED).expect("autoLayout");
    emit(&stage, "stageParticipantJoined", std::slice::from_ref(&a));
    emit(
        &stage,
        "stageParticipantStreamsAdded",
        &[a, Array::of1(&stage_stream(&red, false)).into()],
    );
    expect_pixel(&preview, x, mid, RED, "no label without nameLabels").await;
    plain.stop();
    c.delete();
}

/// Replaces `window.fetch` with an in-page WHIP server: an answering
/// `RTCPeerConnection`. Returns its log object (`restore()` undoes it).
fn mock_whip() -> JsValue {
    Function::new_no_args(
        "const log = { auth: [], deletes: [], offer: null, kinds: [], pc: null };
         const orig = window.fetch;
         window.fetch = async (req) => {
           const auth = req.headers.get('Authorization');
           log.auth.push(auth);
           if (req.method === 'DELETE') { log.deletes.push(req.url); return new Response(null, { status: 204 }); }
           const offer = await req.text();
           log.offer = offer;
           log.contentType = req.headers.get('Content-Type');
           if (auth !== 'Bearer good_key') {
             return new Response(JSON.stringify({ code: 'STREAM_KEY_INVALID', message: 'bad key' }), { status: 401 });
           }
           const pc = new RTCPeerConnection();
           log.pc = pc;
           pc.ontrack = (e) => log.kinds.push(e.track.kind);
           await pc.setRemoteDescription({ type: 'offer', sdp: offer });
           await pc.setLocalDescription(await pc.createAnswer());
           await new Promise((r) => {
             if (pc.iceGatheringState === 'complete') return r();
             pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r();
           });
           return new Response(pc.localDescription.sdp, {
             status: 201,
             headers: { Location: '/v1/channels/c1/whip/sessions/s1', 'Content-Type': 'application/sdp' },
           });
         };
         log.restore = () => { window.fetch = orig; if (log.pc) log.pc.close(); };
         return log;",
    )
    .call0(&JsValue::UNDEFINED)
    .expect("mock whip")
}

/// The codec of the first payload type of the offer's video m-line.
fn first_video_codec(sdp: &str) -> Option<String> {
    let mline = sdp.lines().find(|l| l.starts_with("m=video"))?;
    let pt = mline.split(' ').nth(3)?;
    let prefix = format!("a=rtpmap:{pt} ");
    let rtpmap = sdp.lines().find(|l| l.starts_with(&prefix))?;
    Some(rtpmap[prefix.len()..].split('/').next()?.to_owned())
}

#[wasm_bindgen_test]
async fn broadcasts_over_whip_with_h264_and_deletes_on_stop() {
    let log = mock_whip();
    let cfg = obj(&[(
        "ingestEndpoint",
        "http://127.0.0.1:9/v1/channels/c1/whip".into(),
    )]);
    let c = create_broadcast_client(cfg).expect("create");
    let states = Array::new();
    let on_state = Function::new_with_args("s", "this.push(s)").bind0(&states);
    c.on("connectionStateChange".into(), on_state.into())
        .expect("on");
    let red = canvas(160, 90, Some(RED));
    JsFuture::from(c.add_image_source(red.into(), "red".into(), JsValue::UNDEFINED))
        .await
        .expect("add red");

    // A refused key: 401 → InvalidStreamKey.
    let e = rejection(c.start_broadcast("wrong_key".into(), JsValue::UNDEFINED)).await;
    assert_eq!(code_of(&e), 10003.0);
    assert_eq!(c.get_connection_state(), "failed");

    JsFuture::from(c.start_broadcast("good_key".into(), JsValue::UNDEFINED))
        .await
        .expect("startBroadcast");
    let offer = get(&log, "offer").as_string().expect("an offer was posted");
    assert_eq!(
        get(&log, "contentType").as_string().as_deref(),
        Some("application/sdp")
    );
    assert_eq!(
        first_video_codec(&offer).as_deref(),
        Some("H264"),
        "H.264 preferred"
    );
    assert!(offer.contains("opus/48000"), "Opus audio offered");
    assert!(offer.contains("a=sendonly"));
    for _ in 0..100 {
        if c.get_connection_state() == "connected" {
            break;
        }
        sleep(50).await;
    }
    assert_eq!(c.get_connection_state(), "connected");
    assert_eq!(c.get_session_id().as_deref(), Some("s1"));
    let kinds: Vec<String> = Array::from(&get(&log, "kinds"))
        .iter()
        .filter_map(|k| k.as_string())
        .collect();
    assert!(
        kinds.contains(&"video".to_owned()) && kinds.contains(&"audio".to_owned()),
        "{kinds:?}"
    );

    // A second start while live is refused.
    let e = rejection(c.start_broadcast("good_key".into(), JsValue::UNDEFINED)).await;
    assert_eq!(code_of(&e), 1000.0);

    c.stop_broadcast();
    assert_eq!(c.get_connection_state(), "closed");
    for _ in 0..40 {
        if Array::from(&get(&log, "deletes")).length() > 0 {
            break;
        }
        sleep(50).await;
    }
    let deletes = Array::from(&get(&log, "deletes"));
    assert_eq!(
        deletes.get(0).as_string().as_deref(),
        Some("http://127.0.0.1:9/v1/channels/c1/whip/sessions/s1")
    );
    let auth = Array::from(&get(&log, "auth"));
    assert_eq!(
        auth.get(auth.length() - 1).as_string().as_deref(),
        Some("Bearer good_key")
    );
    let seen: Vec<String> = states.iter().filter_map(|s| s.as_string()).collect();
    assert!(seen.contains(&"connecting".to_owned()) && seen.contains(&"connected".to_owned()));
    assert_eq!(seen.last().map(String::as_str), Some("closed"), "{seen:?}");
    let restore: Function = get(&log, "restore").dyn_into().expect("restore");
    restore.call0(&log).expect("restore");
    c.delete();
}
