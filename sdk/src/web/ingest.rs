//! WHIP ingest to a channel: one send-only peer connection carrying the
//! compositor's video track (H.264 preferred; with simulcast, one encoding
//! per layer) and the mixer's audio track (Opus), offered with
//! `Authorization: Bearer <streamKey>` to the channel's ingest endpoint, with
//! the ICE servers the endpoint lists on `OPTIONS`.

use super::http;
use super::peer::{prefer_codec_on, Pc};
use crate::core::broadcast::StreamConfig;
use crate::core::ice::ice_servers_from_link;
use crate::core::link::PeerState;
use crate::core::simulcast::Encoding;
use js_sys::{Array, Object, Reflect};
use stagecast_protocol::events::IceServer;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{MediaStreamTrack, RtcRtpSender};

/// Why starting the broadcast failed.
pub type IngestError = super::sdp::SdpError;

/// A live ingest session; its peer connection closes on drop (the caller
/// sends the `DELETE` first).
pub struct IngestPeer {
    _pc: Pc,
    /// The WHIP session resource, for `DELETE` on stop.
    pub location: Option<String>,
}

/// The ICE servers the endpoint lists (RFC 9725 §4.4); none when it lists
/// none or does not answer.
pub async fn ice_servers(url: &str, stream_key: &str) -> Vec<IceServer> {
    match http::options_link(url, stream_key).await {
        Ok(Some(link)) => ice_servers_from_link(&link),
        _ => Vec::new(),
    }
}

/// Caps the video encoder at the stream config's bitrate and frame rate
/// (`caps`; simulcast layers carry their own) and keeps its resolution.
async fn limit_encoder(sender: &RtcRtpSender, caps: Option<StreamConfig>) {
    let params: JsValue = sender.get_parameters().into();
    if let Some(config) = caps {
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
    }
    // A channel's renditions are announced at the stream config's size:
    // under CPU or bandwidth pressure drop frames, not resolution.
    let _ = Reflect::set(
        &params,
        &JsValue::from_str("degradationPreference"),
        &JsValue::from_str("maintain-resolution"),
    );
    let _ = JsFuture::from(sender.set_parameters_with_parameters(params.unchecked_ref())).await;
}

impl IngestPeer {
    /// Negotiates with the WHIP endpoint `url`, sending `video` with
    /// `encodings` (the simulcast layers; none: one encoding capped by
    /// `config`); every `connectionState` goes to `on_state`.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        url: &str,
        stream_key: &str,
        video: &MediaStreamTrack,
        audio: Option<&MediaStreamTrack>,
        config: &StreamConfig,
        encodings: &[Encoding],
        ice_servers: &[IceServer],
        on_state: impl Fn(PeerState) + 'static,
    ) -> Result<IngestPeer, IngestError> {
        let pc = Pc::new(ice_servers, on_state)?;
        let vt = pc.send(video, encodings);
        prefer_codec_on(&vt, "video", "video/H264");
        if let Some(audio) = audio {
            prefer_codec_on(&pc.send(audio, &[]), "audio", "audio/opus");
        }
        let answer = pc.negotiate(url, stream_key).await?;
        // Not awaited: the setup is done, and a slow `setParameters` must
        // not count against the answer's deadline.
        let (sender, caps) = (vt.sender(), encodings.is_empty().then_some(*config));
        wasm_bindgen_futures::spawn_local(async move { limit_encoder(&sender, caps).await });
        Ok(IngestPeer {
            _pc: pc,
            location: answer.location,
        })
    }
}
