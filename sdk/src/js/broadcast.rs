//! The broadcast client (IVS `AmazonIVSBroadcastClient`): compositor +
//! audio mixer + WHIP ingest to a channel.
//!
//! Borrow discipline: state lives in one `RefCell`; listeners are always
//! called from the microtask queue (`defer`), never while it is borrowed.

use super::convert::{set, type_error};
use super::listeners::Listeners;
use crate::core::broadcast::{
    BroadcastError, BroadcastErrorCode as Code, Composition, CompositionInput,
    StreamConfig,
};
use crate::core::simulcast::Encoding;
use crate::web::clock::FrameClock;
use crate::web::compositor::{hidden_video, release_video, Compositor, Picture};
use crate::core::ingest::ReconnectConfig;
use crate::web::mixer::Mixer;
use ingest::Broadcast;
use js_sys::{Object, Promise, Reflect};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use web_sys::{HtmlCanvasElement, MediaStream};

mod ingest;

const CONNECTION_STATE_CHANGE: &str = "connectionStateChange";
const CLIENT_ERROR: &str = "clientError";
const ACTIVE_STATE_CHANGE: &str = "activeStateChange";

/// More layers than a 12-tile stage (tiles + avatar cards + overlays) needs.
const MAX_LAYERS: usize = 64;

/// A `BroadcastClientError` as a JS `Error` with `code` and `name`.
pub(crate) fn client_error(e: &BroadcastError) -> JsValue {
    let err = js_sys::Error::new(&e.message);
    err.set_name(e.code.name());
    set(&err, "code", e.code.as_u32());
    err.into()
}

fn bail(code: Code, message: impl Into<String>) -> BroadcastError {
    BroadcastError::new(code, message)
}

fn num(obj: &JsValue, key: &str) -> Option<f64> {
    Reflect::get(obj, &JsValue::from_str(key))
        .ok()
        .and_then(|v| v.as_f64())
}

/// Reads `{index, x, y, width, height}`; `None` if `value` is not an object.
pub(crate) fn composition_input(value: &JsValue) -> Option<CompositionInput> {
    if !value.is_object() {
        return None;
    }
    Some(CompositionInput {
        index: num(value, "index"),
        x: num(value, "x"),
        y: num(value, "y"),
        width: num(value, "width"),
        height: num(value, "height"),
    })
}

fn composition_js(c: &Composition) -> Object {
    let o = Object::new();
    set(&o, "index", c.index);
    set(&o, "x", c.rect.x);
    set(&o, "y", c.rect.y);
    set(&o, "width", c.rect.width);
    set(&o, "height", c.rect.height);
    o
}

