//! Event-plane frames. The server's JSON is the serde representation of
//! `ServerMessage`; this parses it without serde's tagged-enum machinery.

use stagecast_protocol::events::ServerMessage;

/// `ServerMessage` flattened: serde's internally tagged enums buffer every
/// frame into an intermediate tree, which costs a lot of wasm; a flat
/// struct parses in one pass.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawServerMessage {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    sequence_number: u64,
    #[serde(default)]
    self_id: String,
    #[serde(default)]
    participants: Vec<stagecast_protocol::events::ParticipantState>,
    #[serde(default)]
    reason: Option<stagecast_protocol::events::DisconnectReason>,
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Parses one server frame; `None` for anything unknown or malformed.
pub fn parse_server_message(text: &str) -> Option<ServerMessage> {
    let raw: RawServerMessage = serde_json::from_str(text).ok()?;
    Some(match raw.kind.as_str() {
        "STAGE_STATE" => ServerMessage::StageState {
            sequence_number: raw.sequence_number,
            self_id: raw.self_id,
            participants: raw.participants,
        },
        "DISCONNECT" => ServerMessage::Disconnect {
            reason: raw.reason?,
            message: raw.message,
        },
        "ERROR" => ServerMessage::Error {
            code: raw.code,
            message: raw.message,
        },
        "PONG" => ServerMessage::Pong,
        _ => return None,
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
            ServerMessage::Disconnect {
                reason: DisconnectReason::TokenReused,
                message: "again".into(),
            },
            ServerMessage::Error {
                code: "INVALID_JSON".into(),
                message: "bad".into(),
            },
            ServerMessage::Pong,
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
}
