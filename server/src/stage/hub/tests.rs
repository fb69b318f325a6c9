//! The hub driven without sockets: connections as their writers see them.

use super::*;
use stagecast_protocol::events::ServerMessage;

fn claims(stage: &str, id: &str) -> ParticipantClaims {
    ParticipantClaims {
        topic: stage.into(),
        jti: id.into(),
        user_id: format!("user-{id}"),
        attributes: Default::default(),
        capabilities: stagecast_protocol::token::TokenCapabilities { allow_publish: true, allow_subscribe: true },
        exp: i64::MAX,
        iat: 0,
        events_url: String::new(),
        whip_url: String::new(),
        version: "1.0".into(),
    }
}

/// A connection as its writer sees it: the last sequence it sent.
struct Client {
    conn: Connection,
    self_id: String,
    sent: Option<u64>,
    members: Vec<ParticipantState>,
}

impl Client {
    fn join(hub: &StageHub, id: &str) -> Result<Self, HubError> {
        let c = claims("s", id);
        let conn = hub.join(hub.reserve(&c, 100)?, &c);
        Ok(Self { conn, self_id: id.to_owned(), sent: None, members: Vec::new() })
    }

    /// What the writer would send now, applied; `None` if nothing.
    fn next(&mut self) -> Option<ServerMessage> {
        let state = self.conn.state.borrow_and_update().clone();
        let frame = state.frame(&self.self_id, self.sent)?;
        self.sent = Some(state.sequence_number());
        let msg: ServerMessage = serde_json::from_str(&frame).ok()?;
        match &msg {
            ServerMessage::StageState { participants, .. } => self.members = participants.clone(),
            ServerMessage::StageDelta { participants, removed, .. } => {
                self.members.retain(|m| !removed.contains(&m.id));
                for p in participants {
                    match self.members.iter_mut().find(|m| m.id == p.id) {
                        Some(m) => *m = p.clone(),
                        None => self.members.push(p.clone()),
                    }
                }
            }
            _ => {}
        }
        Some(msg)
    }

    fn ids(&self) -> Vec<&str> {
        self.members.iter().map(|m| m.id.as_str()).collect()
    }

    fn disconnected(&mut self) -> Option<DisconnectReason> {
        self.conn.disconnect.try_recv().ok()
    }
}

async fn hub() -> Result<StageHub, std::io::Error> {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let addr = udp.local_addr()?;
    let (sfu, events) = SfuHandle::start(udp, addr);
    Ok(StageHub::new(sfu, events))
}