/// `{maxResolution: {width, height}, maxFramerate, maxBitrate, simulcast?}`;
/// missing fields take the `BASIC_LANDSCAPE` values. Returns the config and
/// the video's `sendEncodings` (none without simulcast).
fn stream_config(value: &JsValue) -> Result<(StreamConfig, Vec<Encoding>), BroadcastError> {
    let mut c = StreamConfig::default();
    if value.is_undefined() || value.is_null() {
        return Ok((c, Vec::new()));
    }
    if !value.is_object() {
        return Err(bail(
            Code::StreamConfiguration,
            "streamConfig must be an object",
        ));
    }
    let res =
        Reflect::get(value, &JsValue::from_str("maxResolution")).unwrap_or(JsValue::UNDEFINED);
    let int = |v: Option<f64>, default: u32| -> Result<u32, BroadcastError> {
        match v {
            None => Ok(default),
            Some(v) if v.is_finite() && v >= 0.0 && v <= f64::from(u32::MAX) => {
                Ok(v.round() as u32)
            }
            Some(_) => Err(bail(
                Code::StreamConfiguration,
                "streamConfig numbers must be non-negative integers",
            )),
        }
    };
    if res.is_object() {
        c.width = int(num(&res, "width"), c.width)?;
        c.height = int(num(&res, "height"), c.height)?;
    }
    c.max_framerate = int(num(value, "maxFramerate"), c.max_framerate)?;
    c.max_bitrate_kbps = int(num(value, "maxBitrate"), c.max_bitrate_kbps)?;
    c.validate()?;
    let simulcast = Reflect::get(value, &JsValue::from_str("simulcast")).unwrap_or(JsValue::UNDEFINED);
    let text = js_sys::JSON::stringify(&simulcast).ok().and_then(|t| t.as_string());
    let layers = c.simulcast_layers(text.as_deref())?;
    Ok((c, c.encodings(layers)))
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerKind {
    Device,
    Image,
}

struct St {
    config: StreamConfig,
    /// The video's simulcast encodings (none without simulcast).
    encodings: Vec<Encoding>,
    ingest_endpoint: Option<String>,
    compositor: Compositor,
    mixer: Option<Mixer>,
    clock: Option<FrameClock>,
    /// Which layers are devices (vs images), with their input streams.
    layers: Vec<(String, LayerKind, Option<MediaStream>)>,
    output: MediaStream,
    broadcast: Broadcast,
    deleted: bool,
}

pub(crate) struct Inner {
    st: RefCell<St>,
    listeners: Listeners,
}

/// The broadcast client returned by `create()`.
#[wasm_bindgen]
pub struct BroadcastClient {
    inner: Rc<Inner>,
}

/// `create({streamConfig, ingestEndpoint})` (the `create` of the default export).
#[wasm_bindgen(js_name = createBroadcastClient)]
pub fn create_broadcast_client(config: JsValue) -> Result<BroadcastClient, JsValue> {
    let field = |key| Reflect::get(&config, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED);
    let (stream_cfg, endpoint, reconnect) = if config.is_object() {
        let ep = field("ingestEndpoint").as_string().filter(|s| !s.is_empty());
        (field("streamConfig"), ep, reconnect_config(&field("networkReconnectConfig")))
    } else {
        (JsValue::UNDEFINED, None, ReconnectConfig::default())
    };
    let (cfg, encodings) = stream_config(&stream_cfg).map_err(|e| client_error(&e))?;
    let compositor = Compositor::new(cfg.width, cfg.height)
        .map_err(|e| client_error(&bail(Code::Broadcast, e.to_string())))?;
    let mixer = match Mixer::new() {
        Ok(m) => Some(m),
        Err(e) => {
            web_sys::console::warn_1(&JsValue::from_str(&format!(
                "stagecast: no audio mixer ({e}); broadcasting video only"
            )));
            None
        }
    };
    let tracks = js_sys::Array::of1(compositor.track());
    if let Some(t) = mixer.as_ref().and_then(Mixer::track) {
        tracks.push(&t);
    }
    let output = MediaStream::new_with_tracks(&tracks)
        .map_err(|e| client_error(&bail(Code::Broadcast, crate::web::js_error_text(&e))))?;
    let inner = Rc::new(Inner {
        st: RefCell::new(St {
            config: cfg,
            encodings,
            ingest_endpoint: endpoint,
            compositor,
            mixer,
            clock: None,
            layers: Vec::new(),
            output,
            broadcast: Broadcast::new(reconnect),
            deleted: false,
        }),
        listeners: Listeners::default(),
    });
    let weak = Rc::downgrade(&inner);
    let clock = FrameClock::start(cfg.frame_period_ms(), move || {
        if let Some(inner) = weak.upgrade() {
            inner.tick();
        }
    });
    inner.st.borrow_mut().clock = Some(clock);
    Ok(BroadcastClient { inner })
}

/// IVS `networkReconnectConfig {reconnect, timeout}` (ms, at least
/// 10 000); what is missing or invalid takes the default.
fn reconnect_config(value: &JsValue) -> ReconnectConfig {
    let mut c = ReconnectConfig::default();
    if !value.is_object() {
        return c;
    }
    if let Ok(r) = Reflect::get(value, &JsValue::from_str("reconnect")) {
        if let Some(r) = r.as_bool() {
            c.reconnect = r;
        }
    }
    if let Some(t) = num(value, "timeout").filter(|t| t.is_finite()) {
        c.timeout_ms = t.max(ReconnectConfig::MIN_TIMEOUT_MS);
    }
    c
}

fn reject(e: &BroadcastError) -> Promise {
    Promise::reject(&client_error(e))
}

fn resolved() -> Promise {
    Promise::resolve(&JsValue::UNDEFINED)
}

fn name_arg(name: &JsValue) -> Result<String, BroadcastError> {
    name.as_string().filter(|n| !n.is_empty()).ok_or_else(|| {
        bail(
            Code::AddDeviceInvalidName,
            "the name must be a non-empty string",
        )
    })
}

#[wasm_bindgen]
impl BroadcastClient {
    /// Adds a camera/screen/stage `MediaStream` as a video source drawn in
    /// `composition` (`{index, x?, y?, width?, height?}`).
    #[wasm_bindgen(js_name = addVideoInputDevice)]
    pub fn add_video_input_device(
        &self,
        stream: JsValue,
        name: JsValue,
        composition: JsValue,
    ) -> Promise {
        let result = (|| {
            let name = name_arg(&name)?;
            let stream: MediaStream = stream
                .dyn_into()
                .map_err(|_| bail(Code::AddDeviceMissingTrack, "expected a MediaStream"))?;
            let comp = composition_input(&composition).ok_or_else(|| {
                bail(
                    Code::AddDeviceInvalidComposition,
                    "a composition {index, x, y, width, height} is required",
                )
            })?;
            self.inner.add_video(&name, stream, comp)
        })();
        match result {
            Ok(()) => resolved(),
            Err(e) => reject(&e),
        }
    }

    /// Adds an image, video element, canvas or `ImageBitmap` as a source.
    #[wasm_bindgen(js_name = addImageSource)]
    pub fn add_image_source(
        &self,
        source: JsValue,
        name: JsValue,
        composition: JsValue,
    ) -> Promise {
        let result = (|| {
            let name = name_arg(&name)?;
            if !source.is_object() {
                return Err(bail(
                    Code::FailedToAddImage,
                    "expected an image, video, canvas or ImageBitmap",
                ));
            }
            let comp = composition_input(&composition).unwrap_or_default();
            self.inner.add_image(&name, Picture::from_js(source), comp)
        })();
        match result {
            Ok(()) => resolved(),
            Err(e) => reject(&e),
        }
    }

    /// Mixes the audio of `stream` into the broadcast.
    #[wasm_bindgen(js_name = addAudioInputDevice)]
    pub fn add_audio_input_device(&self, stream: JsValue, name: JsValue) -> Promise {
        let result = (|| {
            let name = name_arg(&name)?;
            let stream: MediaStream = stream
                .dyn_into()
                .map_err(|_| bail(Code::AddDeviceMissingTrack, "expected a MediaStream"))?;
            self.inner.add_audio(&name, stream)
        })();
        match result {
            Ok(()) => resolved(),
            Err(e) => reject(&e),
        }
    }

    #[wasm_bindgen(js_name = removeVideoInputDevice)]
    pub fn remove_video_input_device(&self, name: JsValue) -> Result<(), JsValue> {
        let name = name.as_string().unwrap_or_default();
        self.inner
            .remove_layer(&name, Some(LayerKind::Device))
            .map_err(|e| client_error(&e))
    }

    #[wasm_bindgen(js_name = removeImage)]
    pub fn remove_image(&self, name: JsValue) -> Result<(), JsValue> {
        let name = name.as_string().unwrap_or_default();
        self.inner
            .remove_layer(&name, Some(LayerKind::Image))
            .map_err(|e| client_error(&e))
    }

    #[wasm_bindgen(js_name = removeAudioInputDevice)]
    pub fn remove_audio_input_device(&self, name: JsValue) -> Result<(), JsValue> {
        let name = name.as_string().unwrap_or_default();
        self.inner.remove_audio(&name).map_err(|e| client_error(&e))
    }

    /// Moves/resizes/re-orders a video device or image.
    #[wasm_bindgen(js_name = updateVideoDeviceComposition)]
    pub fn update_video_device_composition(
        &self,
        name: JsValue,
        composition: JsValue,
    ) -> Result<(), JsValue> {
        let name = name.as_string().unwrap_or_default();
        let comp = composition_input(&composition).ok_or_else(|| {
            client_error(&bail(
                Code::UpdateCompositionInvalid,
                "the composition must be an object",
            ))
        })?;
        self.inner.update(&name, comp).map_err(|e| client_error(&e))
    }

    /// Swaps the compositions of two video devices/images.
    #[wasm_bindgen(js_name = exchangeVideoDevicePositions)]
    pub fn exchange_video_device_positions(&self, a: JsValue, b: JsValue) -> Result<(), JsValue> {
        let (a, b) = (
            a.as_string().unwrap_or_default(),
            b.as_string().unwrap_or_default(),
        );
        self.inner.exchange(&a, &b).map_err(|e| client_error(&e))
    }

    /// `{name, source, element, position}` of a video device, or `undefined`.
    #[wasm_bindgen(js_name = getVideoInputDevice)]
    pub fn get_video_input_device(&self, name: JsValue) -> JsValue {
        let name = name.as_string().unwrap_or_default();
        let st = self.inner.st.borrow();
        let Some((_, _, source)) = st.layers.iter().find(|(n, _, _)| *n == name) else {
            return JsValue::UNDEFINED;
        };
        let o = Object::new();
        set(&o, "name", name.as_str());
        if let Some(s) = source {
            set(&o, "source", JsValue::from(s));
        }
        if let Some(Picture::Video(v)) = st.compositor.picture(&name) {
            set(&o, "element", JsValue::from(v));
        }
        if let Some(c) = st.compositor.composition(&name) {
            set(&o, "position", composition_js(&c));
        }
        o.into()
    }

    /// The `MediaStream` of an audio device, or `undefined`.
    #[wasm_bindgen(js_name = getAudioInputDevice)]
    pub fn get_audio_input_device(&self, name: JsValue) -> JsValue {
        let name = name.as_string().unwrap_or_default();
        let st = self.inner.st.borrow();
        st.mixer
            .as_ref()
            .and_then(|m| m.stream(&name))
            .map(JsValue::from)
            .unwrap_or(JsValue::UNDEFINED)
    }

    /// Shows the composite in `canvas` (scaled to the canvas' size).
    #[wasm_bindgen(js_name = attachPreview)]
    pub fn attach_preview(&self, canvas: JsValue) -> Result<(), JsValue> {
        let canvas: HtmlCanvasElement = canvas
            .dyn_into()
            .map_err(|_| type_error("attachPreview: expected an HTMLCanvasElement"))?;
        self.inner
            .st
            .borrow_mut()
            .compositor
            .attach_preview(canvas)
            .map_err(|e| client_error(&bail(Code::Broadcast, e.to_string())))
    }

    #[wasm_bindgen(js_name = detachPreview)]
    pub fn detach_preview(&self) {
        self.inner.st.borrow_mut().compositor.detach_preview();
    }

    /// `{width, height}` of the composite.
    #[wasm_bindgen(js_name = getCanvasDimensions)]
    pub fn get_canvas_dimensions(&self) -> JsValue {
        let (w, h) = self.inner.canvas_size();
        let o = Object::new();
        set(&o, "width", w);
        set(&o, "height", h);
        o.into()
    }

    /// The `AudioContext` of the mixer (insert your own nodes), if any.
    #[wasm_bindgen(js_name = getAudioContext)]
    pub fn get_audio_context(&self) -> JsValue {
        self.inner
            .st
            .borrow()
            .mixer
            .as_ref()
            .map(|m| JsValue::from(m.context()))
            .unwrap_or(JsValue::UNDEFINED)
    }

    /// Beyond IVS: the output `MediaStream` (one video + one audio track,
    /// the same for the life of the client).
    #[wasm_bindgen(js_name = getOutputStream)]
    pub fn get_output_stream(&self) -> MediaStream {
        Clone::clone(&self.inner.st.borrow().output)
    }

    /// Beyond IVS: compositor statistics, for benchmarks:
    /// `{framesComposed, fps, composeMsP95, composeMsMean, workerClock}`.
    #[wasm_bindgen(js_name = getStats)]
    pub fn get_stats(&self) -> JsValue {
        let st = self.inner.st.borrow();
        let stats = &st.compositor.stats;
        let o = Object::new();
        set(&o, "framesComposed", stats.frames as f64);
        set(&o, "fps", stats.fps(crate::web::now_ms()));
        set(&o, "composeMsP95", stats.p95_ms());
        set(&o, "composeMsMean", stats.mean_ms());
        set(
            &o,
            "workerClock",
            st.clock.as_ref().is_some_and(FrameClock::is_worker),
        );
        o.into()
    }

    #[wasm_bindgen(js_name = getConnectionState)]
    pub fn get_connection_state(&self) -> String {
        self.inner.st.borrow().broadcast.ingest.state().as_str().to_owned()
    }

    /// The WHIP session resource of the current broadcast, if any.
    #[wasm_bindgen(js_name = getSessionId)]
    pub fn get_session_id(&self) -> Option<String> {
        let st = self.inner.st.borrow();
        let loc = st.broadcast.location()?;
        loc.rsplit('/').next().map(str::to_owned)
    }

    #[wasm_bindgen(js_name = enableVideo)]
    pub fn enable_video(&self) {
        self.inner.st.borrow().compositor.track().set_enabled(true);
    }

    #[wasm_bindgen(js_name = disableVideo)]
    pub fn disable_video(&self) {
        self.inner.st.borrow().compositor.track().set_enabled(false);
    }

    #[wasm_bindgen(js_name = enableAudio)]
    pub fn enable_audio(&self) {
        if let Some(m) = &self.inner.st.borrow().mixer {
            m.set_enabled(true);
        }
    }

    #[wasm_bindgen(js_name = disableAudio)]
    pub fn disable_audio(&self) {
        if let Some(m) = &self.inner.st.borrow().mixer {
            m.set_enabled(false);
        }
    }

    /// Starts broadcasting to the channel: WHIP to `ingestEndpoint` (or the
    /// one given to `create`) with `Bearer <streamKey>`.
    #[wasm_bindgen(js_name = startBroadcast)]
    pub fn start_broadcast(&self, stream_key: JsValue, ingest_endpoint: JsValue) -> Promise {
        Inner::start_broadcast(
            &self.inner,
            stream_key.as_string().unwrap_or_default(),
            ingest_endpoint.as_string(),
        )
    }

    /// Ends the broadcast (`DELETE` of the WHIP session).
    #[wasm_bindgen(js_name = stopBroadcast)]
    pub fn stop_broadcast(&self) {
        Inner::stop_broadcast(&self.inner);
    }

    /// Adds a listener for `connectionStateChange`, `clientError` or
    /// `activeStateChange`.
    pub fn on(&self, event: JsValue, callback: JsValue) -> Result<(), JsValue> {
        self.inner.listeners.add(event, callback)
    }

    pub fn off(&self, event: JsValue, callback: JsValue) -> Result<(), JsValue> {
        self.inner.listeners.remove(event, callback)
    }

    /// Stops everything and releases the tracks; the client is unusable after.
    pub fn delete(&self) {
        Inner::stop_broadcast(&self.inner);
        self.inner.shutdown();
    }
}

impl Drop for BroadcastClient {
    fn drop(&mut self) {
        self.inner.shutdown();
    }
}


impl BroadcastClient {
    /// The shared state, for `autoLayout`.
    pub(crate) fn inner(&self) -> Rc<Inner> {
        self.inner.clone()
    }
}

impl Inner {
    fn tick(&self) {
        // Skip a frame rather than wait if an API call holds the state.
        if let Ok(mut st) = self.st.try_borrow_mut() {
            if !st.deleted {
                let now = crate::web::now_ms();
                st.compositor.compose(now);
            }
        }
    }

    fn emit(self: &Rc<Self>, event: &'static str, arg: JsValue) {
        let weak = Rc::downgrade(self);
        crate::web::defer(move || {
            let Some(inner) = weak.upgrade() else { return };
            inner.listeners.call(event, &js_sys::Array::of1(&arg));
        });
    }

    fn alive(st: &St) -> Result<(), BroadcastError> {
        if st.deleted {
            return Err(bail(Code::ClientInvalid, "the client was deleted"));
        }
        Ok(())
    }

    pub(crate) fn canvas_size(&self) -> (f64, f64) {
        self.st.borrow().compositor.size()
    }

    fn check_new_layer(st: &St, name: &str) -> Result<(), BroadcastError> {
        Self::alive(st)?;
        if st.compositor.has(name) {
            return Err(bail(
                Code::AddDeviceNameExists,
                format!("a source named '{name}' already exists"),
            ));
        }
        if st.compositor.len() >= MAX_LAYERS {
            return Err(bail(
                Code::AddDeviceLimit,
                format!("at most {MAX_LAYERS} video sources"),
            ));
        }
        Ok(())
    }

    fn resolve(st: &St, comp: CompositionInput, code: Code) -> Result<Composition, BroadcastError> {
        let (w, h) = st.compositor.size();
        comp.resolve(w, h).map_err(|m| bail(code, m))
    }

    pub(crate) fn add_video(
        &self,
        name: &str,
        stream: MediaStream,
        comp: CompositionInput,
    ) -> Result<(), BroadcastError> {
        let mut st = self.st.borrow_mut();
        Self::check_new_layer(&st, name)?;
        if stream.get_video_tracks().length() == 0 {
            return Err(bail(
                Code::AddDeviceMissingTrack,
                "the MediaStream has no video track",
            ));
        }
        let comp = Self::resolve(&st, comp, Code::AddDeviceInvalidComposition)?;
        let video =
            hidden_video(&stream).map_err(|e| bail(Code::AddDeviceFailed, e.to_string()))?;
        st.compositor.add(name, Picture::Video(video), comp);
        st.layers
            .push((name.to_owned(), LayerKind::Device, Some(stream)));
        Ok(())
    }

    pub(crate) fn add_image(
        &self,
        name: &str,
        picture: Picture,
        comp: CompositionInput,
    ) -> Result<(), BroadcastError> {
        let mut st = self.st.borrow_mut();
        Self::check_new_layer(&st, name)?;
        let comp = Self::resolve(&st, comp, Code::AddDeviceInvalidComposition)?;
        st.compositor.add(name, picture, comp);
        st.layers.push((name.to_owned(), LayerKind::Image, None));
        Ok(())
    }

    /// Removes a video device (`kind` Device), an image (Image) or either (None).
    pub(crate) fn remove_layer(
        &self,
        name: &str,
        kind: Option<LayerKind>,
    ) -> Result<(), BroadcastError> {
        let mut st = self.st.borrow_mut();
        Self::alive(&st)?;
        let Some(i) = st
            .layers
            .iter()
            .position(|(n, k, _)| n == name && kind.is_none_or(|want| want == *k))
        else {
            return Err(bail(
                Code::RemoveVideoDeviceNotFound,
                format!("no video source named '{name}'"),
            ));
        };
        let (_, removed_kind, _) = st.layers.remove(i);
        // Hidden videos we created are released; user elements are left alone.
        let owned = removed_kind == LayerKind::Device;
        if let (Some(Picture::Video(v)), true) = (st.compositor.remove(name), owned) {
            release_video(&v);
        }
        Ok(())
    }

    pub(crate) fn add_audio(&self, name: &str, stream: MediaStream) -> Result<(), BroadcastError> {
        let mut st = self.st.borrow_mut();
        Self::alive(&st)?;
        let Some(mixer) = st.mixer.as_mut() else {
            return Err(bail(
                Code::AddDeviceUnsupported,
                "no AudioContext in this browser",
            ));
        };
        if mixer.has(name) {
            return Err(bail(
                Code::AddDeviceNameExists,
                format!("an audio device named '{name}' already exists"),
            ));
        }
        if stream.get_audio_tracks().length() == 0 {
            return Err(bail(
                Code::AddDeviceMissingTrack,
                "the MediaStream has no audio track",
            ));
        }
        mixer
            .add(name, stream)
            .map_err(|e| bail(Code::AddDeviceFailed, e.to_string()))
    }

    pub(crate) fn remove_audio(&self, name: &str) -> Result<(), BroadcastError> {
        let mut st = self.st.borrow_mut();
        Self::alive(&st)?;
        if st.mixer.as_mut().is_some_and(|m| m.remove(name)) {
            Ok(())
        } else {
            Err(bail(
                Code::RemoveAudioDeviceNotFound,
                format!("no audio device named '{name}'"),
            ))
        }
    }

    /// Beyond IVS (used by `autoLayout`): an audio device's gain; 0 mutes.
    pub(crate) fn set_audio_gain(&self, name: &str, gain: f32) -> bool {
        self.st
            .borrow()
            .mixer
            .as_ref()
            .is_some_and(|m| m.set_gain(name, gain))
    }

    pub(crate) fn update(&self, name: &str, comp: CompositionInput) -> Result<(), BroadcastError> {
        let mut st = self.st.borrow_mut();
        Self::alive(&st)?;
        if !st.compositor.has(name) {
            return Err(bail(
                Code::UpdateCompositionNotFound,
                format!("no video source named '{name}'"),
            ));
        }
        let comp = Self::resolve(&st, comp, Code::UpdateCompositionInvalid)?;
        st.compositor.update(name, comp);
        Ok(())
    }

    /// Sets a resolved composition (autoLayout); false if no such layer.
    pub(crate) fn place(&self, name: &str, comp: Composition) -> bool {
        self.st.borrow_mut().compositor.update(name, comp)
    }

    /// Beyond IVS (`autoLayout`'s `nameLabels`): a name drawn over a layer.
    pub(crate) fn set_label(&self, name: &str, label: Option<&str>) -> bool {
        self.st.borrow_mut().compositor.set_label(name, label)
    }

    pub(crate) fn has_layer(&self, name: &str) -> bool {
        self.st.borrow().compositor.has(name)
    }

    fn exchange(&self, a: &str, b: &str) -> Result<(), BroadcastError> {
        let mut st = self.st.borrow_mut();
        Self::alive(&st)?;
        let (Some(ca), Some(cb)) = (st.compositor.composition(a), st.compositor.composition(b))
        else {
            return Err(bail(
                Code::ExchangePosition,
                format!("no video sources named '{a}' and '{b}'"),
            ));
        };
        st.compositor.update(a, cb);
        st.compositor.update(b, ca);
        Ok(())
    }

    fn shutdown(&self) {
        let Ok(mut st) = self.st.try_borrow_mut() else {
            return;
        };
        if std::mem::replace(&mut st.deleted, true) {
            return;
        }
        Self::end_broadcast(&mut st);
        st.clock = None;
        st.compositor.stop();
        st.layers.clear();
        if let Some(mut m) = st.mixer.take() {
            m.close();
        }
    }
}
