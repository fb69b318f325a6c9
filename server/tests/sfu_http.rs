//! WHIP publish / WHEP-style subscribe / DELETE over HTTP against a real
//! server, with str0m peers sending real UDP to the SFU's media socket.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use futures_util::StreamExt;
use reqwest::header;
use serde_json::{json, Value};
use stagecast_protocol::events::{ParticipantState, ServerMessage};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::{Candidate, Event, Rtc};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{Server, Token, Ws, EVENTS_PATH};

const WAIT: Duration = Duration::from_secs(10);

struct Created {
    location: String,
    answer: String,
}

impl Server {
    async fn stage_and_tokens(&self, users: &[(&str, &[&str])]) -> Result<(String, Vec<Token>)> {
        let stage = self.create_stage_with(json!({})).await?;
        let mut tokens = Vec::new();
        for (user, caps) in users {
            tokens.push(self.participant_token(&stage, json!({"userId": user, "capabilities": caps})).await?);
        }
        Ok((stage, tokens))
    }

    async fn join(&self, token: &Token) -> Result<Ws> {
        self.ws_connect(EVENTS_PATH, &token.token).await
    }

    /// POST an SDP offer; Ok(created) or Err((status, code)).
    async fn post_sdp(&self, path: &str, token: Option<&str>, sdp: &str) -> Result<std::result::Result<Created, (u16, String)>> {
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
            return Ok(Ok(Created { location, answer: res.text().await? }));
        }
        let body: Value = res.json().await?;
        ensure!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "no message in {body}");
        Ok(Err((status, body["code"].as_str().unwrap_or_default().to_owned())))
    }

    async fn delete(&self, location: &str, token: &str) -> Result<u16> {
        let res = self.http.delete(format!("{}{location}", self.base)).bearer_auth(token).send().await?;
        Ok(res.status().as_u16())
    }
}

/// A str0m peer on a real UDP socket, standing in for a browser.
struct UdpPeer {
    rtc: Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    events: Vec<Event>,
}

impl UdpPeer {
    async fn new(builder: str0m::RtcConfig) -> Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let mut rtc = builder.build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp")?);
        Ok(Self { rtc, socket, addr, events: Vec::new() })
    }

    fn offer(&mut self, media: &[(MediaKind, Direction)]) -> Result<(String, SdpPendingOffer, Vec<Mid>)> {
        let mut api = self.rtc.sdp_api();
        let mids = media.iter().map(|(k, d)| api.add_media(*k, *d, None, None, None)).collect();
        let (offer, pending) = api.apply().context("offer")?;
        Ok((offer.to_sdp_string(), pending, mids))
    }

    fn accept(&mut self, pending: SdpPendingOffer, answer: &str) -> Result<()> {
        self.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(answer)?)?;
        Ok(())
    }

    /// Send what str0m wants sent, take in what arrived, advance time.
    fn pump(&mut self) -> Result<()> {
        let events = &mut self.events;
        common::pump_udp(&mut self.rtc, &self.socket, self.addr, |e| events.push(e))
    }

    fn media(&self, mid: Mid) -> Vec<Vec<u8>> {
        common::media_data(&self.events, mid)
    }
}

async fn pump_until(peers: &mut [&mut UdpPeer], what: &str, done: impl Fn(&[&mut UdpPeer]) -> bool) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while !done(peers) {
        ensure!(Instant::now() < deadline, "timed out waiting for: {what}");
        for p in peers.iter_mut() {
            p.pump()?;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Snapshots until one satisfies `pred`.
async fn snapshot_where(ws: &mut Ws, pred: impl Fn(&[ParticipantState]) -> bool) -> Result<Vec<ParticipantState>> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next()).await.context("no snapshot in time")?.context("socket ended")??;
        let Message::Text(text) = msg else { continue };
        if let ServerMessage::StageState { participants, .. } = serde_json::from_str(text.as_str())? {
            if pred(&participants) {
                return Ok(participants);
            }
        }
    }
}

fn stage_of(server: &Server, token: &str) -> Result<String> {
    let now = chrono::Utc::now().timestamp();
    Ok(server.running.state.keys.verify(token, now)?.topic)
}

fn sendonly() -> [(MediaKind, Direction); 2] {
    [(MediaKind::Audio, Direction::SendOnly), (MediaKind::Video, Direction::SendOnly)]
}