#[tokio::test]
async fn hub_fans_out_deltas_and_applies_publish_events() -> Result<(), Box<dyn std::error::Error>> {
    let hub = hub().await?;
    let stage = StageId::from("s");
    let (a, b) = (ParticipantId::from("a"), ParticipantId::from("b"));

    let mut ca = Client::join(&hub, "a")?;
    assert!(matches!(ca.next(), Some(ServerMessage::StageState { .. })));
    let mut cb = Client::join(&hub, "b")?;
    assert!(matches!(cb.next(), Some(ServerMessage::StageState { .. })));
    match ca.next() {
        Some(ServerMessage::StageDelta { participants, removed, .. }) => {
            assert_eq!(participants.len(), 1, "only the newcomer");
            assert!(removed.is_empty());
        }
        other => return Err(format!("expected a delta, got {other:?}").into()),
    }
    assert_eq!(ca.ids(), ["a", "b"]);
    assert!(hub.is_connected(&stage, &b));

    let session = SessionId::from("s1");
    hub.apply_sfu_event(SfuEvent::PublishStarted {
        stage: stage.clone(),
        participant: a.clone(),
        session: session.clone(),
        kinds: vec!["video".into()],
    });
    assert!(cb.next().is_some());
    assert!(cb.members[0].published && cb.members[0].tracks == ["video"]);

    // A stop for another (replaced) session changes nothing.
    hub.apply_sfu_event(SfuEvent::PublishStopped { stage: stage.clone(), participant: a.clone(), session: SessionId::from("old") });
    assert!(cb.next().is_none());
    hub.apply_sfu_event(SfuEvent::PublishStopped { stage: stage.clone(), participant: a.clone(), session });
    assert!(cb.next().is_some());
    assert!(!cb.members[0].published && cb.members[0].tracks.is_empty());

    // Several changes before a writer wakes: one frame with all of them.
    hub.set_state(&stage, &b, cb.conn.id, true, false);
    hub.set_state(&stage, &b, cb.conn.id, true, true);
    ca.next();
    assert!(ca.next().is_none());
    assert!(ca.members[1].audio_muted && ca.members[1].video_stopped);
    // A stale connection id cannot change state.
    hub.set_state(&stage, &b, ca.conn.id, false, false);
    assert!(ca.next().is_none());

    // Same token again: the old connection is told, the member stays.
    let mut cb2 = Client::join(&hub, "b")?;
    assert_eq!(cb.disconnected(), Some(DisconnectReason::TokenReused));
    hub.leave(&stage, &b, cb.conn.id);
    assert!(!hub.lost(&stage, &b, cb.conn.id));
    assert_eq!(hub.participants(&stage).len(), 2);
    assert!(ca.next().is_none(), "nobody saw a change");

    hub.disconnect(&stage, &b, DisconnectReason::ParticipantDisconnected);
    assert_eq!(cb2.disconnected(), Some(DisconnectReason::ParticipantDisconnected));
    assert!(matches!(ca.next(), Some(ServerMessage::StageDelta { removed, .. }) if removed == ["b"]));
    assert_eq!(ca.ids(), ["a"]);

    hub.delete_stage(&stage);
    assert_eq!(ca.disconnected(), Some(DisconnectReason::StageDeleted));
    assert!(hub.participants(&stage).is_empty());
    assert!(!hub.is_connected(&stage, &a));
    Ok(())
}

#[tokio::test]
async fn a_lost_member_stays_for_the_grace_and_a_reconnect_is_invisible() -> Result<(), Box<dyn std::error::Error>> {
    let hub = hub().await?;
    let stage = StageId::from("s");
    let b = ParticipantId::from("b");
    let mut ca = Client::join(&hub, "a")?;
    let cb = Client::join(&hub, "b")?;
    ca.next();
    assert_eq!(ca.ids(), ["a", "b"]);

    assert!(hub.lost(&stage, &b, cb.conn.id));
    assert!(hub.is_connected(&stage, &b), "still a member (may publish) within the grace");
    assert!(ca.next().is_none());
    let mut cb2 = Client::join(&hub, "b")?;
    assert!(matches!(cb2.next(), Some(ServerMessage::StageState { .. })));
    hub.grace_over(&stage, &b, cb.conn.id);
    assert!(ca.next().is_none(), "a never sees b leave");
    assert_eq!(hub.participants(&stage).len(), 2);

    // Lost again and not back: gone when the grace is over.
    assert!(hub.lost(&stage, &b, cb2.conn.id));
    hub.grace_over(&stage, &b, cb.conn.id);
    assert!(hub.is_connected(&stage, &b), "an older grace does not end a newer one");
    hub.grace_over(&stage, &b, cb2.conn.id);
    assert!(!hub.is_connected(&stage, &b));
    assert!(matches!(ca.next(), Some(ServerMessage::StageDelta { removed, .. }) if removed == ["b"]));
    Ok(())
}

