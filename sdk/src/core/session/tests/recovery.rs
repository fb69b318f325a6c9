//! Recovery without the app's help, one sequence per test: a failed
//! publish or subscription, a publisher the server does not know yet, a
//! dropped or silent event socket, a server restart, final disconnects and
//! the token expiring.

use super::*;

#[test]
fn a_failed_publish_is_made_again_with_capped_backoff() {
    let mut h = H::new(3600, true);
    let (op, _) = h.live();
    assert_eq!(events(&h.peer(op, PeerState::Disconnected)), [], "may come back");
    assert_eq!(h.advance(DISCONNECTED_GRACE_MS - 1.0), []);
    let a = h.advance(1.0);
    assert_eq!(
        a,
        [
            Action::ClosePeer { op, delete: true },
            Action::Emit(StageEvent::PublishStateChanged(PS::AttemptingPublish)),
        ],
        "down for good after 3 s; the app keeps its local streams"
    );
    // The media server is unreachable for a while (the event socket is not
    // yet found silent): attempts keep coming, never more than 5 s apart
    // (the schedule itself: the next test).
    for _ in 0..3 {
        let a = h.advance(5_000.0);
        h.fail(publish_op(&a), HttpFailure::network("offline"));
    }
    let a = h.advance(5_000.0);
    let op = publish_op(&a);
    assert_eq!(events(&h.ok(op)), []);
    let a = h.peer(op, PeerState::Connected);
    assert_eq!(events(&a), [StageEvent::PublishStateChanged(PS::Published)]);
    assert!(a.contains(&Action::Send(ClientMessage::SetState {
        audio_muted: false,
        video_stopped: false,
    })));
    assert!(h.log.iter().all(|a| !matches!(a, Action::Emit(StageEvent::Error(_)))));
}

#[test]
fn publish_retries_back_off_from_half_a_second_to_five() {
    let mut h = H::new(3600, true);
    let (op, _) = h.live();
    h.peer(op, PeerState::Failed);
    let mut last = h.now;
    let mut gaps = Vec::new();
    for _ in 0..7 {
        let due = h.s.publish.deadline().expect("a retry is due");
        gaps.push(due - last);
        let a = h.advance(due - h.now);
        last = h.now;
        h.fail(publish_op(&a), HttpFailure::http(503, None, None));
    }
    assert_eq!(gaps, [250.0, 500.0, 1_000.0, 2_000.0, 2_500.0, 2_500.0, 2_500.0]);
}

#[test]
fn a_failed_subscription_is_made_again_and_the_app_gets_the_new_tracks() {
    let mut h = H::new(3600, true);
    let (_, op) = h.live();
    let a = h.peer(op, PeerState::Failed);
    assert_eq!(
        events(&a),
        [
            StageEvent::StreamsRemoved {
                id: "a".into(),
                streams: remote(op),
            },
            sub_state("a", SS::AttemptingSubscribe),
        ]
    );
    assert!(a.contains(&Action::ClosePeer { op, delete: true }));
    let a = h.advance(1_000.0);
    let new = subscribe_op(&a, "a");
    h.ok(new);
    let a = h.peer(new, PeerState::Connected);
    assert_eq!(
        events(&a),
        [
            sub_state("a", SS::Subscribed),
            StageEvent::StreamsAdded {
                id: "a".into(),
                streams: remote(new),
            },
        ]
    );
    assert!(no_membership_change(&h.log));
}

