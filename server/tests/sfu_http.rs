//! WHIP publish / WHEP-style subscribe / DELETE over HTTP against a real
//! server, with str0m peers sending real UDP to the SFU's media socket.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use stagecast_server::sfu::SessionId;
use str0m::format::Codec;
use str0m::media::MediaTime;
use str0m::{Event, Rtc};

mod common;
use common::whip::{pump_until, recvonly, sendonly, UdpPeer, WAIT};
use common::Server;

fn stage_of(server: &Server, token: &str) -> Result<String> {
    let now = chrono::Utc::now().timestamp();
    Ok(server.running.state.auth.keys.verify(token, now)?.topic)
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
    // Subscribing needs the event plane (a PUBLISH token alone may publish: whip_only.rs).
    let (recv_offer, _, _) = peer.offer(&recvonly())?;
    let subscribe = format!("/v1/stage/whip/subscribe/{}", alice.participant_id);
    assert_eq!(server.post_sdp(&subscribe, Some(&bob.token), &recv_offer).await?.err(), Some((409, "NOT_JOINED".into())));

    let _a = server.join(alice).await?;
    let _b = server.join(bob).await?;
    assert_eq!(server.post_sdp(publish, Some(&bob.token), &offer).await?.err(), Some((403, "TOKEN_NOT_ALLOWED".into())));
    assert_eq!(server.post_sdp(publish, Some(&alice.token), "v=0 garbage").await?.err(), Some((400, "INVALID_SDP".into())));
    assert_eq!(server.post_sdp(publish, Some(&alice.token), "").await?.err(), Some((400, "INVALID_SDP".into())));
    let huge = "a".repeat(200 * 1024);
    assert_eq!(server.post_sdp(publish, Some(&alice.token), &huge).await?.err().map(|e| e.1), Some("INVALID_SDP".into()));

    assert_eq!(
        server.post_sdp(&subscribe, Some(&bob.token), &recv_offer).await?.err(),
        Some((404, "PUBLISHER_NOT_FOUND".into()))
    );
    assert_eq!(server.delete("/v1/stage/whip/sessions/nope", &alice.token).await?, 404);
    // Every media path checks the token first, whatever else is wrong.
    let session = format!("{}/v1/stage/whip/sessions/nope", server.base);
    for req in [
        server.http.get(format!("{session}/layer")),
        server.http.post(format!("{session}/layer")).header("content-type", "application/json").body("not json"),
        server.http.delete(&session),
        server.http.post(format!("{}{subscribe}", server.base)).header("content-type", "application/sdp").body("garbage"),
    ] {
        let res = req.send().await?;
        assert_eq!(res.status().as_u16(), 401, "{}", res.url());
        let err: serde_json::Value = res.json().await?;
        assert_eq!(err["code"], "TOKEN_MALFORMED");
    }

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
    let view = tokio::select! {
        s = b_ws.state_where(|v| v.get(&alice_id).is_some_and(|m| m.published)) => s?,
        _ = async { loop { let _ = publisher.pump(); tokio::time::sleep(Duration::from_millis(1)).await; } } => bail!("unreachable"),
    };
    let alice_state = view.get(&alice.participant_id).context("alice")?;
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
    check_layer_controls(&server, &sub, &alice.token, &bob.token).await?;
    // An initial layer that names no layer is refused before a session exists.
    let (offer, _, _) = UdpPeer::new(Rtc::builder()).await?.offer(&recvonly())?;
    let path = format!("/v1/stage/whip/subscribe/{}?layer=ultra", alice.participant_id);
    assert_eq!(server.post_sdp(&path, Some(&bob.token), &offer).await?.err(), Some((400, "INVALID_LAYER".into())));

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
    b_ws.state_where(|v| v.get(&alice.participant_id).is_some_and(|m| !m.published && m.tracks.is_empty())).await?;
    assert_eq!(server.delete(&created.location, &alice.token).await?, 404);
    assert_eq!(server.delete(&sub.location, &bob.token).await?, 404);
    Ok(())
}