#[tokio::test]
async fn seats_cap_the_stage_but_never_refuse_a_member() -> Result<(), Box<dyn std::error::Error>> {
    let hub = hub().await?;
    let stage = StageId::from("s");
    let (a, b, c) = (claims("s", "a"), claims("s", "b"), claims("s", "c"));
    let seat_a = hub.reserve(&a, 2)?;
    let seat_b = hub.reserve(&b, 2)?;
    assert_eq!(hub.reserve(&c, 2).err(), Some(HubError::StageFull { max: 2 }), "held places count");
    assert!(hub.is_full(&stage, 2));
    drop(seat_b);
    let conn_a = hub.join(seat_a, &a);
    let seat_c = hub.reserve(&c, 2)?;
    let conn_c = hub.join(seat_c, &c);
    assert!(hub.reserve(&b, 2).is_err());
    // Members reconnect whatever the cap, also within the grace.
    let _again = hub.join(hub.reserve(&a, 2)?, &a);
    assert!(hub.lost(&stage, &ParticipantId::from("c"), conn_c.id));
    assert!(hub.reserve(&c, 2).is_ok());
    assert!(hub.reserve(&b, 2).is_err(), "a member within the grace still holds its place");
    drop(conn_a);
    Ok(())
}

#[tokio::test]
async fn a_seat_for_a_deleted_stage_joins_as_disconnected() -> Result<(), Box<dyn std::error::Error>> {
    let hub = hub().await?;
    let a = claims("s", "a");
    let seat = hub.reserve(&a, 10)?;
    hub.delete_stage(&StageId::from("s"));
    let mut conn = hub.join(seat, &a);
    assert_eq!(conn.disconnect.try_recv().ok(), Some(DisconnectReason::StageDeleted));
    assert!(hub.participants(&StageId::from("s")).is_empty());
    Ok(())
}

fn restored(id: &str, audio_muted: bool, whip_only: bool) -> RestoredMember {
    let mut state = StageRoom::member_from_claims(&claims("s", id));
    state.audio_muted = audio_muted;
    state.published = true;
    state.tracks = vec!["audio".into(), "video".into()];
    RestoredMember { state, whip_only }
}

#[tokio::test]
async fn restored_members_are_back_unpublished_and_leave_unless_they_return() -> Result<(), Box<dyn std::error::Error>> {
    let hub = hub().await?;
    let stage = StageId::from("s");
    let grace = std::time::Duration::from_millis(300);
    hub.restore(&stage, vec![restored("a", false, false), restored("b", true, false), restored("c", false, false)], grace);

    // The first to come back sees everyone, nobody publishing (no session
    // survived), mute states as they were.
    let mut ca = Client::join(&hub, "a")?;
    assert!(matches!(ca.next(), Some(ServerMessage::StageState { .. })));
    assert_eq!(ca.ids(), ["a", "b", "c"]);
    assert!(ca.members.iter().all(|m| !m.published && m.tracks.is_empty()));
    assert!(ca.members[1].audio_muted);
    assert!(hub.is_full(&stage, 3), "restored members hold their places");
    assert!(hub.reserve(&claims("s", "b"), 3).is_ok(), "a restored member always gets back in");

    let _cb = Client::join(&hub, "b")?;
    assert!(ca.next().is_none(), "b coming back is no change for a");
    tokio::time::sleep(grace).await;
    let delta = until_some(|| ca.next()).await?;
    assert!(matches!(&delta, ServerMessage::StageDelta { removed, .. } if *removed == ["c"]), "{delta:?}");
    assert_eq!(ca.ids(), ["a", "b"]);
    Ok(())
}

