//! The SDK's own JSON reader and what is built on it (participant token
//! claims, event-plane frames, chat frames) against serde_json, natively:
//! a panic in any of them would be reachable from JS. Arbitrary and
//! mutated input never panics; every document serde writes reads back the
//! same; whatever serde accepts the reader accepts too.
//! `cargo xtask fuzz fuzz_json --seconds N` runs the properties longer.
#![cfg(not(target_arch = "wasm32"))]

use std::collections::BTreeMap;

use proptest::prelude::*;
use stagecast_protocol::events::{DisconnectReason, IceServer, ParticipantState, ServerMessage};
use stagecast_protocol::token::{ParticipantClaims, TokenCapabilities};
use stagecast_sdk::core::json::{self, Value};
use stagecast_sdk::core::{base64url, chat, ice, token, wire};
use stagecast_testkit::{check, ensure, proptest};

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<u64>().prop_map(|n| serde_json::json!(n)),
        (-1e300f64..1e300).prop_map(|f| serde_json::json!(f)),
        any::<String>().prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Whether our tree says what serde's does (numbers: an integer literal is
/// `Int` with the same value, anything else is `Num`).
fn same(ours: &Value, theirs: &serde_json::Value) -> bool {
    match (ours, theirs) {
        (Value::Null, serde_json::Value::Null) => true,
        (Value::Bool(a), serde_json::Value::Bool(b)) => a == b,
        (Value::Int(n), serde_json::Value::Number(m)) => {
            m.as_i64().map(i128::from).or(m.as_u64().map(i128::from)) == Some(*n) || m.is_f64()
        }
        (Value::Num, serde_json::Value::Number(m)) => m.is_f64(),
        (Value::Str(a), serde_json::Value::String(b)) => a == b,
        (Value::Arr(a), serde_json::Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y)),
        // serde keeps the last of duplicate keys; written maps have none.
        (Value::Obj(a), serde_json::Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)))
        }
        _ => false,
    }
}

#[test]
fn what_serde_writes_the_reader_reads_the_same() {
    check("json round trip", 512, json_value(), |v| {
        for text in [serde_json::to_string(&v), serde_json::to_string_pretty(&v)] {
            let text = text.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let ours = json::parse(text.as_bytes()).ok_or_else(|| TestCaseError::fail(format!("refused {text}")))?;
            ensure(same(&ours, &v), || format!("{ours:?} from {text}"))?;
        }
        Ok(())
    });
}

/// JSON-ish noise: mostly the characters JSON is made of.
fn jsonish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{"), Just("}"), Just("["), Just("]"), Just(","), Just(":"), Just("\""), Just("\\"), Just("\\u"),
        Just("d83d"), Just("dc00"), Just("0"), Just("-"), Just("1e"), Just("."), Just("9"), Just("true"),
        Just("null"), Just(" "), Just("a"), Just("é"), Just("\u{1}"),
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

#[test]
fn any_bytes_parse_or_fail_like_serde() {
    let agree = |text: &[u8]| {
        let ours = json::parse(text);
        let theirs: Result<serde_json::Value, _> = serde_json::from_slice(text);
        match (&ours, &theirs) {
            (Some(a), Ok(b)) => ensure(same(a, b), || format!("{a:?} vs {b:?}")),
            (None, Err(_)) => Ok(()),
            (None, Ok(v)) => Err(TestCaseError::fail(format!("serde read {v} but the reader refused it"))),
            // serde refuses numbers past f64's range; the reader only needs integers.
            (Some(_), Err(e)) => ensure(e.to_string().contains("number out of range"), || format!("serde: {e}")),
        }
    };
    check("json noise", 4096, jsonish(), |text| agree(text.as_bytes()));
    check("json bytes", 2048, prop::collection::vec(any::<u8>(), 0..64), |bytes| agree(&bytes));
    let deep = "[".repeat(100_000);
    assert_eq!(json::parse(deep.as_bytes()), None, "deep nesting is refused, not a stack overflow");
}

