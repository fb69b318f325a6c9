//! WHIP ingest to a channel: one send-only peer connection carrying the
//! compositor's video track (H.264 preferred) and the mixer's audio track
//! (Opus), offered with `Authorization: Bearer <streamKey>` to the channel's
//! ingest endpoint. No trickle ICE (the server is ICE-lite).

use super::http;
use super::sdp::{self, browser};
use crate::core::broadcast::{prefer_codec, StreamConfig};
use js_sys::{Array, Object, Reflect};
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Event, MediaStreamTrack, RtcPeerConnection, RtcRtpSender, RtcRtpTransceiver,
    RtcRtpTransceiverDirection, RtcRtpTransceiverInit,
};

/// Why starting the broadcast failed.
pub type IngestError = super::sdp::SdpError;

/// A live ingest session; closes its peer connection on drop (the caller
/// sends the `DELETE` first).
pub struct IngestPeer {
    pc: RtcPeerConnection,
    _on_state: Closure<dyn FnMut(Event)>,
    /// The WHIP session resource, for `DELETE` on stop.
    pub location: Option<String>,
}

/// Puts `preferred` first in the transceiver's codec list (where the
/// browser supports `setCodecPreferences`).
fn prefer(transceiver: &RtcRtpTransceiver, kind: &str, preferred: &str) {
    let Some(caps) = RtcRtpSender::get_capabilities(kind) else {
        return;
    };
    let Ok(codecs) = Reflect::get(&caps, &JsValue::from_str("codecs")) else {
        return;
    };
    let codecs: Vec<JsValue> = Array::from(&codecs).iter().collect();
    let mimes: Vec<String> = codecs
        .iter()
        .map(|c| {
            Reflect::get(c, &JsValue::from_str("mimeType"))
                .ok()
                .and_then(|m| m.as_string())
                .unwrap_or_default()
        })
        .collect();
    if !mimes.iter().any(|m| m.eq_ignore_ascii_case(preferred)) {
        return;
    }
    let ordered: Array = prefer_codec(&mimes, preferred)
        .into_iter()
        .map(|i| codecs[i].clone())
        .collect();
    if Reflect::has(transceiver, &JsValue::from_str("setCodecPreferences")).unwrap_or(false) {
        transceiver.set_codec_preferences(&ordered);
    }
}

/// Caps the video encoder at the stream config's bitrate and frame rate.
async fn limit_encoder(sender: &RtcRtpSender, config: &StreamConfig) {
    let params: JsValue = sender.get_parameters().into();
    let Ok(encodings) = Reflect::get(&params, &JsValue::from_str("encodings")) else {
        return;
    };
    let encodings = Array::from(&encodings);
    if encodings.length() == 0 {
        encodings.push(&Object::new());
    }
    for e in encodings.iter() {
        let _ = Reflect::set(
            &e,
            &JsValue::from_str("maxBitrate"),
            &JsValue::from_f64(f64::from(config.max_bitrate_kbps) * 1000.0),
        );
        let _ = Reflect::set(
            &e,
            &JsValue::from_str("maxFramerate"),
            &JsValue::from_f64(f64::from(config.max_framerate)),
        );
    }
    let _ = Reflect::set(&params, &JsValue::from_str("encodings"), &encodings);
    let _ = JsFuture::from(sender.set_parameters_with_parameters(params.unchecked_ref())).await;
}

impl IngestPeer {
    /// Negotiates with the WHIP endpoint `url`. `on_state` receives every
    /// `connectionState` (`new|connecting|connected|disconnected|failed|closed`).
    pub async fn start(
        url: &str,
        stream_key: &str,
        video: &MediaStreamTrack,
        audio: Option<&MediaStreamTrack>,
        config: &StreamConfig,
        on_state: impl Fn(String) + 'static,
    ) -> Result<IngestPeer, IngestError> {
        let pc = RtcPeerConnection::new().map_err(browser)?;
        let on_state = Rc::new(on_state);
        let watched = pc.clone();
        let on_state_cb = Closure::<dyn FnMut(Event)>::new(move |_: Event| {
            let state: String = Reflect::get(&watched, &JsValue::from_str("connectionState"))
                .ok()
                .and_then(|s| s.as_string())
                .unwrap_or_default();
            let f = on_state.clone();
            super::defer(move || f(state));
        });
        pc.set_onconnectionstatechange(Some(on_state_cb.as_ref().unchecked_ref()));
        let peer = IngestPeer {
            pc,
            _on_state: on_state_cb,
            location: None,
        };
        peer.negotiate(url, stream_key, video, audio, config).await
    }

    async fn negotiate(
        mut self,
        url: &str,
        stream_key: &str,
        video: &MediaStreamTrack,
        audio: Option<&MediaStreamTrack>,
        config: &StreamConfig,
    ) -> Result<IngestPeer, IngestError> {
        let init = RtcRtpTransceiverInit::new();
        init.set_direction(RtcRtpTransceiverDirection::Sendonly);
        let vt = self
            .pc
            .add_transceiver_with_media_stream_track_and_init(video, &init);
        prefer(&vt, "video", "video/H264");
        if let Some(audio) = audio {
            let at = self
                .pc
                .add_transceiver_with_media_stream_track_and_init(audio, &init);
            prefer(&at, "audio", "audio/opus");
        }
        let answer = sdp::post_local_offer(&self.pc, url, stream_key).await?;
        self.location = answer.location;
        if let Err(e) = sdp::set_answer(&self.pc, &answer.sdp).await {
            // The server created a session for an answer we cannot use.
            if let Some(url) = self.location.take() {
                let key = stream_key.to_owned();
                wasm_bindgen_futures::spawn_local(async move {
                    let _ = http::delete(&url, &key).await;
                });
            }
            return Err(e);
        }
        limit_encoder(&vt.sender(), config).await;
        Ok(self)
    }
}

impl Drop for IngestPeer {
    fn drop(&mut self) {
        self.pc.set_onconnectionstatechange(None);
        self.pc.close();
    }
}
