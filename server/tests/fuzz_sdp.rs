//! SDP offers from anyone into the two places that parse them (the stage
//! SFU and channel ingest): a real Chrome offer and a str0m offer mutated
//! line by line and byte by byte, and arbitrary text, are answered or
//! refused with INVALID_SDP — never a panic, never a heap address in the
//! text (issue 8 item 7) — and the SFU keeps serving.
//! `cargo xtask fuzz fuzz_sdp --seconds N` runs the properties longer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use proptest::prelude::*;
use reqwest::header;
use reqwest::Method;
use serde_json::{json, Value};
use stagecast_protocol::{ParticipantId, StageId};
use stagecast_server::channel::{ingest, ChannelError};
use stagecast_server::sfu::core::{Sfu, SfuOutput};
use stagecast_server::sfu::SfuError;
use stagecast_testkit::{check, ensure as prop_ensure, proptest};
use str0m::media::{Direction, MediaKind};
use str0m::Rtc;

mod common;
use common::{Server, CHROME_SENDONLY_OFFER};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// An offer as str0m writes it (what the test broadcasters send).
fn str0m_offer() -> String {
    let mut rtc = Rtc::builder().clear_codecs().enable_h264(true).enable_opus(true, false).build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    api.apply().map(|(offer, _)| offer.to_sdp_string()).unwrap_or_default()
}

/// No address, no parser internals in what the client reads.
fn clean(message: &str) -> Result<(), TestCaseError> {
    prop_ensure(!message.contains("0x") && !message.contains("PointerOffset"), || format!("leaks: {message:?}"))
}

#[derive(Debug, Clone)]
enum Edit {
    DropLine(prop::sample::Index),
    DupLine(prop::sample::Index),
    SwapLines(prop::sample::Index, prop::sample::Index),
    /// Replace a line with one of a kind SDP has, with a hostile value.
    Line(prop::sample::Index, String),
    Byte(prop::sample::Index, u8),
    Cut(prop::sample::Index),
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    let hostile = prop_oneof![
        Just("m=video 99999999999999999999 UDP/TLS/RTP/SAVPF 96".to_owned()),
        Just("a=rtpmap:96 H264/4294967296".to_owned()),
        Just("a=fmtp:96 profile-level-id=zzzzzz;packetization-mode=9".to_owned()),
        Just("a=ssrc:4294967296 cname:x".to_owned()),
        Just("a=extmap:65536 urn:x".to_owned()),
        Just("a=rid:".to_owned()),
        Just("a=simulcast:send ;;;".to_owned()),
        Just("a=candidate:1 1 udp 1 999.1.1.1 70000 typ host".to_owned()),
        Just("a=fingerprint:sha-256 ZZ".to_owned()),
        Just("c=IN IP9 ::::".to_owned()),
        Just("a=mid:".to_owned()),
        Just("a=group:BUNDLE".to_owned()),
        "[a-z]=[ -~]{0,40}",
        any::<String>(),
    ];
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Edit::DropLine),
        any::<prop::sample::Index>().prop_map(Edit::DupLine),
        (any::<prop::sample::Index>(), any::<prop::sample::Index>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        (any::<prop::sample::Index>(), hostile).prop_map(|(i, l)| Edit::Line(i, l)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Byte(i, b)),
        any::<prop::sample::Index>().prop_map(Edit::Cut),
    ]
}

fn apply(offer: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = offer.split("\r\n").map(str::to_owned).collect();
    for edit in edits {
        let n = lines.len().max(1);
        match edit {
            Edit::DropLine(i) if !lines.is_empty() => {
                lines.remove(i.index(n));
            }
            Edit::DupLine(i) if !lines.is_empty() => {
                let line = lines[i.index(n)].clone();
                lines.insert(i.index(n), line);
            }
            Edit::SwapLines(a, b) if !lines.is_empty() => lines.swap(a.index(n), b.index(n)),
            Edit::Line(i, line) if !lines.is_empty() => lines[i.index(n)] = line.clone(),
            Edit::Byte(i, b) => {
                let mut bytes = lines.join("\r\n").into_bytes();
                if !bytes.is_empty() {
                    let at = i.index(bytes.len());
                    bytes[at] = *b;
                }
                lines = String::from_utf8_lossy(&bytes).split("\r\n").map(str::to_owned).collect();
            }
            Edit::Cut(i) => {
                let text = lines.join("\r\n");
                let at = i.index(text.len() + 1);
                let cut = text.get(..at).unwrap_or(&text).to_owned();
                lines = cut.split("\r\n").map(str::to_owned).collect();
            }
            _ => {}
        }
    }
    lines.join("\r\n")
}

fn offers() -> impl Strategy<Value = String> {
    let base = prop_oneof![Just(CHROME_SENDONLY_OFFER.to_owned()), Just(str0m_offer())];
    prop_oneof![
        8 => (base, prop::collection::vec(edit_strategy(), 1..5)).prop_map(|(b, e)| apply(&b, &e)),
        1 => any::<String>(),
        1 => "(v=0\r\n)?([a-z]=[ -~]{0,30}\r\n){0,12}",
    ]
}

