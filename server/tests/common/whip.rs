//! WHIP over HTTP with a str0m peer on a real UDP socket standing in for a
//! browser or OBS: POST an offer, accept the answer, pump until connected.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use reqwest::header;
use serde_json::Value;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::{Candidate, Event, Rtc};
use tokio::net::UdpSocket;

use super::Api;

/// How long [`pump_until`] waits.
pub const WAIT: Duration = Duration::from_secs(10);

/// The WHIP stage publish path.
pub const PUBLISH_PATH: &str = "/v1/stage/whip/publish";

pub struct Created {
    pub location: String,
    pub answer: String,
    /// The `Link` header values (ICE servers).
    pub links: Vec<String>,
}

impl Api {
    /// POST an SDP offer; Ok(created) or Err((status, code)).
    pub async fn post_sdp(&self, path: &str, token: Option<&str>, sdp: &str) -> Result<std::result::Result<Created, (u16, String)>> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/sdp")
            .body(sdp.to_owned());
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        if status == 201 {
            let content_type = res.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
            ensure!(content_type == "application/sdp", "content type {content_type}");
            let location = res.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).context("Location")?.to_owned();
            ensure!(location.starts_with("/v1/stage/whip/sessions/"), "location {location}");
            let links = super::link_values(res.headers());
            return Ok(Ok(Created { location, answer: res.text().await?, links }));
        }
        let body: Value = res.json().await?;
        ensure!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "no message in {body}");
        Ok(Err((status, body["code"].as_str().unwrap_or_default().to_owned())))
    }

    pub async fn delete(&self, location: &str, token: &str) -> Result<u16> {
        let res = self.http.delete(format!("{}{location}", self.base)).bearer_auth(token).send().await?;
        Ok(res.status().as_u16())
    }
}

/// A str0m peer on a real UDP socket, standing in for a browser.
pub struct UdpPeer {
    pub rtc: Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    pub events: Vec<Event>,
}

impl UdpPeer {
    pub async fn new(builder: str0m::RtcConfig) -> Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let mut rtc = builder.build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp")?);
        Ok(Self { rtc, socket, addr, events: Vec::new() })
    }

    pub fn offer(&mut self, media: &[(MediaKind, Direction)]) -> Result<(String, SdpPendingOffer, Vec<Mid>)> {
        let mut api = self.rtc.sdp_api();
        let mids = media.iter().map(|(k, d)| api.add_media(*k, *d, None, None, None)).collect();
        let (offer, pending) = api.apply().context("offer")?;
        Ok((offer.to_sdp_string(), pending, mids))
    }

    pub fn accept(&mut self, pending: SdpPendingOffer, answer: &str) -> Result<()> {
        self.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(answer)?)?;
        Ok(())
    }

    /// Send what str0m wants sent, take in what arrived, advance time.
    pub fn pump(&mut self) -> Result<()> {
        let events = &mut self.events;
        super::pump_udp(&mut self.rtc, &self.socket, self.addr, |e| events.push(e))
    }

    pub fn media(&self, mid: Mid) -> Vec<Vec<u8>> {
        super::media_data(&self.events, mid)
    }
}

impl super::Pump for UdpPeer {
    fn pump(&mut self) -> Result<()> {
        UdpPeer::pump(self)
    }
}

#[allow(unused_imports)]
pub use super::pump_until;

pub fn sendonly() -> [(MediaKind, Direction); 2] {
    [(MediaKind::Audio, Direction::SendOnly), (MediaKind::Video, Direction::SendOnly)]
}

pub fn recvonly() -> [(MediaKind, Direction); 2] {
    [(MediaKind::Audio, Direction::RecvOnly), (MediaKind::Video, Direction::RecvOnly)]
}

