//! The SFU load generator's reading of Janus messages
//! (server/examples/sfu_load/janus.rs): ids, the videoroom's replies, the
//! JSEP beside them, trickled candidates, errors from Janus and from the
//! plugin, long polls with one event or many, and candidate ports in an SDP.

#[path = "../examples/sfu_load/janus.rs"]
#[allow(dead_code)]
mod janus;

use anyhow::Result;
use janus::{candidate_ports, create_room, events_of, Jsep, Message, Trickle};
use serde_json::json;

#[test]
fn a_session_or_handle_id_comes_from_a_success_reply() -> Result<()> {
    let m = Message::parse(&json!({"janus": "success", "transaction": "t1", "data": {"id": 4_503_599_627_370_495u64}}))?;
    assert_eq!(m.janus, "success");
    assert_eq!(m.transaction.as_deref(), Some("t1"));
    assert_eq!(m.id(), Some(4_503_599_627_370_495));
    assert_eq!(m.error, None);
    assert!(Message::parse(&json!({"transaction": "t1"})).is_err(), "no \"janus\" field");
    Ok(())
}

#[test]
fn a_publisher_join_event_gives_the_feed_id_and_the_answer() -> Result<()> {
    let event = json!({
        "janus": "event", "session_id": 1, "sender": 77, "transaction": "t9",
        "plugindata": {"plugin": "janus.plugin.videoroom", "data": {
            "videoroom": "joined", "room": 1000, "id": 123456, "private_id": 42, "publishers": []
        }},
        "jsep": {"type": "answer", "sdp": "v=0\r\n"}
    });
    let m = Message::parse(&event)?;
    assert_eq!(m.sender, Some(77));
    assert_eq!(m.videoroom(), Some("joined"));
    assert_eq!(m.feed_id(), Some(123456));
    assert_eq!(m.jsep, Some(Jsep { kind: "answer".into(), sdp: "v=0\r\n".into() }));
    assert_eq!(m.error, None);
    Ok(())
}

#[test]
fn a_subscriber_attached_event_gives_the_offer_and_the_video_mid() -> Result<()> {
    let event = json!({
        "janus": "event", "sender": 5, "transaction": "t3",
        "plugindata": {"plugin": "janus.plugin.videoroom", "data": {
            "videoroom": "attached", "room": 1000,
            "streams": [
                {"mindex": 0, "mid": "0", "type": "audio", "feed_id": 9, "feed_mid": "0"},
                {"mindex": 1, "mid": "1", "type": "video", "feed_id": 9, "feed_mid": "1"}
            ]
        }},
        "jsep": {"type": "offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"}
    });
    let m = Message::parse(&event)?;
    assert_eq!(m.videoroom(), Some("attached"));
    assert_eq!(m.stream_mid("video").as_deref(), Some("1"));
    assert_eq!(m.stream_mid("audio").as_deref(), Some("0"));
    assert_eq!(m.stream_mid("data"), None);
    assert_eq!(m.jsep.map(|j| j.kind), Some("offer".into()));
    // A jsep without its SDP is a broken message, not an empty offer.
    assert!(Message::parse(&json!({"janus": "event", "jsep": {"type": "offer"}})).is_err());
    Ok(())
}

#[test]
fn errors_from_janus_and_from_the_plugin_are_both_reported() -> Result<()> {
    let core = Message::parse(&json!({
        "janus": "error", "transaction": "t2", "error": {"code": 458, "reason": "No such session 12"}
    }))?;
    assert_eq!(core.error.as_deref(), Some("No such session 12 (458)"));
    let plugin = Message::parse(&json!({
        "janus": "event", "sender": 3, "transaction": "t4",
        "plugindata": {"plugin": "janus.plugin.videoroom", "data": {
            "videoroom": "event", "error_code": 426, "error": "No such room (1000)"
        }}
    }))?;
    assert_eq!(plugin.error.as_deref(), Some("No such room (1000) (426)"));
    let fine = Message::parse(&json!({
        "janus": "event", "sender": 3, "transaction": "t5",
        "plugindata": {"plugin": "janus.plugin.videoroom", "data": {"videoroom": "event", "started": "ok"}}
    }))?;
    assert_eq!(fine.error, None);
    Ok(())
}

