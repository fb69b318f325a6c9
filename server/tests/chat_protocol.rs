//! The chat core and codec without a network: every request and frame shape
//! round-trips, limits (rate per room and per connection, length in code
//! points), moderators never starved, history for late joiners, capability
//! checks and session expiry against a fake clock, and the chat token.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use stagecast_server::chat::room::{
    ChatCapabilities, ChatPolicy, CloseReason, ConnId, Member, Output, Relay, RoomCore, RoomLimits,
};
use stagecast_server::chat::token::{ChatCapability, ChatClaims, ChatSigner, TokenError};
use stagecast_server::chat::wire::{parse_request, ErrorCode, Frame, Request, Sender};

const T0: i64 = 1_800_000_000_000;

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn member(user: &str, caps: ChatCapabilities) -> Member {
    Member {
        user_id: user.to_owned(),
        attributes: attrs(&[("username", user)]),
        capabilities: caps,
        session_expires_ms: T0 + 3_600_000,
    }
}

const ALL: ChatCapabilities = ChatCapabilities { send_message: true, delete_message: true, disconnect_user: true };
const SEND: ChatCapabilities = ChatCapabilities { send_message: true, delete_message: false, disconnect_user: false };
const VIEW: ChatCapabilities = ChatCapabilities { send_message: false, delete_message: false, disconnect_user: false };

/// No per-connection limit to speak of and no history: the room's own rules only.
const ROOM_ONLY: ChatPolicy = ChatPolicy { connection_messages_per_second: 1000, connection_burst: 1000, history: 0 };

/// A room with members 1 (alice, moderator), 2 (bob, sender), 3 (carol, view only).
fn room(limits: RoomLimits) -> RoomCore {
    room_with(limits, ROOM_ONLY)
}

fn room_with(limits: RoomLimits, policy: ChatPolicy) -> RoomCore {
    let mut core = RoomCore::new(limits, policy, "t");
    for (conn, user, caps) in [(1, "alice", ALL), (2, "bob", SEND), (3, "carol", VIEW)] {
        assert!(core.join(ConnId(conn), member(user, caps), T0).is_empty(), "an empty room has no history");
    }
    core
}

/// What each connection receives, in order, as JSON values; closes as "CLOSE:<reason>".
fn deliveries(outputs: &[Output]) -> BTreeMap<u64, Vec<Value>> {
    let mut map: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    for output in outputs {
        match output {
            Output::Frame { to, frame } => {
                let value: Value = serde_json::from_str(&frame.to_json()).expect("frames are JSON");
                for conn in to {
                    map.entry(conn.0).or_default().push(value.clone());
                }
            }
            Output::Close { conn, reason } => {
                map.entry(conn.0).or_default().push(json!(format!("CLOSE:{}", reason.as_str())));
            }
        }
    }
    map
}

fn send(core: &mut RoomCore, conn: u64, request_id: &str, content: &str, now: i64) -> Vec<Output> {
    let text = json!({"Action": "SEND_MESSAGE", "RequestId": request_id, "Content": content}).to_string();
    core.handle_text(ConnId(conn), &text, now)
}

fn only_error(outputs: &[Output], conn: u64) -> Value {
    let d = deliveries(outputs);
    assert_eq!(d.len(), 1, "only the requester hears back: {d:?}");
    let frames = d.get(&conn).expect("requester gets a frame");
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["Type"], "ERROR", "{frames:?}");
    frames[0].clone()
}

#[test]
fn every_request_shape_round_trips() -> anyhow::Result<()> {
    let requests = [
        Request::SendMessage { request_id: "r1".into(), content: "hello 👋".into(), attributes: None },
        Request::SendMessage {
            request_id: "r2".into(),
            content: "".into(),
            attributes: Some(attrs(&[("color", "red")])),
        },
        Request::DeleteMessage { request_id: "r3".into(), id: "m1".into(), reason: None },
        Request::DeleteMessage { request_id: "r4".into(), id: "m1".into(), reason: Some("spam".into()) },
        Request::DisconnectUser { request_id: "r5".into(), user_id: "bob".into(), reason: None },
        Request::DisconnectUser { request_id: "r6".into(), user_id: "bob".into(), reason: Some("rude".into()) },
    ];
    for request in requests {
        let text = serde_json::to_string(&request)?;
        assert_eq!(parse_request(&text).map_err(|e| anyhow::anyhow!("{e:?}"))?, request, "{text}");
    }
    // Exactly what the official client's serializeRequest produces (undefined fields dropped).
    let official = [
        (
            r#"{"Action":"SEND_MESSAGE","RequestId":"a","Content":"hi","Attributes":{"k":"v"}}"#,
            Request::SendMessage { request_id: "a".into(), content: "hi".into(), attributes: Some(attrs(&[("k", "v")])) },
        ),
        (
            r#"{"Action":"DELETE_MESSAGE","RequestId":"b","Id":"m9","Reason":"spam"}"#,
            Request::DeleteMessage { request_id: "b".into(), id: "m9".into(), reason: Some("spam".into()) },
        ),
        (
            r#"{"Action":"DISCONNECT_USER","RequestId":"c","UserId":"u1"}"#,
            Request::DisconnectUser { request_id: "c".into(), user_id: "u1".into(), reason: None },
        ),
    ];
    for (text, expected) in official {
        assert_eq!(parse_request(text).map_err(|e| anyhow::anyhow!("{e:?}"))?, expected);
    }
    Ok(())
}

