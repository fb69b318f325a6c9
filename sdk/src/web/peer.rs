//! Peer connections: one per publish and per subscription (the IVS model),
//! and the channel ingest's. No trickle ICE: the offer is POSTed right after
//! `setLocalDescription`. The server is ICE-lite and learns the browser's
//! addresses — host, reflexive, or a TURN relay from the ICE servers — from
//! the browser's connectivity checks, so it needs none of our candidates.

use super::defer;
use super::http::SdpAnswer;
use super::sdp::{self, browser};
use crate::core::link::PeerState;
use crate::core::broadcast::prefer_codec;
use crate::core::simulcast::{layer_active, Encoding};
use crate::core::StreamKind;
use js_sys::{Array, Object, Reflect};
use stagecast_protocol::events::IceServer;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Event, MediaStreamTrack, RtcConfiguration, RtcPeerConnection, RtcRtpSender, RtcRtpTransceiver,
    RtcRtpTransceiverDirection, RtcRtpTransceiverInit,
};

/// Why setting up a peer connection failed.
pub type PeerError = super::sdp::SdpError;

fn set(obj: &Object, key: &str, value: &JsValue) {
    // Reflect.set only fails on frozen/proxy objects, which these are not.
    let _ = Reflect::set(obj, &JsValue::from_str(key), value);
}

/// `{iceServers: [{urls, username?, credential?}]}`.
fn configuration(ice_servers: &[IceServer]) -> RtcConfiguration {
    let list: Array = ice_servers
        .iter()
        .map(|s| {
            let o = Object::new();
            let urls: Array = s.urls.iter().map(|u| JsValue::from_str(u)).collect();
            set(&o, "urls", &urls);
            if let Some(u) = &s.username {
                set(&o, "username", &JsValue::from_str(u));
            }
            if let Some(c) = &s.credential {
                set(&o, "credential", &JsValue::from_str(c));
            }
            JsValue::from(o)
        })
        .collect();
    let config = Object::new();
    set(&config, "iceServers", &list);
    config.unchecked_into()
}

/// An `RtcPeerConnection` with its state listener; closed on drop.
pub struct Pc {
    pub pc: RtcPeerConnection,
    _on_state: Closure<dyn FnMut(Event)>,
}

impl Pc {
    /// A peer connection using `ice_servers`; every `connectionState`
    /// change is reported to `on_state` (from the microtask queue).
    pub fn new(ice_servers: &[IceServer], on_state: impl Fn(PeerState) + 'static) -> Result<Pc, PeerError> {
        let pc = RtcPeerConnection::new_with_configuration(&configuration(ice_servers)).map_err(browser)?;
        let on_state = Rc::new(on_state);
        let watched = pc.clone();
        let on_change = Closure::<dyn FnMut(Event)>::new(move |_: Event| {
            let state = Reflect::get(&watched, &JsValue::from_str("connectionState"))
                .ok()
                .and_then(|s| s.as_string())
                .and_then(|s| PeerState::parse(&s));
            if let Some(state) = state {
                let f = on_state.clone();
                defer(move || f(state));
            }
        });
        pc.set_onconnectionstatechange(Some(on_change.as_ref().unchecked_ref()));
        Ok(Pc {
            pc,
            _on_state: on_change,
        })
    }

    /// Adds a send-only transceiver for `track`, with these
    /// `sendEncodings` (none: the browser's).
    pub fn send(&self, track: &MediaStreamTrack, encodings: &[Encoding]) -> web_sys::RtcRtpTransceiver {
        let init = RtcRtpTransceiverInit::new();
        init.set_direction(RtcRtpTransceiverDirection::Sendonly);
        if !encodings.is_empty() {
            let list: Array = encodings
                .iter()
                .map(|e| {
                    let o = Object::new();
                    if let Some(rid) = e.rid {
                        set(&o, "rid", &JsValue::from_str(rid));
                    }
                    set(&o, "scaleResolutionDownBy", &JsValue::from(e.scale_down_by));
                    set(&o, "maxBitrate", &JsValue::from(e.max_bitrate_bps));
                    set(&o, "maxFramerate", &JsValue::from(e.max_framerate));
                    JsValue::from(o)
                })
                .collect();
            set(&init, "sendEncodings", &list);
        }
        self.pc.add_transceiver_with_media_stream_track_and_init(track, &init)
    }

    /// POSTs the offer to `url` and applies the answer. If the answer
    /// cannot be applied, the session the server made is DELETEd.
    pub async fn negotiate(&self, url: &str, bearer: &str) -> Result<SdpAnswer, PeerError> {
        let answer = sdp::post_local_offer(&self.pc, url, bearer).await?;
        if let Err(e) = sdp::set_answer(&self.pc, &answer.sdp).await {
            if let Some(location) = answer.location {
                let bearer = bearer.to_owned();
                wasm_bindgen_futures::spawn_local(async move {
                    let _ = super::http::delete(&location, &bearer).await;
                });
            }
            return Err(e);
        }
        Ok(answer)
    }
}

impl Drop for Pc {
    fn drop(&mut self) {
        self.pc.set_onconnectionstatechange(None);
        self.pc.close();
    }
}

