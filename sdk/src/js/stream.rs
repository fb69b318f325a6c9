//! `LocalStageStream`: a local track the strategy can publish.

use super::convert::type_error;
use crate::core::quality::{grade_interval, LossCounters};
use crate::core::simulcast::{parse_video_config, VideoConfig};
use crate::core::StreamKind;
use std::cell::{Cell, RefCell};
use super::small_map::SmallMap;
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;
use web_sys::MediaStreamTrack;

/// What stages need from a local stream; shared with the JS wrapper.
pub(crate) struct LocalShared {
    pub key: u32,
    pub kind: StreamKind,
    pub track: MediaStreamTrack,
    pub muted: Cell<bool>,
    /// Encoder settings (video; the defaults for audio).
    pub video: VideoConfig,
    /// The sender publishing this stream, for its stats.
    pub sender: RefCell<Option<web_sys::RtcRtpSender>>,
}

/// `requestQualityStats()`'s decision (the package's JS reads the stats
/// report and keeps the previous counters): IVS's `NetworkQuality` for the
/// interval between two looks. Internal; not part of the API.
#[wasm_bindgen(js_name = __networkQuality)]
pub fn network_quality(prev_arrived: f64, prev_lost: f64, arrived: f64, lost: f64) -> u8 {
    let n = |v: f64| if v.is_finite() && v > 0.0 { v as u64 } else { 0 };
    let at = |arrived, lost| LossCounters { arrived: n(arrived), lost: n(lost) };
    grade_interval(at(prev_arrived, prev_lost), at(arrived, lost)) as u8
}

type MuteHook = dyn Fn(u32);

thread_local! {
    static NEXT_KEY: Cell<u32> = const { Cell::new(1) };
    static REGISTRY: RefCell<SmallMap<u32, Weak<LocalShared>>> = RefCell::new(SmallMap::default());
    static MUTE_HOOKS: RefCell<Vec<Weak<MuteHook>>> = const { RefCell::new(Vec::new()) };
}

/// Finds the stream behind a JS value returned by `stageStreamsToPublish()`.
pub(crate) fn lookup(value: &JsValue) -> Option<Rc<LocalShared>> {
    let key = js_sys::Reflect::get(value, &JsValue::from_str("__stagecastKey"))
        .ok()?
        .as_f64()? as u32;
    REGISTRY.with(|r| r.borrow().get(&key).and_then(Weak::upgrade))
}

/// Registers a stage's "a local stream was (un)muted" hook; it lives as long
/// as the caller keeps the `Rc`.
pub(crate) fn add_mute_hook(hook: &Rc<MuteHook>) {
    MUTE_HOOKS.with(|h| {
        let mut hooks = h.borrow_mut();
        hooks.retain(|w| w.strong_count() > 0);
        hooks.push(Rc::downgrade(hook));
    });
}

/// A local audio or video track to publish on a stage.
#[wasm_bindgen]
pub struct LocalStageStream {
    shared: Rc<LocalShared>,
}

#[wasm_bindgen]
impl LocalStageStream {
    /// `new LocalStageStream(mediaStreamTrack, config?)`. A video stream's
    /// config (`maxBitrate`, `maxFramerate`, `simulcast`) is checked against
    /// IVS's limits (a `RangeError` outside them); an audio stream's is
    /// accepted and left to the browser.
    #[wasm_bindgen(constructor)]
    pub fn new(track: JsValue, config: JsValue) -> Result<LocalStageStream, JsValue> {
        let track: MediaStreamTrack = track
            .dyn_into()
            .map_err(|_| type_error("LocalStageStream: expected a MediaStreamTrack"))?;
        let kind = StreamKind::parse(&track.kind())
            .ok_or_else(|| type_error("LocalStageStream: the track must be audio or video"))?;
        let video = match kind {
            StreamKind::Video => {
                let text = js_sys::JSON::stringify(&config).ok().and_then(|t| t.as_string());
                parse_video_config(text.as_deref())
                    .map_err(|e| JsValue::from(js_sys::RangeError::new(&format!("LocalStageStream: {e}"))))?
            }
            StreamKind::Audio => VideoConfig::default(),
        };
        let key = NEXT_KEY.with(|k| {
            let key = k.get();
            k.set(key.wrapping_add(1).max(1));
            key
        });
        let shared = Rc::new(LocalShared {
            key,
            kind,
            muted: Cell::new(!track.enabled()),
            video,
            track,
            sender: RefCell::new(None),
        });
        REGISTRY.with(|r| r.borrow_mut().insert(key, Rc::downgrade(&shared)));
        Ok(LocalStageStream { shared })
    }

    /// Mutes (disables the track) or unmutes; stages publishing this stream
    /// tell everyone (`stageStreamMuteChanged`).
    #[wasm_bindgen(js_name = setMuted)]
    pub fn set_muted(&self, muted: JsValue) {
        let muted = muted.is_truthy();
        self.shared.track.set_enabled(!muted);
        if self.shared.muted.replace(muted) == muted {
            return;
        }
        let key = self.shared.key;
        let hooks: Vec<Rc<MuteHook>> =
            MUTE_HOOKS.with(|h| h.borrow().iter().filter_map(Weak::upgrade).collect());
        for hook in hooks {
            crate::web::defer(move || hook(key));
        }
    }

    #[wasm_bindgen(getter, js_name = isMuted)]
    pub fn is_muted(&self) -> bool {
        self.shared.muted.get()
    }

    /// The track id.
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> String {
        self.shared.track.id()
    }

    /// `'audio'` or `'video'`.
    #[wasm_bindgen(getter, js_name = streamType)]
    pub fn stream_type(&self) -> String {
        self.shared.kind.as_str().to_owned()
    }

    #[wasm_bindgen(getter, js_name = mediaStreamTrack)]
    pub fn media_stream_track(&self) -> MediaStreamTrack {
        Clone::clone(&self.shared.track)
    }

    /// The browser's stats of the sender publishing this stream (an empty
    /// report while it is not published).
    #[wasm_bindgen(js_name = requestRTCStats)]
    pub fn request_rtc_stats(&self) -> js_sys::Promise {
        let sender = self.shared.sender.borrow().clone().map(JsValue::from);
        crate::web::stats::rtc_stats(sender.as_ref())
    }

    /// Internal handle the stage uses to find this stream.
    #[wasm_bindgen(getter, js_name = __stagecastKey)]
    pub fn stagecast_key(&self) -> u32 {
        self.shared.key
    }
}

impl Drop for LocalStageStream {
    fn drop(&mut self) {
        let key = self.shared.key;
        REGISTRY.with(|r| r.borrow_mut().remove(&key));
    }
}