#[test]
fn mutated_offers_into_the_sfu_are_answered_or_refused_cleanly() {
    let candidate = SocketAddr::new(LOCALHOST, 40_000);
    let now = Instant::now();
    let sfu = std::cell::RefCell::new(Sfu::new(candidate, now));
    let stage = StageId::from("st-fuzz");
    let counter = std::cell::Cell::new(0u32);
    check("sfu offers", 256, offers(), |offer| {
        let mut sfu = sfu.borrow_mut();
        counter.set(counter.get() + 1);
        // A few participants, so replaced sessions and the publisher cap both happen.
        let who = ParticipantId(format!("p{}", counter.get() % 16));
        match sfu.publish(&stage, &who, &offer, now) {
            Ok(_) => {}
            Err(SfuError::InvalidSdp(message)) => clean(&message)?,
            Err(SfuError::StageAtCapacity(_)) => {}
            Err(other) => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
        }
        while !matches!(sfu.poll_output(), SfuOutput::Timeout(_)) {}
        Ok(())
    });
    // Still serving: the untouched offer is answered.
    let mut sfu = sfu.into_inner();
    sfu.remove_stage(&stage, now);
    assert!(sfu.publish(&stage, &ParticipantId::from("after"), CHROME_SENDONLY_OFFER, now).is_ok());
}

#[test]
fn mutated_offers_into_channel_ingest_are_answered_or_refused_cleanly() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("invariant: a runtime");
    let _entered = runtime.enter();
    check("ingest offers", 128, offers(), |offer| {
        match ingest::prepare(LOCALHOST, LOCALHOST, None, &offer) {
            Ok(_) => {}
            Err(ChannelError::InvalidSdp(message)) => clean(&message)?,
            Err(other) => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
        }
        Ok(())
    });
}

/// What a WHIP client reads back for a garbage offer.
async fn post_sdp(server: &Server, url: &str, bearer: &str, body: &str) -> Result<(u16, Value)> {
    let res = server
        .http
        .post(url)
        .header(header::CONTENT_TYPE, "application/sdp")
        .bearer_auth(bearer)
        .body(body.to_owned())
        .send()
        .await?;
    let status = res.status().as_u16();
    Ok((status, res.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_sdp_answers_carry_no_heap_address() -> Result<()> {
    let server = Server::start("sdp-text").await?;
    let garbage = ["v=0 garbage", "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\nx=?\r\n", "m=video", "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 H264/90000\r\n"];

    // Channel WHIP.
    let (status, body) = server.api(Method::POST, "/v1/channels", Some(json!({"name": "sdp"}))).await?;
    ensure!(status == 200, "create channel: {status} {body}");
    let ingest = body["channel"]["ingestEndpoint"].as_str().context("ingestEndpoint")?.to_owned();
    let key = body["streamKey"].as_str().context("streamKey")?.to_owned();
    for sdp in garbage {
        let (status, body) = post_sdp(&server, &ingest, &key, sdp).await?;
        let message = body["message"].as_str().unwrap_or_default();
        ensure!(status == 400 && body["code"] == "INVALID_SDP", "{sdp:?}: {status} {body}");
        ensure!(!message.contains("0x") && !message.contains("PointerOffset") && !message.is_empty(), "{sdp:?}: {message}");
    }

    // Stage WHIP: a joined participant posts the same garbage.
    let stage = server.create_stage_with(json!({"name": "sdp"})).await?;
    let token = server.participant_token(&stage, json!({"userId": "ada", "capabilities": ["PUBLISH", "SUBSCRIBE"]})).await?;
    let _events = server.ws_connect(common::EVENTS_PATH, &token.token).await?;
    let publish = format!("{}/v1/stage/whip/publish", server.base);
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    for sdp in garbage {
        let (mut status, mut body) = post_sdp(&server, &publish, &token.token, sdp).await?;
        // The event-plane join lands just after the upgrade.
        while status == 409 && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            (status, body) = post_sdp(&server, &publish, &token.token, sdp).await?;
        }
        let message = body["message"].as_str().unwrap_or_default();
        ensure!(status == 400 && body["code"] == "INVALID_SDP", "{sdp:?}: {status} {body}");
        ensure!(!message.contains("0x") && !message.contains("PointerOffset") && !message.is_empty(), "{sdp:?}: {message}");
    }
    let (_, body) = post_sdp(&server, &publish, &token.token, "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\nx=?\r\n").await?;
    ensure!(body["message"].as_str().is_some_and(|m| m.ends_with("line 3 (`x=`) could not be parsed")), "names the line: {body}");
    // An oversized body: a fixed message, no transport detail.
    let (status, body) = post_sdp(&server, &ingest, &key, &"a".repeat(70 * 1024)).await?;
    ensure!(status == 413 && body["message"] == "the SDP offer is too large", "{status} {body}");
    Ok(())
}
