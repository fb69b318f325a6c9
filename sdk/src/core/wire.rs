//! Event-plane frames and error bodies. The server's JSON is the serde
//! representation of the protocol types; this reads and writes it without
//! serde (see [`parse_server_message`] for why).

use super::json::{self, Fields, Value};
use stagecast_protocol::events::{
    ClientMessage, DisconnectReason, IceServer, ParticipantState, ServerMessage,
};
use stagecast_protocol::ApiError;

/// Parses one server frame; `None` for anything unknown or malformed.
///
/// Read with [`json`] rather than serde_json: serde's internally tagged
/// enums and derived deserializers cost a lot of wasm; the accepted input is
/// the same (see the tests, which round-trip serde's own output).
pub fn parse_server_message(text: &str) -> Option<ServerMessage> {
    let doc = json::parse(text.as_bytes())?;
    let f = Fields::of(&doc)?;
    Some(match f.req_str("type")?.as_str() {
        "STAGE_STATE" => ServerMessage::StageState {
            sequence_number: u64::try_from(f.req_int("sequenceNumber")?).ok()?,
            self_id: f.req_str("selfId")?,
            participants: match doc.get("participants")? {
                Value::Arr(items) => items.iter().map(participant).collect::<Option<_>>()?,
                _ => return None,
            },
        },
        "STAGE_DELTA" => ServerMessage::StageDelta {
            sequence_number: u64::try_from(f.req_int("sequenceNumber")?).ok()?,
            base_sequence_number: u64::try_from(f.req_int("baseSequenceNumber")?).ok()?,
            participants: f
                .opt_arr("participants")?
                .iter()
                .map(participant)
                .collect::<Option<_>>()?,
            removed: strings(f.opt_arr("removed")?)?,
        },
        "CONFIG" => ServerMessage::Config {
            ice_servers: f
                .opt_arr("iceServers")?
                .iter()
                .map(ice_server)
                .collect::<Option<_>>()?,
        },
        "DISCONNECT" => ServerMessage::Disconnect {
            reason: match f.req_str("reason")?.as_str() {
                "participant-disconnected" => DisconnectReason::ParticipantDisconnected,
                "stage-deleted" => DisconnectReason::StageDeleted,
                "token-expired" => DisconnectReason::TokenExpired,
                "token-reused" => DisconnectReason::TokenReused,
                _ => return None,
            },
            message: f.opt_str("message")?,
        },
        "ERROR" => ServerMessage::Error {
            code: f.req_str("code")?,
            message: f.req_str("message")?,
        },
        "PONG" => ServerMessage::Pong,
        "PUBLISH_LAYERS" => ServerMessage::PublishLayers {
            rids: match doc.get("rids")? {
                Value::Arr(items) => strings(items)?,
                _ => return None,
            },
        },
        _ => return None,
    })
}

fn participant(v: &Value) -> Option<ParticipantState> {
    let f = Fields::of(v)?;
    Some(ParticipantState {
        id: f.req_str("id")?,
        user_id: f.req_str("userId")?,
        attributes: f.opt_str_map("attributes")?,
        can_publish: f.opt_bool("canPublish")?,
        can_subscribe: f.opt_bool("canSubscribe")?,
        published: f.req_bool("published")?,
        tracks: strings(f.opt_arr("tracks")?)?,
        audio_muted: f.req_bool("audioMuted")?,
        video_stopped: f.req_bool("videoStopped")?,
    })
}