/// Puts `preferred` first in the transceiver's codec list (where the
/// browser supports `setCodecPreferences`).
pub fn prefer_codec_on(transceiver: &RtcRtpTransceiver, kind: &str, preferred: &str) {
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

/// The video codec of a stage: what every participant's browser can decode.
pub const STAGE_VIDEO_CODEC: &str = "video/VP8";

/// A WHIP publish session.
pub struct PublishPeer {
    _pc: Pc,
    senders: Vec<(StreamKind, RtcRtpSender)>,
    /// Session resource, for `DELETE` on teardown.
    pub location: Option<String>,
}

impl PublishPeer {
    /// Offers `tracks` sendonly (each with its `sendEncodings`) to
    /// `{whip_url}/publish` and applies the answer.
    pub async fn start(
        whip_url: &str,
        token: &str,
        tracks: &[(StreamKind, MediaStreamTrack, Vec<Encoding>)],
        ice_servers: &[IceServer],
        on_state: impl Fn(PeerState) + 'static,
    ) -> Result<PublishPeer, PeerError> {
        let pc = Pc::new(ice_servers, on_state)?;
        let senders = tracks
            .iter()
            .map(|(kind, track, encodings)| {
                let transceiver = pc.send(track, encodings);
                if *kind == StreamKind::Video {
                    // Stages are VP8: every browser encodes and decodes it
                    // without a codec download (Firefox offline has no H.264).
                    prefer_codec_on(&transceiver, "video", STAGE_VIDEO_CODEC);
                }
                (*kind, transceiver.sender())
            })
            .collect();
        let answer = pc.negotiate(&format!("{whip_url}/publish"), token).await?;
        Ok(PublishPeer {
            _pc: pc,
            senders,
            location: answer.location,
        })
    }

    /// The sender carrying `kind`, for `replace_track`.
    pub fn sender(&self, kind: StreamKind) -> Option<RtcRtpSender> {
        self.senders.iter().find(|(k, _)| *k == kind).map(|(_, s)| s.clone())
    }

    /// Sends only the video layers whose rid is in `rids` (the others are
    /// deactivated: nobody receives them).
    pub fn set_layers(&self, rids: &[String]) {
        let Some(sender) = self.sender(StreamKind::Video) else { return };
        let call = |name: &str, args: &Array| -> Option<JsValue> {
            let f: js_sys::Function = Reflect::get(&sender, &JsValue::from_str(name)).ok()?.dyn_into().ok()?;
            f.apply(&sender, args).ok()
        };
        let Some(params) = call("getParameters", &Array::new()) else { return };
        let Ok(encodings) = Reflect::get(&params, &JsValue::from_str("encodings")) else { return };
        let mut changed = false;
        for e in Array::from(&encodings).iter() {
            let rid = Reflect::get(&e, &JsValue::from_str("rid")).ok().and_then(|r| r.as_string());
            let active = layer_active(rid.as_deref(), rids);
            if Reflect::get(&e, &JsValue::from_str("active")).ok().and_then(|a| a.as_bool()) != Some(active) {
                set(e.unchecked_ref(), "active", &JsValue::from(active));
                changed = true;
            }
        }
        if changed {
            if let Some(p) = call("setParameters", &Array::of1(&params)).and_then(|p| p.dyn_into().ok()) {
                super::ignore_rejection(p);
            }
        }
    }
}

/// The width and height a video track delivers (`getSettings()`), if known.
pub fn track_size(track: &MediaStreamTrack) -> Option<(u32, u32)> {
    let get: js_sys::Function = Reflect::get(track, &JsValue::from_str("getSettings")).ok()?.dyn_into().ok()?;
    let settings = get.call0(track).ok()?;
    let dim = |k: &str| Reflect::get(&settings, &JsValue::from_str(k)).ok()?.as_f64().map(|v| v as u32);
    Some((dim("width")?, dim("height")?))
}

/// Swaps the track on a sender without renegotiating.
pub async fn replace_track(sender: &RtcRtpSender, track: &MediaStreamTrack) -> Result<(), PeerError> {
    JsFuture::from(sender.replace_track(Some(track))).await.map_err(browser)?;
    Ok(())
}

/// A WHEP-style subscription to one publisher.
pub struct SubscribePeer {
    _pc: Pc,
    /// The receiving tracks, one per kind, with their receivers (for stats).
    pub tracks: Vec<(StreamKind, MediaStreamTrack, web_sys::RtcRtpReceiver)>,
    pub location: Option<String>,
    /// The session's layer controls (a simulcast publisher's video).
    pub layers: Option<String>,
}

impl SubscribePeer {
    /// Offers recvonly audio + video to
    /// `{whip_url}/subscribe/{publisher}?layer={initial_layer}`.
    pub async fn start(
        whip_url: &str,
        token: &str,
        publisher_id: &str,
        initial_layer: &str,
        ice_servers: &[IceServer],
        on_state: impl Fn(PeerState) + 'static,
    ) -> Result<SubscribePeer, PeerError> {
        let pc = Pc::new(ice_servers, on_state)?;
        let mut tracks = Vec::new();
        for kind in [StreamKind::Audio, StreamKind::Video] {
            let init = RtcRtpTransceiverInit::new();
            init.set_direction(RtcRtpTransceiverDirection::Recvonly);
            let t = pc.pc.add_transceiver_with_str_and_init(kind.as_str(), &init);
            let receiver = t.receiver();
            tracks.push((kind, receiver.track(), receiver));
        }
        let id = js_sys::encode_uri_component(publisher_id);
        let answer = pc.negotiate(&format!("{whip_url}/subscribe/{id}?layer={initial_layer}"), token).await?;
        Ok(SubscribePeer {
            _pc: pc,
            tracks,
            location: answer.location,
            layers: answer.layers,
        })
    }
}
