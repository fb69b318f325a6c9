//! WHIP-only publishers (issue 12 item 11): a WHIP client such as OBS, with a
//! PUBLISH token and no event-plane socket, joins the stage with its publish
//! and leaves when the publish ends — by DELETE, or by the client vanishing.
//! A str0m peer on real UDP stands in for OBS against a real server.

use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Result};
use reqwest::Method;
use serde_json::json;
use str0m::Rtc;

mod common;
use common::events::EventClient;
use common::whip::{pump_until, sendonly, Created, UdpPeer, PUBLISH_PATH};
use common::{Api, Server, Token};

/// Publish from a fresh peer with `token` and pump until the SFU answered
/// and ICE/DTLS connected.
async fn publish(api: &Api, token: &Token) -> Result<(UdpPeer, Created)> {
    let mut peer = UdpPeer::new(Rtc::builder()).await?;
    let (offer, pending, _) = peer.offer(&sendonly())?;
    let created = api.post_sdp(PUBLISH_PATH, Some(&token.token), &offer).await?.map_err(|e| anyhow!("publish refused: {e:?}"))?;
    peer.accept(pending, &created.answer)?;
    pump_until(&mut [&mut peer], "publisher connected", |p| p[0].rtc.is_connected()).await?;
    Ok((peer, created))
}

/// Frames on `watcher` until `pred` holds, pumping `peer` meanwhile so its
/// session stays alive.
async fn watch_until(watcher: &mut EventClient, peer: &mut UdpPeer, pred: impl Fn(&common::events::StageView) -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !pred(&watcher.view) {
        ensure!(Instant::now() < deadline, "the watcher never saw it; it sees {:?}", watcher.view.ids());
        peer.pump()?;
        // A short wait per frame: the peer must be pumped between frames.
        let _ = watcher.recv_within(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn a_publish_only_token_joins_with_its_publish_and_leaves_with_delete() -> Result<()> {
    let server = Server::start("whip-only").await?;
    let stage = server.create_stage_with(json!({})).await?;
    let obs = server.participant_token(&stage, json!({"userId": "obs", "capabilities": ["PUBLISH"], "attributes": {"role": "encoder"}})).await?;
    let watcher_token = server.participant_token(&stage, json!({"userId": "viewer", "capabilities": ["SUBSCRIBE"]})).await?;
    let mut watcher = EventClient::connect(&server, &watcher_token).await?;
    watcher.state().await?;

    let (mut peer, created) = publish(&server, &obs).await?;
    let id = obs.participant_id.clone();
    watch_until(&mut watcher, &mut peer, |v| v.get(&id).is_some_and(|m| m.published)).await?;
    let seen = watcher.view.get(&id).cloned().ok_or_else(|| anyhow!("obs"))?;
    assert_eq!((seen.user_id.as_str(), seen.attributes.get("role").map(String::as_str)), ("obs", Some("encoder")), "its token's identity");
    assert!(seen.can_publish && !seen.can_subscribe);
    assert_eq!(seen.tracks, ["audio", "video"]);

    // DELETE: it leaves (not merely unpublishes).
    assert_eq!(server.delete(&created.location, &obs.token).await?, 204);
    watcher.state_where(|v| v.get(&id).is_none()).await?;
    assert!(watcher.removed_seen.contains(&id));

    // Disconnected by the control plane: gone, and its token is refused after.
    let (mut peer, _) = publish(&server, &obs).await?;
    watch_until(&mut watcher, &mut peer, |v| v.get(&id).is_some()).await?;
    let (status, _) = server.api(Method::POST, &format!("/v1/stages/{stage}/participants/{id}/disconnect"), None).await?;
    assert_eq!(status, 204);
    watcher.state_where(|v| v.get(&id).is_none()).await?;
    let (offer, _, _) = UdpPeer::new(Rtc::builder()).await?.offer(&sendonly())?;
    assert_eq!(server.post_sdp(PUBLISH_PATH, Some(&obs.token), &offer).await?.err(), Some((403, "PARTICIPANT_DISCONNECTED".into())));
    Ok(())
}

#[tokio::test]
async fn a_whip_only_member_is_capped_and_leaves_when_its_client_vanishes() -> Result<()> {
    let server = Server::start_with("whip-only-gone", |c| c.max_stage_members = 2).await?;
    let stage = server.create_stage_with(json!({})).await?;
    let mut tokens = Vec::new();
    for user in ["viewer", "obs", "late"] {
        tokens.push(server.participant_token(&stage, json!({"userId": user, "capabilities": ["PUBLISH", "SUBSCRIBE"]})).await?);
    }
    let mut watcher = EventClient::connect(&server, &tokens[0]).await?;
    watcher.state().await?;
    let (mut peer, _) = publish(&server, &tokens[1]).await?;
    let id = tokens[1].participant_id.clone();
    watch_until(&mut watcher, &mut peer, |v| v.get(&id).is_some_and(|m| m.published)).await?;

    // The cap counts it like a socket.
    let (offer, _, _) = UdpPeer::new(Rtc::builder()).await?.offer(&sendonly())?;
    assert_eq!(server.post_sdp(PUBLISH_PATH, Some(&tokens[2].token), &offer).await?.err(), Some((409, "STAGE_FULL".into())));

    // The encoder dies without a DELETE: no more STUN or media. Its session
    // ends at the SFU's media timeout, and it leaves with it.
    let vanished = Instant::now();
    drop(peer);
    let deadline = vanished + Duration::from_secs(40);
    while watcher.view.get(&id).is_some() {
        ensure!(Instant::now() < deadline, "the vanished encoder never left");
        let _ = watcher.recv_within(Duration::from_secs(1)).await;
    }
    assert!(watcher.removed_seen.contains(&id), "a leave, not just an unpublish");
    // Its place is free again.
    let (_late, _) = publish(&server, &tokens[2]).await?;
    Ok(())
}