#[test]
fn every_frame_shape_round_trips_with_ivs_field_names() -> anyhow::Result<()> {
    let message = Frame::Message {
        id: "m1".into(),
        request_id: Some("r1".into()),
        content: "hi".into(),
        attributes: attrs(&[("a", "b")]),
        send_time: "2027-01-15T08:00:00.000Z".into(),
        sender: Sender { user_id: "alice".into(), attributes: attrs(&[("username", "Alice")]) },
        history: false,
    };
    assert_eq!(
        serde_json::from_str::<Value>(&message.to_json())?,
        json!({"Type": "MESSAGE", "Id": "m1", "RequestId": "r1", "Content": "hi", "Attributes": {"a": "b"},
               "SendTime": "2027-01-15T08:00:00.000Z",
               "Sender": {"UserId": "alice", "Attributes": {"username": "Alice"}}})
    );
    let event = Frame::Event {
        id: "e1".into(),
        request_id: None,
        event_name: "aws:DELETE_MESSAGE".into(),
        attributes: attrs(&[("MessageID", "m1"), ("Reason", "spam")]),
        send_time: "2027-01-15T08:00:00.000Z".into(),
    };
    assert_eq!(
        serde_json::from_str::<Value>(&event.to_json())?,
        json!({"Type": "EVENT", "Id": "e1", "EventName": "aws:DELETE_MESSAGE",
               "Attributes": {"MessageID": "m1", "Reason": "spam"}, "SendTime": "2027-01-15T08:00:00.000Z"})
    );
    let error = Frame::Error {
        id: "x1".into(),
        request_id: Some("r2".into()),
        error_code: 429,
        error_message: "slow down".into(),
    };
    assert_eq!(
        serde_json::from_str::<Value>(&error.to_json())?,
        json!({"Type": "ERROR", "Id": "x1", "RequestId": "r2", "ErrorCode": 429, "ErrorMessage": "slow down"})
    );
    // A replayed message says so with a field the official client ignores.
    let replayed = message.clone().with_request_id(None).as_history();
    let json: Value = serde_json::from_str(&replayed.to_json())?;
    assert_eq!(json["History"], true);
    assert!(json.get("RequestId").is_none());
    for frame in [message, replayed, event, error] {
        assert_eq!(serde_json::from_str::<Frame>(&frame.to_json())?, frame);
    }
    let codes = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::NotAcceptable,
        ErrorCode::PayloadTooLarge,
        ErrorCode::TooManyRequests,
        ErrorCode::InternalServerError,
    ];
    assert_eq!(codes.map(ErrorCode::as_u16), [400, 401, 403, 404, 406, 413, 429, 500]);
    Ok(())
}