fn claims_strategy() -> impl Strategy<Value = ParticipantClaims> {
    let s = any::<String>();
    (
        (s, s, s, prop::collection::btree_map(s, s, 0..4)),
        (any::<bool>(), any::<bool>(), any::<i64>(), any::<i64>()),
        (s, s, s),
    )
        .prop_map(|((topic, jti, user_id, attributes), (p, sub, exp, iat), (events_url, whip_url, version))| {
            ParticipantClaims {
                topic,
                jti,
                user_id,
                attributes,
                capabilities: TokenCapabilities { allow_publish: p, allow_subscribe: sub },
                exp,
                iat,
                events_url,
                whip_url,
                version,
            }
        })
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[test]
fn token_claims_round_trip_and_garbage_is_malformed() {
    check("token round trip", 512, claims_strategy(), |claims| {
        let payload = serde_json::to_vec(&claims).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let jwt = format!("{}.{}.sig", b64(br#"{"alg":"ES384"}"#), b64(&payload));
        let back = token::decode_claims(&jwt).map_err(|e| TestCaseError::fail(e.to_string()))?;
        ensure(back == claims, || format!("{back:?}"))?;
        ensure(base64url::decode(&b64(&payload)).ok() == Some(payload), || "base64url round trip".to_owned())
    });
    check("token noise", 4096, any::<String>(), |text| {
        let _ = token::decode_claims(&text);
        let _ = base64url::decode(&text);
        Ok(())
    });
    let real = format!("{}.{}.sig", b64(br#"{"alg":"ES384"}"#), b64(br#"{"topic":"t","jti":"j","capabilities":{},"exp":5,"events_url":"e","whip_url":"w"}"#));
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<char>()), 1..6);
    check("token mutated", 4096, edits, |edits| {
        let mut chars: Vec<char> = real.chars().collect();
        for (at, c) in edits {
            let i = at.index(chars.len());
            chars[i] = c;
        }
        let text: String = chars.into_iter().collect();
        if let Ok(claims) = token::decode_claims(&text) {
            let _ = token::check_not_expired(&claims, f64::NAN);
            let _ = token::check_not_expired(&claims, f64::INFINITY);
        }
        Ok(())
    });
}

fn participant() -> impl Strategy<Value = ParticipantState> {
    let s = any::<String>();
    (s, s, prop::collection::btree_map(s, s, 0..3), any::<[bool; 5]>(), prop::collection::vec(s, 0..3))
        .prop_map(|(id, user_id, attributes, b, tracks)| ParticipantState {
            id,
            user_id,
            attributes,
            can_publish: b[0],
            can_subscribe: b[1],
            published: b[2],
            tracks,
            audio_muted: b[3],
            video_stopped: b[4],
        })
}

#[test]
fn server_frames_round_trip_and_noise_is_dropped() {
    let reason = prop_oneof![
        Just(DisconnectReason::ParticipantDisconnected),
        Just(DisconnectReason::StageDeleted),
        Just(DisconnectReason::TokenExpired),
        Just(DisconnectReason::TokenReused),
    ];
    let ice_server = (prop::collection::vec(any::<String>(), 0..3), any::<Option<String>>(), any::<Option<String>>())
        .prop_map(|(urls, username, credential)| IceServer { urls, username, credential });
    // The messages the SDK reads today (STAGE_DELTA comes with the event-plane
    // rework).
    let message = prop_oneof![
        prop::collection::vec(ice_server, 0..3).prop_map(|ice_servers| ServerMessage::Config { ice_servers }),
        (any::<u64>(), any::<String>(), prop::collection::vec(participant(), 0..4))
            .prop_map(|(sequence_number, self_id, participants)| ServerMessage::StageState { sequence_number, self_id, participants }),
        (reason, any::<String>()).prop_map(|(reason, message)| ServerMessage::Disconnect { reason, message }),
        (any::<String>(), any::<String>()).prop_map(|(code, message)| ServerMessage::Error { code, message }),
        Just(ServerMessage::Pong),
        prop::collection::vec(any::<String>(), 0..4).prop_map(|rids| ServerMessage::PublishLayers { rids }),
    ];
    check("server frame round trip", 512, message, |m| {
        let text = serde_json::to_string(&m).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = wire::parse_server_message(&text);
        ensure(back.as_ref() == Some(&m), || format!("{back:?} from {text}"))
    });
    check("frame noise", 4096, jsonish(), |text| {
        let _ = wire::parse_server_message(&text);
        let _ = wire::parse_api_error(&text);
        if let Some(chat::Frame::Event(e)) = chat::parse_frame(&text) {
            let _ = chat::notice_of_event(e);
        }
        Ok(())
    });
}

#[test]
fn chat_frames_from_the_server_read_back() {
    let attrs = prop::collection::btree_map(any::<String>(), any::<String>(), 0..3);
    let frame = (any::<String>(), prop::option::of(any::<String>()), any::<String>(), attrs.clone(), any::<String>(), attrs, any::<i32>());
    check("chat frame round trip", 512, frame, |(id, request_id, text, attributes, user, sender_attrs, code)| {
        let msg = serde_json::json!({"Type": "MESSAGE", "Id": id, "RequestId": request_id, "Content": text,
            "Attributes": attributes, "SendTime": "2024-01-01T00:00:00.000Z",
            "Sender": {"UserId": user, "Attributes": sender_attrs}});
        let Some(chat::Frame::Message(m)) = chat::parse_frame(&msg.to_string()) else {
            return Err(TestCaseError::fail(format!("MESSAGE not read: {msg}")));
        };
        ensure(m.id == id && m.request_id == request_id && m.content == text && m.sender.user_id == user, || format!("{m:?}"))?;
        ensure(m.attributes == attributes.into_iter().collect::<BTreeMap<_, _>>(), || "attributes".to_owned())?;
        let err = serde_json::json!({"Type": "ERROR", "Id": id, "ErrorCode": code, "ErrorMessage": text});
        let Some(chat::Frame::Error(e)) = chat::parse_frame(&err.to_string()) else {
            return Err(TestCaseError::fail(format!("ERROR not read: {err}")));
        };
        ensure(e.error_code == i64::from(code) && e.error_message == text, || format!("{e:?}"))
    });
}

/// WHIP `Link` headers (RFC 9725 ice-server links) come from whatever answers
/// at the ingest endpoint: any text is read without a panic, and a server
/// list written in the header syntax reads back.
#[test]
fn ice_server_links_read_back_and_noise_is_skipped() {
    let token = "[A-Za-z0-9:._-]{1,20}";
    let server = (token, prop::option::of(token), prop::option::of(any::<String>()));
    check("ice-server links", 512, prop::collection::vec(server, 0..4), |servers| {
        let header: Vec<String> = servers
            .iter()
            .map(|(url, user, cred)| {
                let mut link = format!("<stun:{url}>; rel=\"ice-server\"");
                if let Some(u) = user {
                    link += &format!("; username={u}");
                }
                if let Some(c) = cred {
                    let quoted = c.replace('\\', "\\\\").replace('"', "\\\"");
                    link += &format!("; credential=\"{quoted}\"; credential-type=\"password\"");
                }
                link
            })
            .collect();
        let back = ice::ice_servers_from_link(&header.join(", "));
        let want: Vec<IceServer> = servers
            .into_iter()
            .map(|(url, username, credential)| IceServer { urls: vec![format!("stun:{url}")], username, credential })
            .collect();
        ensure(back == want, || format!("{back:?} from {header:?}"))
    });
    check("link noise", 4096, any::<String>(), |text| {
        ensure(ice::ice_servers_from_link(&text).len() <= ice::MAX_ICE_SERVERS, || "bounded".to_owned())
    });
}
