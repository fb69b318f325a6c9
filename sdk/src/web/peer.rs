//! One peer connection per publish and per subscription (the IVS model).
//! No trickle ICE: the offer is POSTed right after `setLocalDescription`
//! (the server is ICE-lite with a host candidate, so it needs none of ours).

use super::http::SdpAnswer;
use super::sdp::{self, browser};
use super::defer;
use crate::core::StreamKind;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Event, MediaStreamTrack, RtcPeerConnection, RtcPeerConnectionState, RtcRtpSender,
    RtcRtpTransceiverDirection, RtcRtpTransceiverInit,
};

/// Why setting up a peer connection failed.
pub type PeerError = super::sdp::SdpError;

/// Connection health as the stage cares about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerHealth {
    Connected,
    Failed,
}

/// An `RtcPeerConnection` with its state listener; closed on drop.
struct Pc {
    pc: RtcPeerConnection,
    _on_state: Closure<dyn FnMut(Event)>,
}

impl Pc {
    fn new(on_health: impl Fn(PeerHealth) + 'static) -> Result<Pc, PeerError> {
        let pc = RtcPeerConnection::new().map_err(browser)?;
        let on_health = Rc::new(on_health);
        let weak_pc = pc.clone();
        let on_state = Closure::<dyn FnMut(Event)>::new(move |_: Event| {
            let health = match weak_pc.connection_state() {
                RtcPeerConnectionState::Connected => PeerHealth::Connected,
                RtcPeerConnectionState::Failed => PeerHealth::Failed,
                _ => return,
            };
            let f = on_health.clone();
            defer(move || f(health));
        });
        pc.set_onconnectionstatechange(Some(on_state.as_ref().unchecked_ref()));
        Ok(Pc {
            pc,
            _on_state: on_state,
        })
    }

    async fn negotiate(&self, url: &str, token: &str) -> Result<SdpAnswer, PeerError> {
        let answer = sdp::post_local_offer(&self.pc, url, token).await?;
        sdp::set_answer(&self.pc, &answer.sdp).await?;
        Ok(answer)
    }
}

impl Drop for Pc {
    fn drop(&mut self) {
        self.pc.set_onconnectionstatechange(None);
        self.pc.close();
    }
}

/// A WHIP publish session.
pub struct PublishPeer {
    pc: Pc,
    senders: Vec<(StreamKind, RtcRtpSender)>,
    /// Session resource, for `DELETE` on teardown.
    pub location: Option<String>,
}

impl PublishPeer {
    /// Offers `tracks` sendonly to `{whip_url}/publish` and applies the answer.
    pub async fn start(
        whip_url: &str,
        token: &str,
        tracks: &[(StreamKind, MediaStreamTrack)],
        on_health: impl Fn(PeerHealth) + 'static,
    ) -> Result<PublishPeer, PeerError> {
        let pc = Pc::new(on_health)?;
        let mut senders = Vec::new();
        for (kind, track) in tracks {
            let init = RtcRtpTransceiverInit::new();
            init.set_direction(RtcRtpTransceiverDirection::Sendonly);
            let t = pc
                .pc
                .add_transceiver_with_media_stream_track_and_init(track, &init);
            senders.push((*kind, t.sender()));
        }
        let mut peer = PublishPeer {
            pc,
            senders,
            location: None,
        };
        let answer = peer
            .pc
            .negotiate(&format!("{whip_url}/publish"), token)
            .await?;
        peer.location = answer.location;
        Ok(peer)
    }

    /// The sender carrying `kind`, for `replace_track`.
    pub fn sender(&self, kind: StreamKind) -> Option<RtcRtpSender> {
        self.senders
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, s)| s.clone())
    }
}

/// Swaps the track on a sender without renegotiating.
pub async fn replace_track(
    sender: &RtcRtpSender,
    track: &MediaStreamTrack,
) -> Result<(), PeerError> {
    JsFuture::from(sender.replace_track(Some(track)))
        .await
        .map_err(browser)?;
    Ok(())
}

/// A WHEP-style subscription to one publisher.
pub struct SubscribePeer {
    _pc: Pc,
    /// The receiving tracks, one per kind.
    pub tracks: Vec<(StreamKind, MediaStreamTrack)>,
    pub location: Option<String>,
}

impl SubscribePeer {
    /// Offers recvonly audio + video to `{whip_url}/subscribe/{publisher}`.
    pub async fn start(
        whip_url: &str,
        token: &str,
        publisher_id: &str,
        on_health: impl Fn(PeerHealth) + 'static,
    ) -> Result<SubscribePeer, PeerError> {
        let pc = Pc::new(on_health)?;
        let mut tracks = Vec::new();
        for kind in [StreamKind::Audio, StreamKind::Video] {
            let init = RtcRtpTransceiverInit::new();
            init.set_direction(RtcRtpTransceiverDirection::Recvonly);
            let t = pc
                .pc
                .add_transceiver_with_str_and_init(kind.as_str(), &init);
            tracks.push((kind, t.receiver().track()));
        }
        let url = format!(
            "{whip_url}/subscribe/{}",
            js_sys::encode_uri_component(publisher_id)
        );
        let answer = pc.negotiate(&url, token).await?;
        Ok(SubscribePeer {
            _pc: pc,
            tracks,
            location: answer.location,
        })
    }
}