#[test]
fn trickled_candidates_are_read_one_many_or_completed() -> Result<()> {
    let one = Message::parse(&json!({
        "janus": "trickle", "session_id": 1, "sender": 8,
        "candidate": {"sdpMid": "0", "sdpMLineIndex": 0, "candidate": "candidate:1 1 udp 2015363327 192.0.2.2 40000 typ host"}
    }))?;
    assert_eq!(one.sender, Some(8));
    assert_eq!(
        one.trickle,
        vec![Trickle::Candidate { mid: Some("0".into()), candidate: "candidate:1 1 udp 2015363327 192.0.2.2 40000 typ host".into() }]
    );
    // As an SDP line, or without the prefix: the same candidate for str0m.
    let many = Message::parse(&json!({"janus": "trickle", "sender": 8, "candidate": [
        {"candidate": "a=candidate:2 1 udp 1 192.0.2.2 40001 typ host"},
        {"candidate": "3 1 udp 1 192.0.2.2 40002 typ host", "sdpMid": "1"},
        {"completed": true}
    ]}))?;
    assert_eq!(
        many.trickle,
        vec![
            Trickle::Candidate { mid: None, candidate: "candidate:2 1 udp 1 192.0.2.2 40001 typ host".into() },
            Trickle::Candidate { mid: Some("1".into()), candidate: "candidate:3 1 udp 1 192.0.2.2 40002 typ host".into() },
            Trickle::Completed,
        ]
    );
    // A candidate str0m can read (what the generator adds to the peer).
    let Trickle::Candidate { candidate, .. } = &one.trickle[0] else { unreachable!() };
    str0m::Candidate::from_sdp_string(candidate)?;
    let hangup = Message::parse(&json!({"janus": "hangup", "sender": 8, "reason": "ICE failed"}))?;
    assert_eq!(hangup.reason.as_deref(), Some("ICE failed"));
    assert!(hangup.trickle.is_empty());
    Ok(())
}

#[test]
fn a_long_poll_returns_one_event_or_a_list() {
    assert_eq!(events_of(json!({"janus": "keepalive"})).len(), 1);
    assert_eq!(events_of(json!([{"janus": "webrtcup"}, {"janus": "media"}])).len(), 2);
    assert!(events_of(json!([])).is_empty());
}

#[test]
fn candidate_ports_are_the_udp_candidates_of_an_sdp() {
    let sdp = "v=0\r\n\
               m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
               a=candidate:1 1 udp 2015363327 192.0.2.2 40000 typ host\r\n\
               a=candidate:2 1 tcp 1015363327 192.0.2.2 9 typ host tcptype active\r\n\
               a=end-of-candidates\r\n\
               m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
               a=candidate:1 1 UDP 2015363327 192.0.2.2 40000 typ host\r\n\
               a=candidate:3 1 udp 2015363327 192.0.2.2 not-a-port typ host\r\n";
    assert_eq!(candidate_ports(sdp), vec![40000, 40000]);
    assert!(candidate_ports("v=0\r\n").is_empty());
}

#[test]
fn a_room_is_created_for_vp8_and_opus_without_a_bitrate_cap() {
    let body = create_room(1001, 12);
    assert_eq!(body["request"], "create");
    assert_eq!(body["room"], 1001);
    assert_eq!(body["publishers"], 12);
    assert_eq!(body["bitrate"], 0);
    assert_eq!(body["videocodec"], "vp8");
    assert_eq!(body["audiocodec"], "opus");
    assert_eq!(body["permanent"], false);
}