#[test]
fn bad_input_gets_400_and_only_the_sender_hears() {
    let mut core = room(RoomLimits::default());
    let cases: [(&str, Option<&str>); 8] = [
        ("not json at all", None),
        ("[1,2,3]", None),
        (r#"{"Action":"SEND_MESSAGE","Content":"no request id"}"#, None),
        (r#"{"Action":"SEND_MESSAGE","RequestId":"","Content":"empty id"}"#, None),
        (r#"{"Action":"DANCE","RequestId":"r1"}"#, Some("r1")),
        (r#"{"RequestId":"r2","Content":"no action"}"#, Some("r2")),
        (r#"{"Action":"SEND_MESSAGE","RequestId":"r3"}"#, Some("r3")),
        (r#"{"Action":"SEND_MESSAGE","RequestId":"r4","Content":"x","Attributes":{"n":1}}"#, Some("r4")),
    ];
    for (text, request_id) in cases {
        let out = core.handle_text(ConnId(2), text, T0);
        let error = only_error(&out, 2);
        assert_eq!(error["ErrorCode"], 400, "{text}: {error}");
        assert!(error["Id"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(error["ErrorMessage"].as_str().is_some_and(|s| !s.is_empty()));
        assert_eq!(error.get("RequestId").and_then(Value::as_str), request_id, "{text}");
    }
    let error = only_error(&core.handle_binary(ConnId(2)), 2);
    assert_eq!(error["ErrorCode"], 400);
    // Everyone is still a member and can still talk.
    assert_eq!(core.member_count(), 3);
    let d = deliveries(&send(&mut core, 2, "ok", "still here", T0));
    assert_eq!(d.len(), 3);
}

#[test]
fn a_message_reaches_everyone_and_only_the_sender_gets_its_request_id() {
    let mut core = room(RoomLimits::default());
    let out = send(&mut core, 2, "req-1", "hello", T0 + 5);
    let d = deliveries(&out);
    let mut ids = Vec::new();
    for conn in [1, 2, 3] {
        let frames = &d[&conn];
        assert_eq!(frames.len(), 1);
        let m = &frames[0];
        assert_eq!(m["Type"], "MESSAGE");
        assert_eq!(m["Content"], "hello");
        assert_eq!(m["Sender"], json!({"UserId": "bob", "Attributes": {"username": "bob"}}));
        assert_eq!(m["SendTime"], "2027-01-15T08:00:00.005Z");
        assert_eq!(m.get("RequestId").and_then(Value::as_str), (conn == 2).then_some("req-1"));
        ids.push(m["Id"].clone());
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "one message, one id: {ids:?}");
    let second = deliveries(&send(&mut core, 1, "req-2", "hi bob", T0 + 6));
    assert_ne!(second[&1][0]["Id"], ids[0], "ids are unique");
}

#[test]
fn the_room_rate_limit_is_shared_and_sliding() {
    let mut core = room(RoomLimits { max_messages_per_second: 3, max_message_length: 500 });
    assert!(core.join(ConnId(4), member("dave", SEND), T0).is_empty());
    assert_eq!(deliveries(&send(&mut core, 4, "a", "1", T0)).len(), 4);
    assert_eq!(deliveries(&send(&mut core, 2, "b", "2", T0 + 100)).len(), 4);
    assert_eq!(deliveries(&send(&mut core, 4, "c", "3", T0 + 200)).len(), 4);
    // The fourth within a second, from anyone, is refused with 429 and the RequestId.
    let error = only_error(&send(&mut core, 2, "d", "4", T0 + 900), 2);
    assert_eq!(error["ErrorCode"], 429);
    assert_eq!(error["RequestId"], "d");
    assert!(error["ErrorMessage"].as_str().is_some_and(|m| m.contains("this room")), "{error}");
    // A refused message does not count; a second after the first, one slot frees up.
    assert_eq!(deliveries(&send(&mut core, 2, "e", "5", T0 + 1000)).len(), 4);
    assert_eq!(only_error(&send(&mut core, 4, "f", "6", T0 + 1050), 4)["ErrorCode"], 429);
    assert_eq!(deliveries(&send(&mut core, 4, "g", "7", T0 + 1100)).len(), 4);
    // Other requests are not rate-limited.
    let delete = json!({"Action": "DELETE_MESSAGE", "RequestId": "h", "Id": "m1"}).to_string();
    assert_eq!(deliveries(&core.handle_text(ConnId(1), &delete, T0 + 1150)).len(), 4);
}

/// `(accepted, refused)` of `count` messages from `conn`, one every `step` ms from `start`.
fn burst(core: &mut RoomCore, conn: u64, count: i64, start: i64, step: i64) -> (usize, usize) {
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..count {
        let out = send(core, conn, &format!("{conn}-{start}-{i}"), "spam", start + i * step);
        let d = deliveries(&out);
        match d[&conn][0]["Type"].as_str() {
            Some("MESSAGE") => accepted += 1,
            _ => {
                let error = only_error(&out, conn);
                assert_eq!(error["ErrorCode"], 429, "{error}");
                refused += 1;
            }
        }
    }
    (accepted, refused)
}

#[test]
fn one_sender_cannot_use_up_the_room_and_its_excess_costs_the_room_nothing() {
    let policy = ChatPolicy { connection_messages_per_second: 3, connection_burst: 5, history: 0 };
    let mut core = room_with(RoomLimits { max_messages_per_second: 10, max_message_length: 500 }, policy);
    assert!(core.join(ConnId(4), member("dave", SEND), T0).is_empty());
    // bob floods at 50 messages a second for two seconds; dave says something
    // every half second.
    let (mut bob, mut dave) = ((0, 0), (0, 0));
    for step in 0..100 {
        let t = T0 + step * 20;
        let (a, r) = burst(&mut core, 2, 1, t, 0);
        bob = (bob.0 + a, bob.1 + r);
        if step % 25 == 0 {
            let (a, r) = burst(&mut core, 4, 1, t, 0);
            dave = (dave.0 + a, dave.1 + r);
        }
    }
    // bob: his burst of 5, then one every 333 ms; the rest refused.
    assert_eq!(bob, (10, 90));
    let error = only_error(&send(&mut core, 2, "x", "more", T0 + 1990), 2);
    assert!(error["ErrorMessage"].as_str().is_some_and(|m| m.contains("too fast")), "{error}");
    // dave always got through: bob's refused messages took nothing from the
    // room's 10 a second (without the per-connection limit, bob alone would
    // have used all 10 and dave would have been refused).
    assert_eq!(dave, (4, 0));
}

#[test]
fn moderators_are_never_refused_by_the_room_budget() {
    let policy = ChatPolicy { connection_messages_per_second: 3, connection_burst: 5, history: 0 };
    let mut core = room_with(RoomLimits { max_messages_per_second: 10, max_message_length: 500 }, policy);
    // Three spammers use up the room's 10 a second between them.
    for conn in [4, 5, 6] {
        assert!(core.join(ConnId(conn), member(&format!("spammer{conn}"), SEND), T0).is_empty());
    }
    let accepted: usize = [4, 5, 6].iter().map(|c| burst(&mut core, *c, 5, T0, 1).0).sum();
    assert_eq!(accepted, 10);
    // bob, well behaved, gets the room's 429 (IVS semantics for the room limit)...
    let error = only_error(&send(&mut core, 2, "b", "hello?", T0 + 10), 2);
    assert!(error["ErrorMessage"].as_str().is_some_and(|m| m.contains("this room")), "{error}");
    // ...but alice, who moderates, speaks, deletes and disconnects.
    let d = deliveries(&send(&mut core, 1, "a1", "calm down", T0 + 11));
    assert_eq!(d[&1][0]["Type"], "MESSAGE");
    assert_eq!(d.len(), 6, "everyone hears the moderator");
    let delete = json!({"Action": "DELETE_MESSAGE", "RequestId": "a2", "Id": "t00000004"}).to_string();
    assert_eq!(deliveries(&core.handle_text(ConnId(1), &delete, T0 + 12))[&1][0]["EventName"], "aws:DELETE_MESSAGE");
    let kick = json!({"Action": "DISCONNECT_USER", "RequestId": "a3", "UserId": "spammer4"}).to_string();
    let d = deliveries(&core.handle_text(ConnId(1), &kick, T0 + 13));
    assert_eq!(d[&1][0]["EventName"], "aws:DISCONNECT_USER");
    assert_eq!(d[&4][1], json!("CLOSE:user disconnected"));
    // The moderator's messages did not count against the room either.
    assert_eq!(burst(&mut core, 1, 4, T0 + 14, 1), (4, 0));
    assert_eq!(burst(&mut core, 2, 1, T0 + 1000, 1), (1, 0), "the window moved on");
}

#[test]
fn late_joiners_get_the_last_messages_without_deleted_ones() {
    let policy = ChatPolicy { history: 3, ..ROOM_ONLY };
    let mut core = room_with(RoomLimits::default(), policy);
    let mut ids = Vec::new();
    for i in 1..=5 {
        let d = deliveries(&send(&mut core, 2, &format!("r{i}"), &format!("m{i}"), T0 + i));
        ids.push(d[&1][0]["Id"].as_str().expect("id").to_owned());
    }
    // Only messages are kept: events are not.
    core.send_event("poll", attrs(&[]), T0 + 6);
    let delete = json!({"Action": "DELETE_MESSAGE", "RequestId": "d", "Id": ids[3]}).to_string();
    core.handle_text(ConnId(1), &delete, T0 + 7);
    // A disconnected user's messages stay.
    core.api_disconnect_user("bob", None, T0 + 8).map_err(|e| anyhow::anyhow!("{e:?}")).expect("ok");
    assert_eq!(core.history_len(), 2);

    let out = core.join(ConnId(9), member("erin", SEND), T0 + 9);
    let d = deliveries(&out);
    assert_eq!(d.len(), 1, "only the newcomer is sent anything: {d:?}");
    let replay = &d[&9];
    assert_eq!(replay.len(), 2);
    for (frame, (id, content)) in replay.iter().zip([(&ids[2], "m3"), (&ids[4], "m5")]) {
        assert_eq!(frame["Type"], "MESSAGE");
        assert_eq!(frame["Id"], id.as_str(), "the id everyone saw, so clients can deduplicate");
        assert_eq!(frame["Content"], content);
        assert_eq!(frame["History"], true);
        assert_eq!(frame["Sender"]["UserId"], "bob");
        assert!(frame.get("RequestId").is_none(), "{frame}");
    }
    // With the history off, nothing is kept.
    let mut off = room(RoomLimits::default());
    send(&mut off, 2, "r", "hi", T0);
    assert_eq!(off.history_len(), 0);
    assert!(off.join(ConnId(9), member("erin", SEND), T0).is_empty());
    off.leave(ConnId(1));
    off.leave(ConnId(2));
    off.leave(ConnId(3));
    off.leave(ConnId(9));
    assert!(off.is_idle());
    assert!(!core.is_idle());
}

#[test]
fn a_second_connection_of_the_same_user_gets_no_history() {
    let policy = ChatPolicy { history: 10, ..ROOM_ONLY };
    let mut core = room_with(RoomLimits::default(), policy);
    send(&mut core, 1, "r", "hello", T0);
    // A newcomer gets it...
    assert_eq!(deliveries(&core.join(ConnId(5), member("dana", SEND), T0)).get(&5).map(Vec::len), Some(1));
    // ...but not the connection a token refresh opens while the old one is
    // still open (nor another tab of the same user): already shown to them.
    assert!(core.join(ConnId(6), member("dana", SEND), T0 + 1).is_empty());
    assert!(core.join(ConnId(4), member("bob", SEND), T0 + 1).is_empty());
    // Once the old connections are gone, the next one gets it again (a reload).
    core.leave(ConnId(5));
    core.leave(ConnId(6));
    assert_eq!(deliveries(&core.join(ConnId(7), member("dana", SEND), T0 + 2)).get(&7).map(Vec::len), Some(1));
}

#[test]
fn the_length_limit_counts_code_points_not_bytes() {
    let mut core = room(RoomLimits { max_messages_per_second: 100, max_message_length: 5 });
    // Five emoji are twenty UTF-8 bytes but five code points.
    assert_eq!(deliveries(&send(&mut core, 2, "a", "😀😀😀😀😀", T0)).len(), 3);
    assert_eq!(deliveries(&send(&mut core, 2, "b", "héllo", T0)).len(), 3);
    let error = only_error(&send(&mut core, 2, "c", "😀😀😀😀😀😀", T0), 2);
    assert_eq!(error["ErrorCode"], 413);
    assert_eq!(error["RequestId"], "c");
    assert_eq!(only_error(&send(&mut core, 2, "d", "abcdef", T0), 2)["ErrorCode"], 413);
    // Oversized attributes are 413 too.
    let big = "x".repeat(2000);
    let text = json!({"Action": "SEND_MESSAGE", "RequestId": "e", "Content": "hi", "Attributes": {"k": big}});
    assert_eq!(only_error(&core.handle_text(ConnId(2), &text.to_string(), T0), 2)["ErrorCode"], 413);
}

#[test]
fn capabilities_are_enforced_with_403() {
    let mut core = room(RoomLimits::default());
    // carol is view-only.
    assert_eq!(only_error(&send(&mut core, 3, "a", "hi", T0), 3)["ErrorCode"], 403);
    let delete = json!({"Action": "DELETE_MESSAGE", "RequestId": "b", "Id": "m1", "Reason": "x"}).to_string();
    let disconnect = json!({"Action": "DISCONNECT_USER", "RequestId": "c", "UserId": "alice"}).to_string();
    // bob can send but not moderate.
    assert_eq!(only_error(&core.handle_text(ConnId(2), &delete, T0), 2)["ErrorCode"], 403);
    assert_eq!(only_error(&core.handle_text(ConnId(2), &disconnect, T0), 2)["ErrorCode"], 403);
    assert_eq!(core.member_count(), 3);

    // alice can delete: everyone gets aws:DELETE_MESSAGE, alice with her RequestId.
    let d = deliveries(&core.handle_text(ConnId(1), &delete, T0));
    for conn in [1, 2, 3] {
        let e = &d[&conn][0];
        assert_eq!(e["Type"], "EVENT");
        assert_eq!(e["EventName"], "aws:DELETE_MESSAGE");
        assert_eq!(e["Attributes"], json!({"MessageID": "m1", "Reason": "x"}));
        assert_eq!(e.get("RequestId").and_then(Value::as_str), (conn == 1).then_some("b"));
    }
}

#[test]
fn disconnect_user_tells_everyone_then_closes_every_connection_of_that_user() {
    let mut core = room(RoomLimits::default());
    core.join(ConnId(4), member("bob", SEND), T0); // bob's second tab
    let request = json!({"Action": "DISCONNECT_USER", "RequestId": "k", "UserId": "bob", "Reason": "spam"});
    let d = deliveries(&core.handle_text(ConnId(1), &request.to_string(), T0));
    for conn in [2, 4] {
        let frames = &d[&conn];
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert_eq!(frames[0]["EventName"], "aws:DISCONNECT_USER");
        assert_eq!(frames[0]["Attributes"], json!({"UserId": "bob", "Reason": "spam"}));
        assert_eq!(frames[1], json!("CLOSE:user disconnected"));
    }
    assert_eq!(d[&1][0]["RequestId"], "k");
    assert_eq!(d[&3].len(), 1);
    assert_eq!(core.member_count(), 2);
    assert!(core.member(ConnId(2)).is_none() && core.member(ConnId(4)).is_none());
    // The API form needs no requester.
    let (id, out) = core.api_disconnect_user("carol", None, T0).map_err(|e| anyhow::anyhow!("{e:?}")).expect("ok");
    assert!(!id.is_empty());
    assert_eq!(deliveries(&out)[&3][1], json!("CLOSE:user disconnected"));
}

#[test]
fn sessions_expire_on_the_fake_clock_with_401_then_close() {
    let mut core = RoomCore::new(RoomLimits::default(), ROOM_ONLY, "t");
    let mut early = member("early", SEND);
    early.session_expires_ms = T0 + 10_000;
    core.join(ConnId(1), early, T0);
    core.join(ConnId(2), member("late", SEND), T0);
    assert_eq!(core.next_timeout(), Some(T0 + 10_000));
    assert!(core.handle_timeout(T0 + 9_999).is_empty());

    let out = core.handle_timeout(T0 + 10_000);
    let d = deliveries(&out);
    assert_eq!(d.len(), 1);
    assert_eq!(d[&1][0]["Type"], "ERROR");
    assert_eq!(d[&1][0]["ErrorCode"], 401);
    assert_eq!(d[&1][1], json!("CLOSE:session expired"));
    assert!(matches!(out.last(), Some(Output::Close { reason: CloseReason::SessionExpired, .. })));
    assert_eq!(core.member_count(), 1);
    assert_eq!(core.next_timeout(), Some(T0 + 3_600_000));

    // A request that arrives after expiry but before the timer fired also ends the session.
    let mut late = member("racer", SEND);
    late.session_expires_ms = T0 + 20_000;
    core.join(ConnId(3), late, T0);
    let d = deliveries(&send(&mut core, 3, "r", "too late", T0 + 20_001));
    assert_eq!(d.len(), 1, "nothing is broadcast: {d:?}");
    assert_eq!(d[&3][0]["ErrorCode"], 401);
    assert_eq!(d[&3][1], json!("CLOSE:session expired"));
    // Frames from a closed connection are ignored.
    assert!(send(&mut core, 3, "r2", "ghost", T0 + 20_002).is_empty());
}

#[test]
fn delete_room_closes_everyone_and_events_reach_everyone() {
    let mut core = room(RoomLimits::default());
    let (_, out) = core.send_event("poll", attrs(&[("q", "?")]), T0);
    let d = deliveries(&out);
    assert_eq!(d.len(), 3);
    assert_eq!(d[&2][0]["EventName"], "poll");
    assert_eq!(d[&2][0]["Attributes"], json!({"q": "?"}));
    let d = deliveries(&core.close_all());
    assert_eq!(d.len(), 3);
    assert!(d.values().all(|f| f == &vec![json!("CLOSE:room deleted")]));
    assert_eq!(core.member_count(), 0);
}

#[test]
fn chat_tokens_verify_signature_kind_and_expiry() -> anyhow::Result<()> {
    let key = p384::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let signer = ChatSigner::new(key);
    let claims = ChatClaims::new(
        "room1".into(),
        "alice".into(),
        attrs(&[("username", "Alice")]),
        vec![ChatCapability::SendMessage, ChatCapability::DeleteMessage],
        1000,
        2000,
        "jti1".into(),
    );
    let token = signer.mint(&claims)?;
    assert_eq!(signer.verify(&token, 1999)?, claims);
    let caps = claims.chat_capabilities();
    assert!(caps.send_message && caps.delete_message && !caps.disconnect_user);
    assert_eq!(signer.verify(&token, 2000), Err(TokenError::Expired));

    // Another key's token is refused.
    let other = ChatSigner::new(p384::ecdsa::SigningKey::random(&mut rand::rngs::OsRng));
    assert!(matches!(other.verify(&token, 1500), Err(TokenError::Invalid(_))));
    // Tampered claims are refused.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut forged = claims.clone();
    forged.capabilities.push(ChatCapability::DisconnectUser);
    parts[1] = engine.encode(serde_json::to_vec(&forged)?);
    assert!(matches!(signer.verify(&parts.join("."), 1500), Err(TokenError::Invalid(_))));
    assert!(matches!(signer.verify("nope", 1500), Err(TokenError::Malformed(_))));
    // The same key under another kind's key id (a participant token is
    // signed by this key too) is not a chat token, nor is a payload of
    // another kind under the chat key id.
    let same_key = p384::ecdsa::SigningKey::from_slice(&[9u8; 48])?;
    let signer = ChatSigner::new(same_key.clone());
    let as_participant = stagecast_server::auth::sign_jwt(&same_key, "server-0123", &claims)?;
    assert!(matches!(signer.verify(&as_participant, 1500), Err(TokenError::Invalid(_))));
    let not_chat = stagecast_server::auth::sign_jwt(&same_key, "stagecast-chat", &json!({"kind": "stage", "exp": 2000}))?;
    assert!(matches!(signer.verify(&not_chat, 1500), Err(TokenError::Malformed(_) | TokenError::Invalid(_))));
    let mut other_kind = claims.clone();
    other_kind.kind = "stage".into();
    let other_kind = stagecast_server::auth::sign_jwt(&same_key, "stagecast-chat", &other_kind)?;
    assert!(matches!(signer.verify(&other_kind, 1500), Err(TokenError::Invalid(_))));
    assert!(signer.verify(&signer.mint(&claims)?, 1500).is_ok());
    // Capabilities serialize as IVS names.
    assert_eq!(
        serde_json::to_value([ChatCapability::SendMessage, ChatCapability::DeleteMessage, ChatCapability::DisconnectUser])?,
        json!(["SEND_MESSAGE", "DELETE_MESSAGE", "DISCONNECT_USER"])
    );
    Ok(())
}

/// One room on two nodes: node A has alice (moderator) and bob, node B has
/// carol (view only) and a second bob connection. Each node's core relays;
/// what one relays the other applies, as the Redis bus does.
#[test]
fn a_room_on_two_nodes_sees_the_same_messages_history_and_moderation() {
    let policy = ChatPolicy { history: 10, ..ROOM_ONLY };
    let mut a = RoomCore::new(RoomLimits::default(), policy, "a").relaying();
    let mut b = RoomCore::new(RoomLimits::default(), policy, "b").relaying();
    a.join(ConnId(1), member("alice", ALL), T0);
    a.join(ConnId(2), member("bob", SEND), T0);
    b.join(ConnId(3), member("carol", VIEW), T0);
    b.join(ConnId(4), member("bob", SEND), T0);

    // bob on A sends: A's members get it (bob with his RequestId), one relay carries it to B.
    let out = send(&mut a, 2, "r1", "hello from A", T0 + 10);
    let here = deliveries(&out);
    assert_eq!(here[&2][0]["RequestId"], "r1");
    assert!(here[&1][0].get("RequestId").is_none());
    let relays = a.take_relays();
    assert_eq!(relays.len(), 2, "{relays:?}");
    assert!(a.take_relays().is_empty(), "taken once");
    let Relay::Frame(Frame::Message { id: message_id, request_id: None, .. }) = &relays[0] else {
        panic!("a message relays as its frame without a request id: {relays:?}")
    };
    assert_eq!(relays[1], Relay::RoomBudget { at_ms: T0 + 10 }, "then the place it took in the room's budget");
    let message_id = message_id.clone();
    // The relay survives the trip as JSON (what Redis carries).
    let wire = serde_json::to_string(&relays).expect("relays serialize");
    let relays: Vec<Relay> = serde_json::from_str(&wire).expect("and parse back");
    let there = deliveries(&relays.into_iter().flat_map(|r| b.apply_relay(r)).collect::<Vec<_>>());
    assert_eq!(there.keys().copied().collect::<Vec<_>>(), vec![3, 4], "everyone on B, nobody twice");
    assert_eq!(there[&3][0]["Content"], "hello from A");
    assert_eq!(there[&3][0]["Id"], json!(message_id));
    assert!(b.take_relays().is_empty(), "an applied relay is not relayed again");

    // A late joiner on B gets the message from A as history.
    let late = deliveries(&b.join(ConnId(5), member("dave", VIEW), T0 + 20));
    assert_eq!(late[&5].len(), 1);
    assert_eq!(late[&5][0]["History"], true);

    // alice (on A) deletes it: the event reaches B and B's history forgets it.
    let del = json!({"Action": "DELETE_MESSAGE", "RequestId": "d1", "Id": message_id}).to_string();
    a.handle_text(ConnId(1), &del, T0 + 30);
    for relay in a.take_relays() {
        let got = deliveries(&b.apply_relay(relay));
        assert_eq!(got[&3][0]["EventName"], "aws:DELETE_MESSAGE");
    }
    assert_eq!(b.history_len(), 0);

    // alice disconnects bob: his connection on B closes after the event.
    let (_, out) = a.api_disconnect_user("bob", Some("spam"), T0 + 40).expect("valid");
    assert_eq!(deliveries(&out)[&2].last(), Some(&json!("CLOSE:user disconnected")));
    let relayed: Vec<Output> = a.take_relays().into_iter().flat_map(|r| b.apply_relay(r)).collect();
    let got = deliveries(&relayed);
    assert_eq!(got[&4], vec![got[&4][0].clone(), json!("CLOSE:user disconnected")]);
    assert_eq!(got[&4][0]["EventName"], "aws:DISCONNECT_USER");
    assert_eq!(got[&3].len(), 1, "carol sees the event and stays");
    assert_eq!(b.member_count(), 2, "carol and dave remain on B");

    // DeleteRoom on A closes B's connections too.
    a.close_all();
    let closes = deliveries(&a.take_relays().into_iter().flat_map(|r| b.apply_relay(r)).collect::<Vec<_>>());
    assert_eq!(closes[&3], vec![json!("CLOSE:room deleted")]);
    assert_eq!(b.member_count(), 0);
}

/// The room's messages-per-second budget is the room's, not each node's:
/// what one node accepted counts in the others' windows once relayed.
#[test]
fn a_rooms_message_rate_holds_across_nodes() {
    let limits = RoomLimits { max_messages_per_second: 3, max_message_length: 500 };
    let mut a = RoomCore::new(limits, ROOM_ONLY, "a").relaying();
    let mut b = RoomCore::new(limits, ROOM_ONLY, "b").relaying();
    a.join(ConnId(1), member("alice", SEND), T0);
    b.join(ConnId(2), member("bob", SEND), T0);
    for (i, at) in [T0 + 100, T0 + 200].into_iter().enumerate() {
        let out = send(&mut a, 1, &format!("a{i}"), "from A", at);
        assert_eq!(deliveries(&out)[&1][0]["Type"], "MESSAGE");
    }
    for relay in a.take_relays() {
        b.apply_relay(relay);
    }
    // B has room for one more in this second, not three.
    assert_eq!(deliveries(&send(&mut b, 2, "b0", "from B", T0 + 300))[&2][0]["Type"], "MESSAGE");
    let refused = only_error(&send(&mut b, 2, "b1", "from B", T0 + 400), 2);
    assert_eq!(refused["ErrorCode"], 429, "{refused}");
    // A learns of B's too.
    for relay in b.take_relays() {
        a.apply_relay(relay);
    }
    assert_eq!(only_error(&send(&mut a, 1, "a2", "from A", T0 + 500), 1)["ErrorCode"], 429);
    // A second later the window has slid past A's first two.
    assert_eq!(deliveries(&send(&mut b, 2, "b2", "from B", T0 + 1250))[&2][0]["Type"], "MESSAGE");
    // Relays from a node whose members only listen stay bounded.
    for i in 0..10_000 {
        b.apply_relay(Relay::RoomBudget { at_ms: T0 + 2000 + i });
    }
    assert_eq!(only_error(&send(&mut b, 2, "b3", "from B", T0 + 12_000), 2)["ErrorCode"], 429, "the window is full");
    assert_eq!(deliveries(&send(&mut b, 2, "b4", "from B", T0 + 13_500))[&2][0]["Type"], "MESSAGE");
}

#[test]
fn a_room_that_does_not_relay_keeps_nothing_for_other_nodes() {
    let mut core = room(RoomLimits::default());
    send(&mut core, 2, "r1", "hi", T0);
    core.api_disconnect_user("bob", None, T0 + 1).expect("valid");
    assert!(core.take_relays().is_empty(), "single-node rooms do not pay for relays");
}
