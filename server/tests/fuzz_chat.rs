//! Chat frames from anyone: every request round-trips through the wire
//! parser, and arbitrary or mutated text never panics the parser or the
//! room core, is answered to its sender only, and gets an error text with
//! no internal detail (no addresses, no Rust type names).
//! `cargo xtask fuzz fuzz_chat --seconds N` runs the properties longer.

use std::collections::BTreeMap;

use proptest::prelude::*;
use stagecast_server::chat::room::{ChatCapabilities, ChatPolicy, ConnId, Member, Output, RoomCore, RoomLimits};
use stagecast_server::chat::wire::{parse_request, Frame, Request};
use stagecast_testkit::{check, ensure, proptest};

const T0: i64 = 1_800_000_000_000;

fn request_strategy() -> impl Strategy<Value = Request> {
    let text = any::<String>();
    let attrs = prop::option::of(prop::collection::btree_map(any::<String>(), any::<String>(), 0..4));
    prop_oneof![
        ("[ -~]{1,20}", text, attrs)
            .prop_map(|(request_id, content, attributes)| Request::SendMessage { request_id, content, attributes }),
        ("[ -~]{1,20}", text, prop::option::of(text))
            .prop_map(|(request_id, id, reason)| Request::DeleteMessage { request_id, id, reason }),
        ("[ -~]{1,20}", text, prop::option::of(text))
            .prop_map(|(request_id, user_id, reason)| Request::DisconnectUser { request_id, user_id, reason }),
    ]
}

/// No pointer, no Rust type name in text a client reads.
fn clean(message: &str) -> Result<(), TestCaseError> {
    let leaks = message.contains("0x")
        || ["struct ", "enum "].iter().any(|k| {
            message.match_indices(k).any(|(i, _)| message[i + k.len()..].starts_with(|c: char| c.is_ascii_uppercase()))
        });
    ensure(!leaks, || format!("internal detail in {message:?}"))
}

fn room() -> RoomCore {
    let mut core = RoomCore::new(RoomLimits::default(), ChatPolicy { connection_messages_per_second: 1000, connection_burst: 1000, history: 50 }, "f");
    let caps = ChatCapabilities { send_message: true, delete_message: true, disconnect_user: true };
    for (conn, user) in [(1, "alice"), (2, "bob")] {
        core.join(
            ConnId(conn),
            Member {
                user_id: user.to_owned(),
                attributes: BTreeMap::new(),
                capabilities: caps,
                session_expires_ms: T0 + 3_600_000,
            },
            T0,
        );
    }
    core
}

/// A reply that went to anyone but the sender must be a real MESSAGE/EVENT
/// (a request that parsed), and every ERROR text is clean.
fn replies_ok(outputs: &[Output], sender: ConnId, parsed: bool) -> Result<(), TestCaseError> {
    for out in outputs {
        if let Output::Frame { to, frame } = out {
            match frame {
                Frame::Error { error_message, .. } => {
                    clean(error_message)?;
                    ensure(to == &vec![sender], || format!("an ERROR went to {to:?}"))?;
                }
                _ => ensure(parsed, || format!("unparsed text produced {frame:?}"))?,
            }
        }
    }
    Ok(())
}

/// `text` from a member of a fresh room: a clean refusal or a request, and
/// [`replies_ok`].
fn from_bob(text: &str) -> Result<(), TestCaseError> {
    let parsed = parse_request(text);
    if let Err(rejected) = &parsed {
        clean(&rejected.message)?;
    }
    let outputs = room().handle_text(ConnId(2), text, T0);
    replies_ok(&outputs, ConnId(2), parsed.is_ok())
}

#[test]
fn every_request_round_trips_through_the_wire() {
    check("chat request round trip", 512, request_strategy(), |request| {
        let text = serde_json::to_string(&request).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = parse_request(&text).map_err(|e| TestCaseError::fail(format!("{e:?} for {text}")))?;
        ensure(back == request, || format!("{back:?} from {text}"))
    });
}

#[test]
fn any_text_is_a_request_or_a_clean_error_to_its_sender() {
    check("chat arbitrary text", 2048, any::<String>(), |text| from_bob(&text));
    let real = r#"{"Action":"SEND_MESSAGE","RequestId":"r1","Content":"hi","Attributes":{"a":"b"}}"#;
    let edit = (any::<prop::sample::Index>(), 0u8..3, prop_oneof![Just('"'), Just('{'), Just('}'), Just(':'), any::<char>()]);
    check("chat mutated request", 2048, prop::collection::vec(edit, 1..6), |edits| {
        let mut chars: Vec<char> = real.chars().collect();
        for (at, kind, c) in edits {
            let i = at.index(chars.len() + 1);
            match kind {
                0 if i < chars.len() => chars[i] = c,
                1 => chars.truncate(i),
                _ => chars.insert(i.min(chars.len()), c),
            }
        }
        from_bob(&chars.into_iter().collect::<String>())
    });
    // Known shapes with wrong types: serde's wording, minus our type names.
    for text in [r#"[1,2]"#, r#"{"Action":"SEND_MESSAGE","RequestId":"r","Content":5}"#, "7", "{"] {
        if let Err(rejected) = parse_request(text) {
            clean(&rejected.message).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }
}