/// The first `Some` of `f`, polled while other tasks (the grace timer) run.
/// The timer and the test's own sleep may fall due together on a loaded
/// machine, so a fixed sleep cannot say which ran first.
async fn until_some<T>(mut f: impl FnMut() -> Option<T>) -> Result<T, String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            return Err("timed out waiting for the grace to end".into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn session(s: &str) -> SessionId {
    SessionId::from(s)
}

fn stopped(stage: &StageId, participant: &str, s: &str) -> SfuEvent {
    SfuEvent::PublishStopped { stage: stage.clone(), participant: ParticipantId::from(participant), session: session(s) }
}

#[tokio::test]
async fn a_whip_publish_joins_and_its_end_is_a_leave() -> Result<(), Box<dyn std::error::Error>> {
    let hub = hub().await?;
    let stage = StageId::from("s");
    let mut watcher = Client::join(&hub, "w")?;
    watcher.next();

    let obs = claims("s", "obs");
    let admission = hub.begin_whip_publish(&obs, 10)?;
    assert!(admission.is_whip_only());
    assert!(watcher.next().is_none(), "not a member before the SFU answered");
    assert!(admission.commit(&obs, &session("s1")));
    assert!(watcher.next().is_some());
    assert_eq!(watcher.ids(), ["w", "obs"]);
    assert_eq!(watcher.members[1].user_id, "user-obs");

    // Publishing again replaces the session without a leave, even when the
    // old session's stop arrives before the new one is committed.
    let again = hub.begin_whip_publish(&obs, 10)?;
    hub.apply_sfu_event(stopped(&stage, "obs", "s1"));
    assert!(again.commit(&obs, &session("s2")));
    assert!(watcher.next().is_none(), "a replaced session is no leave");
    hub.apply_sfu_event(stopped(&stage, "obs", "s1"));
    assert!(watcher.next().is_none(), "the old session's stop changes nothing");

    hub.apply_sfu_event(stopped(&stage, "obs", "s2"));
    assert!(matches!(watcher.next(), Some(ServerMessage::StageDelta { removed, .. }) if removed == ["obs"]));
    assert!(!hub.is_connected(&stage, &ParticipantId::from("obs")));
    Ok(())
}

#[tokio::test]
async fn a_failed_republish_after_the_session_died_is_a_leave() -> Result<(), Box<dyn std::error::Error>> {
    let hub = hub().await?;
    let stage = StageId::from("s");
    let obs = claims("s", "obs");
    assert!(hub.begin_whip_publish(&obs, 10)?.commit(&obs, &session("s1")));
    let again = hub.begin_whip_publish(&obs, 10)?;
    hub.apply_sfu_event(stopped(&stage, "obs", "s1"));
    assert!(hub.is_connected(&stage, &ParticipantId::from("obs")), "a replacement is pending");
    drop(again); // the SFU refused the offer
    assert!(!hub.is_connected(&stage, &ParticipantId::from("obs")));
    Ok(())
}

#[tokio::test]
async fn whip_only_members_count_against_the_cap_and_become_ordinary_with_a_socket() -> Result<(), Box<dyn std::error::Error>> {
    let hub = hub().await?;
    let stage = StageId::from("s");
    let (obs, other) = (claims("s", "obs"), claims("s", "other"));
    let _w = Client::join(&hub, "w")?;
    let pending = hub.begin_whip_publish(&obs, 2)?;
    assert_eq!(hub.begin_whip_publish(&other, 2).err(), Some(HubError::StageFull { max: 2 }), "a pending publish holds its place");
    assert!(pending.commit(&obs, &session("s1")));
    assert!(hub.begin_whip_publish(&other, 2).is_err());
    // Its own publish again is never refused.
    assert!(hub.begin_whip_publish(&obs, 2)?.commit(&obs, &session("s2")));

    // Once it has a socket, the socket holds its place: a publish ending is no leave.
    let _socket = Client::join(&hub, "obs")?;
    assert!(!hub.begin_whip_publish(&obs, 2)?.is_whip_only());
    hub.whip_session_ended(&stage, &ParticipantId::from("obs"), &session("s2"));
    assert!(hub.is_connected(&stage, &ParticipantId::from("obs")));
    Ok(())
}

#[tokio::test]
async fn a_restored_whip_member_is_back_with_its_next_publish() -> Result<(), Box<dyn std::error::Error>> {
    let hub = hub().await?;
    let stage = StageId::from("s");
    let grace = std::time::Duration::from_millis(200);
    hub.restore(&stage, vec![restored("obs", false, true), restored("gone", false, true)], grace);
    let obs = claims("s", "obs");
    let admission = hub.begin_whip_publish(&obs, 10)?;
    assert!(admission.is_whip_only());
    assert!(admission.commit(&obs, &session("s1")));
    tokio::time::sleep(grace).await;
    until_some(|| (hub.participants(&stage).len() < 2).then_some(())).await?;
    let ids: Vec<String> = hub.participants(&stage).into_iter().map(|p| p.id).collect();
    assert_eq!(ids, ["obs"], "back in time; the other's grace ran out");
    hub.whip_session_ended(&stage, &ParticipantId::from("obs"), &session("s1"));
    assert!(hub.participants(&stage).is_empty(), "DELETE is a leave");
    Ok(())
}

#[tokio::test]
async fn a_late_publish_after_the_socket_left_does_not_rejoin() -> Result<(), Box<dyn std::error::Error>> {
    // A browser's WHIP POST held up by a dead link arrives after its
    // participant's reconnect grace ran out: refused, not a brief WHIP-only
    // member (a join and a leave the others would see).
    let hub = hub().await?;
    let stage = StageId::from("s");
    let mut watcher = Client::join(&hub, "w")?;
    watcher.next();
    let guest = Client::join(&hub, "guest")?;
    watcher.next();
    assert!(hub.lost(&stage, &ParticipantId::from("guest"), guest.conn.id));
    hub.grace_over(&stage, &ParticipantId::from("guest"), guest.conn.id);
    assert!(matches!(watcher.next(), Some(ServerMessage::StageDelta { removed, .. }) if removed == ["guest"]));

    let c = claims("s", "guest");
    assert_eq!(hub.begin_whip_publish(&c, 10).err(), Some(HubError::LeftStage));
    assert!(watcher.next().is_none(), "the others see nothing");

    // Back through the event plane, it publishes as a member again.
    let _again = Client::join(&hub, "guest")?;
    assert!(!hub.begin_whip_publish(&c, 10)?.is_whip_only());
    // A WHIP-only member whose publish ended may publish again (OBS reconnecting).
    let obs = claims("s", "obs");
    assert!(hub.begin_whip_publish(&obs, 10)?.commit(&obs, &session("s1")));
    hub.whip_session_ended(&stage, &ParticipantId::from("obs"), &session("s1"));
    assert!(hub.begin_whip_publish(&obs, 10)?.is_whip_only());
    Ok(())
}

#[tokio::test]
async fn the_layers_the_sfu_wants_reach_the_publisher_and_a_reconnect() -> Result<(), Box<dyn std::error::Error>> {
    let hub = hub().await?;
    let stage = StageId::from("s");
    let a = ParticipantId::from("a");
    let mut ca = Client::join(&hub, "a")?;
    let cb = Client::join(&hub, "b")?;
    let s1 = session("s1");
    hub.apply_sfu_event(SfuEvent::PublishStarted { stage: stage.clone(), participant: a.clone(), session: s1.clone(), kinds: vec!["video".into()] });
    ca.next();
    assert_eq!(*ca.conn.layers.borrow_and_update(), None);

    let wanted = |session: &SessionId, rids: &[&str]| SfuEvent::LayersWanted {
        stage: stage.clone(),
        participant: a.clone(),
        session: session.clone(),
        rids: rids.iter().map(|r| (*r).to_owned()).collect(),
    };
    hub.apply_sfu_event(wanted(&s1, &["low", "mid"]));
    assert!(ca.conn.layers.has_changed()?);
    assert_eq!(*ca.conn.layers.borrow_and_update(), Some(vec!["low".to_owned(), "mid".to_owned()]));
    // Only the publisher hears it; a replaced session's word counts for nothing.
    assert!(!cb.conn.layers.has_changed()?);
    hub.apply_sfu_event(wanted(&session("old"), &["low"]));
    assert!(!ca.conn.layers.has_changed()?);
    // A new connection of the publisher is told at once.
    let again = Client::join(&hub, "a")?;
    assert_eq!(*again.conn.layers.borrow(), Some(vec!["low".to_owned(), "mid".to_owned()]));
    // The frame the writer sends.
    let frame = serde_json::to_string(&ServerMessage::PublishLayers { rids: vec!["low".into()] })?;
    assert_eq!(frame, r#"{"type":"PUBLISH_LAYERS","rids":["low"]}"#);
    Ok(())
}
