//! WHIP over HTTP with a str0m peer on a real UDP socket standing in for a
//! browser or OBS: POST an offer, accept the answer, pump until connected.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use reqwest::header;
use serde_json::Value;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
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


/// One publisher and one subscriber to it, both connected ([`link`]).
pub struct Link {
    pub publisher: UdpPeer,
    /// The publisher's video mid.
    pub video: Mid,
    pub subscriber: UdpPeer,
    /// The subscriber's video mid.
    pub sub_video: Mid,
    pub publish: Created,
    pub subscribe: Created,
}

/// `alice` publishes (audio and video) through `publish_via`, and `bob`
/// subscribes to her through `subscribe_via` (retried while her session is
/// still being announced); returns once both peers are connected.
pub async fn link(publish_via: &Api, subscribe_via: &Api, alice: &super::Token, bob: &super::Token) -> Result<Link> {
    let mut publisher = UdpPeer::new(Rtc::builder()).await?;
    let (offer, pending, mids) = publisher.offer(&sendonly())?;
    let publish = publish_via.post_sdp(PUBLISH_PATH, Some(&alice.token), &offer).await?.map_err(|e| anyhow!("publish: {e:?}"))?;
    publisher.accept(pending, &publish.answer)?;
    super::pump_until(&mut [&mut publisher], "publisher connected", |p| p[0].rtc.is_connected()).await?;

    let mut subscriber = UdpPeer::new(Rtc::builder()).await?;
    let (offer, pending, sub_mids) = subscriber.offer(&recvonly())?;
    let path = format!("/v1/stage/whip/subscribe/{}", alice.participant_id);
    let deadline = Instant::now() + WAIT;
    let subscribe = loop {
        match subscribe_via.post_sdp(&path, Some(&bob.token), &offer).await? {
            Ok(created) => break created,
            Err(_) if Instant::now() < deadline => {
                publisher.pump()?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(anyhow!("subscribe: {e:?}")),
        }
    };
    subscriber.accept(pending, &subscribe.answer)?;
    super::pump_until(&mut [&mut publisher, &mut subscriber], "subscriber connected", |p| p[1].rtc.is_connected()).await?;
    Ok(Link { publisher, video: mids[1], subscriber, sub_video: sub_mids[1], publish, subscribe })
}

impl Link {
    /// The publisher's VP8 payload type.
    pub fn vp8(&mut self) -> Result<str0m::media::Pt> {
        let writer = self.publisher.rtc.writer(self.video).context("writer")?;
        let pt = writer.payload_params().find(|p| p.spec().codec == Codec::Vp8).map(|p| p.pt());
        pt.context("vp8")
    }

    /// Send 50 fps of 8-byte frames tagged `tag` until the subscriber has
    /// `count`; every frame it got must carry the tag.
    pub async fn frames_arrive(&mut self, tag: u8, count: usize) -> Result<()> {
        let pt = self.vp8()?;
        let start = Instant::now();
        let mut frame = 0u64;
        while self.subscriber.media(self.sub_video).len() < count {
            ensure!(start.elapsed() < WAIT, "frames did not reach the subscriber");
            if start.elapsed() >= Duration::from_millis(frame * 20) {
                let data = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, tag, frame as u8];
                let writer = self.publisher.rtc.writer(self.video).context("writer")?;
                writer.write(pt, Instant::now(), MediaTime::from_90khz(frame * 1800), data)?;
                frame += 1;
            }
            self.publisher.pump()?;
            self.subscriber.pump()?;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let got = self.subscriber.media(self.sub_video);
        ensure!(got.iter().all(|f| f.len() == 8 && f[6] == tag), "the subscriber got frames that are not the publisher's");
        Ok(())
    }
}