#[test]
fn a_publisher_the_server_does_not_know_yet_is_retried_a_refusal_is_not() {
    let mut h = H::new(3600, true);
    h.input(Input::Join { unix_ms: UNIX_MS });
    let asked = h.snapshot(1, vec![published("a"), published("b"), p(ME)]);
    let a = h.answer(&asked);
    let (op_a, op_b) = (subscribe_op(&a, "a"), subscribe_op(&a, "b"));
    // After a server restart the snapshot can run ahead of the media plane.
    let not_yet = HttpFailure::http(404, Some("PUBLISHER_NOT_FOUND".into()), None);
    let a = h.fail(op_a, not_yet.clone());
    assert_eq!(events(&a), [], "still attempting_subscribe, no error");
    let a = h.advance(250.0);
    let op_a = subscribe_op(&a, "a");
    h.fail(op_a, not_yet);
    let a = h.advance(500.0);
    let op_a = subscribe_op(&a, "a");
    h.ok(op_a);
    assert_eq!(events(&h.peer(op_a, PeerState::Connected))[0], sub_state("a", SS::Subscribed));
    // A refused token is final: errored, one error event, no retry.
    let a = h.fail(op_b, HttpFailure::http(403, Some("TOKEN_NOT_ALLOWED".into()), None));
    let ev = events(&a);
    assert_eq!(ev[0], sub_state("b", SS::Errored));
    let StageEvent::Error(e) = &ev[1] else {
        panic!("an error event: {ev:?}")
    };
    assert_eq!(
        (e.code, e.category, e.participant_id.as_deref()),
        (ErrorCode::TokenNotAllowed, ErrorCategory::Subscribe, Some("b"))
    );
    let a = h.advance(60_000.0);
    assert!(!a.iter().any(|a| matches!(a, Action::OpenSubscribe { .. })), "{a:?}");
}

#[test]
fn a_short_socket_drop_reconnects_without_leaving_and_keeps_media() {
    let mut h = H::new(3600, true);
    h.live();
    let a = h.closed(true);
    assert_eq!(
        events(&a),
        [StageEvent::ConnectionStateChanged(ConnectionState::Connecting)]
    );
    assert!(!a.iter().any(|a| matches!(a, Action::ClosePeer { .. })), "media stays up");
    let a = h.advance(250.0);
    assert_eq!(a, [Action::OpenSocket { gen: h.gen }]);
    // The server kept us through its grace period: same members, and a
    // new connection numbers from 1 again.
    let a = h.snapshot(1, vec![published("a"), published(ME)]);
    assert_eq!(
        events(&a),
        [StageEvent::ConnectionStateChanged(ConnectionState::Connected)]
    );
    assert!(a.contains(&Action::Send(ClientMessage::SetState {
        audio_muted: false,
        video_stopped: false,
    })));
    let a = h.answer(&a);
    assert_eq!(a, [], "nothing to redo");
    assert!(no_membership_change(&h.log));
}

#[test]
fn after_a_server_restart_it_publishes_again_at_once_and_resubscribes() {
    let mut h = H::new(3600, true);
    let (pub_op, sub_op) = h.live();
    h.closed(true);
    // The server is down: refused handshakes, the diagnosis gets no answer.
    for _ in 0..3 {
        let a = h.advance(5_000.0);
        assert!(a.iter().any(|a| matches!(a, Action::OpenSocket { .. })), "{a:?}");
        let a = h.closed(false);
        let gen = h.gen;
        assert_eq!(a, [Action::Diagnose { gen }]);
        h.input(Input::Diagnosed {
            gen,
            failure: Some(HttpFailure::network("connection refused")),
        });
    }
    h.advance(5_000.0);
    // Back, with no media sessions: nobody is published yet.
    let a = h.snapshot(1, vec![p("a"), p(ME)]);
    let republished = publish_op(&a);
    assert!(a.contains(&Action::ClosePeer {
        op: pub_op,
        delete: true,
    }));
    assert!(a.contains(&Action::ClosePeer {
        op: sub_op,
        delete: false,
    }));
    let ev = events(&a);
    assert!(ev.contains(&StageEvent::StreamsRemoved {
        id: "a".into(),
        streams: remote(sub_op),
    }));
    assert!(ev.contains(&sub_state("a", SS::NotSubscribed)));
    assert!(ev.contains(&StageEvent::PublishStateChanged(PS::AttemptingPublish)));
    h.answer(&a);
    h.ok(republished);
    h.peer(republished, PeerState::Connected);
    // `a` publishes again a moment later.
    let a = h.snapshot(2, vec![published("a"), published(ME)]);
    let a = h.answer(&a);
    let op = subscribe_op(&a, "a");
    h.ok(op);
    let a = h.peer(op, PeerState::Connected);
    assert!(events(&a).contains(&StageEvent::StreamsAdded {
        id: "a".into(),
        streams: remote(op),
    }));
    assert!(no_membership_change(&h.log), "nobody left or joined");
    assert_eq!(h.s.connection_state(), ConnectionState::Connected);
}