fn recvonly() -> [(MediaKind, Direction); 2] {
    [(MediaKind::Audio, Direction::RecvOnly), (MediaKind::Video, Direction::RecvOnly)]
}

#[tokio::test]
async fn whip_requests_are_checked_in_order_and_refused_with_codes() -> Result<()> {
    let server = Server::start("refusals").await?;
    let (_, tokens) = server.stage_and_tokens(&[("alice", &["PUBLISH", "SUBSCRIBE"]), ("bob", &["SUBSCRIBE"])]).await?;
    let (alice, bob) = (&tokens[0], &tokens[1]);
    let mut peer = UdpPeer::new(Rtc::builder()).await?;
    let (offer, _, _) = peer.offer(&sendonly())?;

    let publish = "/v1/stage/whip/publish";
    assert_eq!(server.post_sdp(publish, None, &offer).await?.err(), Some((401, "TOKEN_MALFORMED".into())));
    assert_eq!(server.post_sdp(publish, Some("x.y.z"), &offer).await?.err().map(|e| e.0), Some(401));
    assert_eq!(server.post_sdp(publish, Some(&alice.token), &offer).await?.err(), Some((409, "NOT_JOINED".into())));

    let _a = server.join(alice).await?;
    let _b = server.join(bob).await?;
    assert_eq!(server.post_sdp(publish, Some(&bob.token), &offer).await?.err(), Some((403, "TOKEN_NOT_ALLOWED".into())));
    assert_eq!(server.post_sdp(publish, Some(&alice.token), "v=0 garbage").await?.err(), Some((400, "INVALID_SDP".into())));
    assert_eq!(server.post_sdp(publish, Some(&alice.token), "").await?.err(), Some((400, "INVALID_SDP".into())));
    let huge = "a".repeat(200 * 1024);
    assert_eq!(server.post_sdp(publish, Some(&alice.token), &huge).await?.err().map(|e| e.1), Some("INVALID_SDP".into()));

    let subscribe = format!("/v1/stage/whip/subscribe/{}", alice.participant_id);
    let (recv_offer, _, _) = peer.offer(&recvonly())?;
    assert_eq!(
        server.post_sdp(&subscribe, Some(&bob.token), &recv_offer).await?.err(),
        Some((404, "PUBLISHER_NOT_FOUND".into()))
    );
    assert_eq!(server.delete("/v1/stage/whip/sessions/nope", &alice.token).await?, 404);

    // WHIP clients probe with OPTIONS; browsers on other origins preflight.
    let res = server.http.request(reqwest::Method::OPTIONS, format!("{}{publish}", server.base)).send().await?;
    assert_eq!(res.status().as_u16(), 204);
    let res = server
        .http
        .request(reqwest::Method::OPTIONS, format!("{}{publish}", server.base))
        .header("Origin", "http://elsewhere.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization, content-type")
        .send()
        .await?;
    assert!(res.status().is_success());
    assert_eq!(res.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()), Some("*"));
    Ok(())
}

