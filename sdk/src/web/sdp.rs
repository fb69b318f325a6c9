//! The offer/answer exchange that the stage's peers (WHIP publish, WHEP-style
//! subscribe) and channel ingest share: no trickle ICE, so the offer is
//! POSTed right after `setLocalDescription`.

use super::http::{self, HttpError, SdpAnswer};
use super::js_error_text;
use crate::core::HttpFailure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{RtcPeerConnection, RtcSdpType, RtcSessionDescriptionInit};

/// Why setting up a peer connection failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SdpError {
    #[error("the browser refused: {0}")]
    Browser(String),
    #[error(transparent)]
    Http(#[from] HttpError),
}

pub(crate) fn browser(e: JsValue) -> SdpError {
    SdpError::Browser(js_error_text(&e))
}

impl From<SdpError> for HttpFailure {
    /// What the core needs to know of a failed setup (to retry or not).
    fn from(e: SdpError) -> HttpFailure {
        match e {
            SdpError::Browser(m) => HttpFailure::browser(m),
            SdpError::Http(e) => e.into(),
        }
    }
}

impl From<HttpError> for HttpFailure {
    fn from(e: HttpError) -> HttpFailure {
        match e {
            HttpError::Status { status, body } => {
                let (code, message) = body.map(|b| (b.code, b.message)).unzip();
                HttpFailure::http(status, code, message)
            }
            HttpError::Network(m) => HttpFailure::network(m),
        }
    }
}

/// Creates an offer, applies it locally and POSTs it to `url` with
/// `Authorization: Bearer <bearer>`. The answer is returned, not applied, so
/// the caller can clean up the server's session if applying it fails.
pub(crate) async fn post_local_offer(pc: &RtcPeerConnection, url: &str, bearer: &str) -> Result<SdpAnswer, SdpError> {
    let offer: RtcSessionDescriptionInit = JsFuture::from(pc.create_offer()).await.map_err(browser)?.unchecked_into();
    JsFuture::from(pc.set_local_description(&offer)).await.map_err(browser)?;
    let sdp = pc.local_description().map(|d| d.sdp()).ok_or_else(|| SdpError::Browser("no local description".into()))?;
    Ok(http::post_offer(url, bearer, &sdp).await?)
}

/// Applies the server's answer.
pub(crate) async fn set_answer(pc: &RtcPeerConnection, sdp: &str) -> Result<(), SdpError> {
    let remote = RtcSessionDescriptionInit::new(RtcSdpType::Answer);
    remote.set_sdp(sdp);
    JsFuture::from(pc.set_remote_description(&remote)).await.map_err(browser)?;
    Ok(())
}