fn strings(items: &[Value]) -> Option<Vec<String>> {
    items
        .iter()
        .map(|t| match t {
            Value::Str(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn ice_server(v: &Value) -> Option<IceServer> {
    let f = Fields::of(v)?;
    Some(IceServer {
        urls: match v.get("urls")? {
            Value::Arr(items) => strings(items)?,
            _ => return None,
        },
        username: f.opt_nullable_str("username")?,
        credential: f.opt_nullable_str("credential")?,
    })
}

/// A client frame as the server's serde expects it.
pub fn client_message_json(msg: &ClientMessage) -> String {
    let flag = |b: bool| if b { "true" } else { "false" };
    match msg {
        ClientMessage::SetState {
            audio_muted,
            video_stopped,
        } => [
            r#"{"type":"SET_STATE","audioMuted":"#,
            flag(*audio_muted),
            r#","videoStopped":"#,
            flag(*video_stopped),
            "}",
        ]
        .concat(),
        ClientMessage::Ping => r#"{"type":"PING"}"#.to_owned(),
    }
}

/// An error body `{code, message}` (both required, like serde's derive).
pub fn parse_api_error(text: &str) -> Option<ApiError> {
    let doc = json::parse(text.as_bytes())?;
    let f = Fields::of(&doc)?;
    Some(ApiError {
        code: f.req_str("code")?,
        message: f.req_str("message")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::tests::p;
    use stagecast_protocol::events::DisconnectReason;

    #[test]
    fn parses_every_server_message_as_serde_writes_it() -> Result<(), serde_json::Error> {
        let messages = [
            ServerMessage::StageState {
                sequence_number: 7,
                self_id: "me".into(),
                participants: vec![p("me"), p("a")],
            },
            ServerMessage::StageDelta {
                sequence_number: 1_764_000_000_000_009,
                base_sequence_number: 1_764_000_000_000_007,
                participants: vec![p("a")],
                removed: vec!["b".into(), "c\"d".into()],
            },
            ServerMessage::StageDelta {
                sequence_number: 8,
                base_sequence_number: 7,
                participants: vec![],
                removed: vec![],
            },
            ServerMessage::Config {
                ice_servers: vec![
                    IceServer {
                        urls: vec!["stun:stun.example.test:3478".into()],
                        username: None,
                        credential: None,
                    },
                    IceServer {
                        urls: vec![
                            "turn:turn.example.test:3478?transport=udp".into(),
                            "turns:turn.example.test:5349?transport=tcp".into(),
                        ],
                        username: Some("1764000000:alice".into()),
                        credential: Some("c2VjcmV0".into()),
                    },
                ],
            },
            ServerMessage::Config {
                ice_servers: vec![],
            },
            ServerMessage::Disconnect {
                reason: DisconnectReason::TokenReused,
                message: "again".into(),
            },
            ServerMessage::Error {
                code: "INVALID_JSON".into(),
                message: "bad".into(),
            },
            ServerMessage::Pong,
            ServerMessage::PublishLayers {
                rids: vec!["low".into(), "high".into()],
            },
            ServerMessage::PublishLayers { rids: vec![] },
        ];
        for m in messages {
            let text = serde_json::to_string(&m)?;
            assert_eq!(parse_server_message(&text), Some(m), "{text}");
        }
        Ok(())
    }

    #[test]
    fn rejects_unknown_and_malformed_frames() {
        assert_eq!(parse_server_message("{"), None);
        assert_eq!(parse_server_message(r#"{"type":"NOPE"}"#), None);
        assert_eq!(
            parse_server_message(r#"{"type":"DISCONNECT","reason":"whatever"}"#),
            None
        );
        assert_eq!(parse_server_message(r#"{"type":"DISCONNECT"}"#), None);
    }

    #[test]
    fn participant_fields_follow_serde_defaults() {
        let minimal = r#"{"type":"STAGE_STATE","sequenceNumber":3,"selfId":"x","participants":[
            {"id":"x","userId":"u","published":true,"audioMuted":false,"videoStopped":true,"extra":[1,{}]}]}"#;
        let Some(ServerMessage::StageState { participants, .. }) = parse_server_message(minimal)
        else {
            panic!("minimal snapshot rejected");
        };
        assert_eq!(participants.len(), 1);
        assert!(participants[0].attributes.is_empty() && participants[0].tracks.is_empty());
        assert!(participants[0].published && participants[0].video_stopped);
        for bad in [
            r#"{"type":"STAGE_STATE","sequenceNumber":-1,"selfId":"x","participants":[]}"#,
            r#"{"type":"STAGE_STATE","sequenceNumber":1.5,"selfId":"x","participants":[]}"#,
            r#"{"type":"STAGE_STATE","sequenceNumber":1,"selfId":"x"}"#,
            r#"{"type":"STAGE_STATE","sequenceNumber":1,"selfId":"x","participants":[{"id":"x"}]}"#,
            r#"{"type":"ERROR","code":"X"}"#,
            r#"{"type":"DISCONNECT","reason":"token-reused","message":null}"#,
            r#"{"type":"STAGE_DELTA","sequenceNumber":2,"participants":[]}"#,
            r#"{"type":"STAGE_DELTA","sequenceNumber":2,"baseSequenceNumber":1,"removed":[1]}"#,
            r#"{"type":"STAGE_DELTA","sequenceNumber":2,"baseSequenceNumber":-1}"#,
            r#"{"type":"CONFIG","iceServers":[{"username":"u"}]}"#,
            r#"{"type":"CONFIG","iceServers":[{"urls":"stun:x"}]}"#,
            r#"{"type":"CONFIG","iceServers":[{"urls":["stun:x"],"username":1}]}"#,
            r#"{"type":"CONFIG","iceServers":[{"urls":["stun:x"],"credential":1}]}"#,
        ] {
            assert_eq!(parse_server_message(bad), None, "{bad}");
            assert!(serde_json::from_str::<ServerMessage>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn delta_and_config_defaults_follow_serde() -> Result<(), serde_json::Error> {
        for text in [
            r#"{"type":"STAGE_DELTA","sequenceNumber":9,"baseSequenceNumber":8}"#,
            r#"{"type":"CONFIG"}"#,
            r#"{"type":"CONFIG","iceServers":[{"urls":["stun:x"],"username":null,"extra":true}]}"#,
        ] {
            let ours = parse_server_message(text);
            assert!(ours.is_some(), "{text}");
            assert_eq!(ours, Some(serde_json::from_str(text)?), "{text}");
        }
        Ok(())
    }

    #[test]
    fn client_messages_match_serde() -> Result<(), serde_json::Error> {
        for m in [
            ClientMessage::Ping,
            ClientMessage::SetState {
                audio_muted: true,
                video_stopped: false,
            },
            ClientMessage::SetState {
                audio_muted: false,
                video_stopped: true,
            },
        ] {
            assert_eq!(client_message_json(&m), serde_json::to_string(&m)?);
        }
        Ok(())
    }

    #[test]
    fn api_errors() {
        let e = parse_api_error(r#"{"code":"TOKEN_EXPIRED","message":"expired","x":1}"#);
        assert_eq!(e.map(|e| e.code), Some("TOKEN_EXPIRED".to_owned()));
        assert_eq!(parse_api_error(r#"{"code":"X"}"#), None);
        assert_eq!(parse_api_error("not json"), None);
    }
}