/// The subscription's layer link, its `GET` shape and `POST` refusals.
async fn check_layer_controls(server: &Server, sub: &common::whip::Created, other: &str, owner: &str) -> Result<()> {
    let layer = format!("{}/layer", sub.location);
    let rel = format!("<{layer}>; rel=\"urn:ietf:params:whep:ext:core:layer\"");
    ensure!(sub.links.contains(&rel), "no layer link in {:?}", sub.links);
    let url = format!("{}{layer}", server.base);
    let res = server.http.get(&url).bearer_auth(owner).send().await?;
    assert_eq!(res.status().as_u16(), 200);
    let json: serde_json::Value = res.json().await?;
    // No simulcast: one layer without a rid.
    assert_eq!(json["layers"].as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(json["layers"][0]["rid"], serde_json::Value::Null, "{json}");
    for field in ["width", "height", "bitrateBps", "framesPerSecond"] {
        ensure!(json["layers"][0][field].is_number(), "{field} in {json}");
    }
    assert_eq!(json["adapting"], false, "{json}");
    ensure!(json.get("selected").is_some(), "{json}");
    // Someone else's session reads as not found.
    assert_eq!(server.http.get(&url).bearer_auth(other).send().await?.status().as_u16(), 404);
    let post = |body: &'static str| server.http.post(&url).bearer_auth(owner).header("content-type", "application/json").body(body).send();
    for (body, status, code) in [
        ("{\"rid\": \"ultra\"}", 400, "INVALID_LAYER"),
        ("{\"rid\": 7}", 400, "INVALID_FIELD"),
        ("{\"layer\": \"low\"}", 400, "UNKNOWN_FIELD"),
        ("not json", 400, "INVALID_JSON"),
    ] {
        let res = post(body).await?;
        assert_eq!(res.status().as_u16(), status, "{body}");
        let err: serde_json::Value = res.json().await?;
        assert_eq!(err["code"], code, "{body}: {err}");
    }
    assert_eq!(post("{\"rid\": \"low\", \"paused\": true}").await?.status().as_u16(), 204);
    let json: serde_json::Value = server.http.get(&url).bearer_auth(owner).send().await?.json().await?;
    assert_eq!((&json["preferred"], &json["paused"]), (&serde_json::json!("low"), &serde_json::json!(true)), "{json}");
    assert_eq!(post("{\"rid\": null, \"paused\": false}").await?.status().as_u16(), 204);
    Ok(())
}

#[tokio::test]
async fn leaving_the_event_plane_ends_the_participants_media_sessions() -> Result<()> {
    let server = Server::start("leave").await?;
    let (_, tokens) = server.stage_and_tokens(&[("alice", &["PUBLISH", "SUBSCRIBE"])]).await?;
    let alice = &tokens[0];
    let ws = server.join(alice).await?;
    let mut peer = UdpPeer::new(Rtc::builder()).await?;
    let (offer, _, _) = peer.offer(&sendonly())?;
    let created = server
        .post_sdp("/v1/stage/whip/publish", Some(&alice.token), &offer)
        .await?
        .map_err(|e| anyhow!("publish refused: {e:?}"))?;

    ws.leave().await?;
    let stage = stagecast_protocol::StageId(stage_of(&server, &alice.token)?);
    let participant = stagecast_protocol::ParticipantId(alice.participant_id.clone());
    let deadline = Instant::now() + WAIT;
    while server.running.state.stages.is_connected(&stage, &participant) {
        ensure!(Instant::now() < deadline, "the participant never left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The hub told the SFU as the participant left: the session is gone.
    assert_eq!(server.delete(&created.location, &alice.token).await?, 404);
    // And without the event plane there is no subscribing.
    let (offer, _, _) = peer.offer(&recvonly())?;
    let subscribe = format!("/v1/stage/whip/subscribe/{}", alice.participant_id);
    assert_eq!(server.post_sdp(&subscribe, Some(&alice.token), &offer).await?.err(), Some((409, "NOT_JOINED".into())));
    Ok(())
}

#[tokio::test]
async fn a_dropped_event_socket_keeps_media_for_the_grace_then_ends_it() -> Result<()> {
    let server = Server::start_with("grace-media", |c| c.reconnect_grace_secs = 2).await?;
    let (_, tokens) = server.stage_and_tokens(&[("alice", &["PUBLISH", "SUBSCRIBE"])]).await?;
    let alice = &tokens[0];
    let stage = stagecast_protocol::StageId(stage_of(&server, &alice.token)?);
    let participant = stagecast_protocol::ParticipantId(alice.participant_id.clone());
    let sfu = &server.running.state.sfu;
    let session_of = |location: &str| SessionId(location.rsplit('/').next().unwrap_or_default().to_owned());

    let ws = server.join(alice).await?;
    let mut peer = UdpPeer::new(Rtc::builder()).await?;
    let (offer, _, _) = peer.offer(&sendonly())?;
    let first = server.post_sdp("/v1/stage/whip/publish", Some(&alice.token), &offer).await?.map_err(|e| anyhow!("publish refused: {e:?}"))?;

    // The TCP connection drops without a close frame.
    drop(ws);
    let dropped = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(server.running.state.stages.is_connected(&stage, &participant), "left before the grace was over");
    ensure!(sfu.session_owner(session_of(&first.location)).await.is_some(), "the publish session ended within the grace");
    // Still a member: it may publish again at once.
    let (offer, _, _) = peer.offer(&sendonly())?;
    let second = server.post_sdp("/v1/stage/whip/publish", Some(&alice.token), &offer).await?.map_err(|e| anyhow!("re-publish refused: {e:?}"))?;

    let deadline = dropped + WAIT;
    while server.running.state.stages.is_connected(&stage, &participant) {
        ensure!(Instant::now() < deadline, "the participant never left after the grace");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(dropped.elapsed() >= Duration::from_secs(2), "left after {:?}, before the 2 s grace", dropped.elapsed());
    for created in [&first, &second] {
        assert_eq!(sfu.session_owner(session_of(&created.location)).await, None, "a session outlived the grace");
    }
    assert_eq!(server.delete(&second.location, &alice.token).await?, 404);
    Ok(())
}