#[tokio::test]
async fn media_flows_over_udp_from_a_whip_publisher_to_a_subscriber() -> Result<()> {
    let server = Server::start("media").await?;
    let (_, tokens) = server.stage_and_tokens(&[("alice", &["PUBLISH", "SUBSCRIBE"]), ("bob", &["SUBSCRIBE"])]).await?;
    let (alice, bob) = (&tokens[0], &tokens[1]);
    let _a = server.join(alice).await?;
    let mut b_ws = server.join(bob).await?;

    // Publish.
    let mut publisher = UdpPeer::new(Rtc::builder()).await?;
    let (offer, pending, mids) = publisher.offer(&sendonly())?;
    let created = server
        .post_sdp("/v1/stage/whip/publish", Some(&alice.token), &offer)
        .await?
        .map_err(|e| anyhow!("publish refused: {e:?}"))?;
    assert!(created.answer.contains("a=ice-lite"));
    assert!(created.answer.contains(&format!("{} {} typ host", server.running.media_addr.ip(), server.running.media_addr.port())));
    publisher.accept(pending, &created.answer)?;
    pump_until(&mut [&mut publisher], "publisher connected", |p| p[0].rtc.is_connected()).await?;

    // Everyone sees alice publishing audio and video.
    let alice_id = alice.participant_id.clone();
    let participants = tokio::select! {
        s = snapshot_where(&mut b_ws, |p| p.iter().any(|m| m.id == alice_id && m.published)) => s?,
        _ = async { loop { let _ = publisher.pump(); tokio::time::sleep(Duration::from_millis(1)).await; } } => bail!("unreachable"),
    };
    let alice_state = participants.iter().find(|m| m.id == alice.participant_id).context("alice")?;
    assert_eq!(alice_state.tracks, ["audio", "video"]);

    // Subscribe.
    let mut subscriber = UdpPeer::new(Rtc::builder()).await?;
    let (offer, pending, sub_mids) = subscriber.offer(&recvonly())?;
    let sub = server
        .post_sdp(&format!("/v1/stage/whip/subscribe/{}", alice.participant_id), Some(&bob.token), &offer)
        .await?
        .map_err(|e| anyhow!("subscribe refused: {e:?}"))?;
    subscriber.accept(pending, &sub.answer)?;
    pump_until(&mut [&mut publisher, &mut subscriber], "subscriber connected", |p| p[1].rtc.is_connected()).await?;

    // Frames flow publisher -> SFU -> subscriber.
    let video_mid = mids[1];
    let pt = publisher
        .rtc
        .writer(video_mid)
        .context("writer")?
        .payload_params()
        .find(|p| p.spec().codec == Codec::Vp8)
        .map(|p| p.pt())
        .context("vp8")?;
    let start = Instant::now();
    let mut frame = 0u64;
    let deadline = Instant::now() + WAIT;
    while subscriber.media(sub_mids[1]).len() < 10 {
        ensure!(Instant::now() < deadline, "frames did not reach the subscriber");
        if start.elapsed() >= Duration::from_millis(frame * 20) {
            let data = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, frame as u8];
            publisher.rtc.writer(video_mid).context("writer")?.write(pt, Instant::now(), MediaTime::from_90khz(frame * 1800), data)?;
            frame += 1;
        }
        publisher.pump()?;
        subscriber.pump()?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let got = subscriber.media(sub_mids[1]);
    assert!(got.iter().all(|f| f.len() == 7 && f[..6] == [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]));

    // Only the owner can DELETE; then the subscription closes and alice is unpublished.
    assert_eq!(server.delete(&created.location, &bob.token).await?, 404);
    assert_eq!(server.delete(&created.location, &alice.token).await?, 204);
    pump_until(&mut [&mut publisher, &mut subscriber], "subscription closed", |p| {
        !p[1].rtc.is_alive() || p[1].events.iter().any(|e| matches!(e, Event::Closed))
    })
    .await?;
    snapshot_where(&mut b_ws, |p| p.iter().any(|m| m.id == alice.participant_id && !m.published && m.tracks.is_empty())).await?;
    assert_eq!(server.delete(&created.location, &alice.token).await?, 404);
    assert_eq!(server.delete(&sub.location, &bob.token).await?, 404);
    Ok(())
}

#[tokio::test]
async fn leaving_the_event_plane_ends_the_participants_media_sessions() -> Result<()> {
    let server = Server::start("leave").await?;
    let (_, tokens) = server.stage_and_tokens(&[("alice", &["PUBLISH", "SUBSCRIBE"])]).await?;
    let alice = &tokens[0];
    let mut ws = server.join(alice).await?;
    let mut peer = UdpPeer::new(Rtc::builder()).await?;
    let (offer, _, _) = peer.offer(&sendonly())?;
    let created = server
        .post_sdp("/v1/stage/whip/publish", Some(&alice.token), &offer)
        .await?
        .map_err(|e| anyhow!("publish refused: {e:?}"))?;

    ws.close(None).await?;
    let stage = stagecast_protocol::StageId(stage_of(&server, &alice.token)?);
    let participant = stagecast_protocol::ParticipantId(alice.participant_id.clone());
    let deadline = Instant::now() + WAIT;
    while server.running.state.stages.is_connected(&stage, &participant) {
        ensure!(Instant::now() < deadline, "the participant never left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The hub told the SFU as the participant left: the session is gone.
    assert_eq!(server.delete(&created.location, &alice.token).await?, 404);
    // And without the event plane there is no publishing.
    let (offer, _, _) = peer.offer(&sendonly())?;
    assert_eq!(
        server.post_sdp("/v1/stage/whip/publish", Some(&alice.token), &offer).await?.err(),
        Some((409, "NOT_JOINED".into()))
    );
    Ok(())
}