#[test]
fn waiting_media_retries_as_soon_as_the_event_plane_is_back() {
    let mut h = H::new(3600, true);
    let (_, sub_op) = h.live();
    h.peer(sub_op, PeerState::Failed);
    // Retries fail while the network is down...
    for _ in 0..5 {
        let a = h.advance(5_000.0);
        h.fail(subscribe_op(&a, "a"), HttpFailure::network("offline"));
    }
    h.closed(true);
    let a = h.advance(250.0);
    assert!(a.contains(&Action::OpenSocket { gen: h.gen }));
    // ...and the next one goes out with the first snapshot, not seconds later.
    let a = h.snapshot(1, vec![published("a"), published(ME)]);
    subscribe_op(&a, "a");
}

#[test]
fn media_lost_while_the_event_plane_is_down_comes_back_only_after_the_rejoin() {
    // A link down for longer than the server's grace: the server lets us
    // go; a publish made before the event socket is back would be taken
    // for a WHIP-only publisher (a join and a leave the others would see).
    let mut h = H::new(3600, true);
    let (pub_op, sub_op) = h.live();
    h.peer(pub_op, PeerState::Failed);
    h.peer(sub_op, PeerState::Failed);
    h.closed(true);
    let mut opened = Vec::new();
    for _ in 0..6 {
        let a = h.advance(5_000.0);
        opened.extend(a.iter().filter(|a| matches!(a, Action::OpenPublish { .. } | Action::OpenSubscribe { .. })).cloned());
        if a.iter().any(|a| matches!(a, Action::OpenSocket { .. })) {
            h.closed(false);
            let gen = h.gen;
            h.input(Input::Diagnosed { gen, failure: Some(HttpFailure::network("offline")) });
        }
    }
    assert_eq!(opened, [], "no media is made while the event plane is down");
    assert_eq!(h.s.poll_timeout().map(|t| t > h.now), Some(true));
    h.advance(5_000.0);
    // Taken back (as a new member: the grace had passed): publish and
    // subscribe at once.
    let a = h.snapshot(1, vec![published("a"), p(ME)]);
    publish_op(&a);
    subscribe_op(&a, "a");
}

#[test]
fn a_final_disconnect_ends_the_session_with_its_reason() {
    use DisconnectReason::*;
    for (reason, left, code) in [
        (ParticipantDisconnected, LeftReason::ParticipantDisconnected, ErrorCode::ParticipantDisconnected),
        (StageDeleted, LeftReason::StageDeleted, ErrorCode::StageDeleted),
        (TokenExpired, LeftReason::TokenExpired, ErrorCode::TokenExpired),
        (TokenReused, LeftReason::TokenReused, ErrorCode::Failed),
    ] {
        let mut h = H::new(3600, true);
        let (pub_op, sub_op) = h.live();
        let a = h.frame(ServerMessage::Disconnect {
            reason,
            message: "bye".into(),
        });
        // The server ended our sessions; a DELETE would be refused.
        assert!(a.contains(&Action::ClosePeer { op: pub_op, delete: false }));
        assert!(a.contains(&Action::ClosePeer { op: sub_op, delete: false }));
        assert!(a.contains(&Action::CloseSocket { deliberate: true }));
        let ev = events(&a);
        let n = ev.len();
        assert!(ev.contains(&StageEvent::ParticipantLeft(published("a"))), "{ev:?}");
        assert_eq!(ev[n - 3], StageEvent::ConnectionStateChanged(ConnectionState::Disconnected));
        let StageEvent::Error(e) = &ev[n - 2] else {
            panic!("an error before stageLeft: {ev:?}")
        };
        assert_eq!((e.code, e.message.as_str()), (code, "bye"));
        assert_eq!(ev[n - 1], StageEvent::StageLeft(left));
        // No reconnect.
        assert_eq!(h.closed(true), []);
        assert_eq!(h.s.poll_timeout(), None);
    }
}

#[test]
fn a_refused_reconnect_that_is_final_ends_the_session() {
    let mut h = H::new(3600, true);
    h.live();
    h.closed(true);
    h.advance(250.0);
    let a = h.closed(false);
    let gen = h.gen;
    assert_eq!(a, [Action::Diagnose { gen }]);
    let kicked = HttpFailure::http(403, Some("PARTICIPANT_DISCONNECTED".into()), Some("removed".into()));
    let a = h.input(Input::Diagnosed {
        gen,
        failure: Some(kicked),
    });
    assert_eq!(
        events(&a).last(),
        Some(&StageEvent::StageLeft(LeftReason::ParticipantDisconnected))
    );
    assert_eq!(h.s.poll_timeout(), None);
}

#[test]
fn the_token_expiring_while_disconnected_ends_the_session() {
    let mut h = H::new(60, true);
    h.live();
    h.advance(40_000.0);
    h.closed(true);
    // The server stays unreachable past `exp`.
    let mut last_open = 0.0;
    let left = Action::Emit(StageEvent::StageLeft(LeftReason::TokenExpired));
    while !h.log.contains(&left) {
        assert!(h.now <= 1_000.0 + 60_000.0 + EXPIRY_GRACE_MS, "not ended: {:?}", events(&h.log));
        let a = h.advance(100.0);
        if a.iter().any(|a| matches!(a, Action::OpenSocket { .. })) {
            last_open = h.now;
            h.closed(false);
            let gen = h.gen;
            h.input(Input::Diagnosed { gen, failure: None });
        }
    }
    let ev = events(&h.log);
    assert!(matches!(&ev[ev.len() - 2], StageEvent::Error(e) if e.code == ErrorCode::TokenExpired));
    assert!(last_open < 1_000.0 + 60_000.0, "no attempt with an expired token");
    assert_eq!(h.s.poll_timeout(), None);
}

#[test]
fn the_token_expiring_while_connected_ends_the_session_if_the_server_does_not() {
    let mut h = H::new(60, true);
    h.live();
    let a = h.advance(60_000.0);
    assert!(!a.iter().any(|a| matches!(a, Action::Emit(StageEvent::StageLeft(_)))));
    let a = h.advance(EXPIRY_GRACE_MS);
    assert_eq!(
        events(&a).last(),
        Some(&StageEvent::StageLeft(LeftReason::TokenExpired))
    );
}

#[test]
fn a_silent_socket_is_dropped_and_replaced() {
    let mut h = H::new(3600, true);
    h.live();
    let a = h.advance(PING_MS);
    assert_eq!(a, [Action::Send(ClientMessage::Ping)]);
    h.frame(ServerMessage::Pong);
    let a = h.advance(SILENT_MS - 1.0);
    assert_eq!(a, [Action::Send(ClientMessage::Ping), Action::Send(ClientMessage::Ping)]);
    let a = h.advance(1.0);
    assert_eq!(
        a,
        [
            Action::CloseSocket { deliberate: false },
            Action::Emit(StageEvent::ConnectionStateChanged(ConnectionState::Connecting)),
        ]
    );
    let a = h.advance(250.0);
    assert_eq!(a, [Action::OpenSocket { gen: h.gen }]);
    // Its first snapshot must come in time too.
    let a = h.advance(OPEN_TIMEOUT_MS);
    assert_eq!(a[0], Action::CloseSocket { deliberate: false });
}

