//! ICE over TCP against a real server: str0m peers that have only a TCP
//! candidate (as a browser whose UDP is blocked) publish and subscribe
//! through the media port's TCP listener with RFC 4571 framing; hostile
//! connections on that port cost themselves only.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use str0m::media::{MediaTime, Mid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

mod common;
use common::{closed_at, recvonly, sendonly, Pump, Server};

const WAIT: Duration = Duration::from_secs(10);

/// A str0m peer whose only candidate is an active TCP one, connected to the
/// SFU's media port; packets travel as RFC 4571 frames.
struct TcpPeer {
    rtc: Rtc,
    local: SocketAddr,
    server: SocketAddr,
    out: mpsc::UnboundedSender<Vec<u8>>,
    incoming: mpsc::UnboundedReceiver<Vec<u8>>,
    events: Vec<Event>,
}

impl Pump for TcpPeer {
    fn pump(&mut self) -> Result<()> {
        while self.rtc.is_alive() {
            match self.rtc.poll_output()? {
                Output::Transmit(t) => {
                    ensure!(t.proto == Protocol::Tcp, "a TCP-only peer sent over {:?}", t.proto);
                    ensure!(t.destination == self.server, "sent to {} instead of the media port", t.destination);
                    let _ = self.out.send(t.contents.to_vec());
                }
                Output::Event(e) => self.events.push(e),
                Output::Timeout(_) => break,
            }
        }
        while let Ok(frame) = self.incoming.try_recv() {
            let receive = Receive::new(Protocol::Tcp, self.server, self.local, &frame)?;
            self.rtc.handle_input(Input::Receive(Instant::now(), receive))?;
        }
        self.rtc.handle_input(Input::Timeout(Instant::now()))?;
        Ok(())
    }
}

impl TcpPeer {
    async fn connect(server: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(server).await?;
        let local = stream.local_addr()?;
        let (mut reader, mut writer) = stream.into_split();
        let (in_tx, incoming) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok(len) = reader.read_u16().await else { return };
                let mut frame = vec![0u8; usize::from(len)];
                if reader.read_exact(&mut frame).await.is_err() || in_tx.send(frame).is_err() {
                    return;
                }
            }
        });
        let (out, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(packet) = out_rx.recv().await {
                let Ok(len) = u16::try_from(packet.len()) else { return };
                if writer.write_all(&[&len.to_be_bytes()[..], &packet].concat()).await.is_err() {
                    return;
                }
            }
        });
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(Candidate::builder().tcp().host(local).tcptype(TcpType::Active).build()?);
        Ok(Self { rtc, local, server, out, incoming, events: Vec::new() })
    }

}

#[tokio::test]
async fn a_tcp_only_publisher_reaches_a_tcp_only_subscriber_byte_for_byte() -> Result<()> {
    let server = Server::start("ice-tcp").await?;
    let media = server.running.media_addr;
    let (_, tokens) = server.stage_and_tokens(&[("alice", &["PUBLISH"]), ("bob", &["SUBSCRIBE"])]).await?;
    let (alice, bob) = (&tokens[0], &tokens[1]);
    let _a = server.join(alice).await?;
    let _b = server.join(bob).await?;

    // Hostile neighbours on the same port, opened first.
    let mut garbage = TcpStream::connect(media).await?;
    let noise: Vec<u8> = (0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    garbage.write_all(&noise).await?;
    let mut huge = TcpStream::connect(media).await?;
    huge.write_all(&[0xff, 0xff, 0x00, 0x01, 0x00, 0x00]).await?;
    let mut stranger = TcpStream::connect(media).await?;
    // A well-framed STUN binding request for a session that does not exist.
    let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[7u8; 12]);
    stranger.write_all(&[&[0x00, 0x14][..], &stun].concat()).await?;
    let mut half_open = TcpStream::connect(media).await?;
    let opened = Instant::now();

    let mut publisher = TcpPeer::connect(media).await?;
    let (offer, pending, mids) = common::offer(&mut publisher.rtc, &sendonly())?;
    let created = server
        .post_sdp("/v1/stage/whip/publish", Some(&alice.token), &offer)
        .await?
        .map_err(|e| anyhow!("publish refused: {e:?}"))?;
    let tcp_candidate = format!("tcp {{}} {} {} typ host tcptype passive", media.ip(), media.port());
    let (head, tail) = tcp_candidate.split_once("{}").context("pattern")?;
    ensure!(
        created.answer.lines().any(|l| l.starts_with("a=candidate:") && l.contains(head) && l.contains(tail)),
        "no passive TCP candidate in the answer:\n{}",
        created.answer
    );
    common::accept(&mut publisher.rtc, pending, &created.answer)?;
    common::pump_until(&mut [&mut publisher], "publisher connected over TCP", |p| p[0].rtc.is_connected()).await?;

    let mut subscriber = TcpPeer::connect(media).await?;
    let (offer, pending, sub_mids) = common::offer(&mut subscriber.rtc, &recvonly())?;
    let sub = server
        .post_sdp(&format!("/v1/stage/whip/subscribe/{}", alice.participant_id), Some(&bob.token), &offer)
        .await?
        .map_err(|e| anyhow!("subscribe refused: {e:?}"))?;
    common::accept(&mut subscriber.rtc, pending, &sub.answer)?;
    common::pump_until(&mut [&mut publisher, &mut subscriber], "subscriber connected over TCP", |p| p[1].rtc.is_connected()).await?;

    let video: Mid = mids[1];
    let pt = common::vp8_pt(&mut publisher.rtc, video)?;
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let start = Instant::now();
    let deadline = start + WAIT;
    while common::media_data(&subscriber.events, sub_mids[1]).len() < 20 {
        ensure!(Instant::now() < deadline, "frames did not reach the subscriber over TCP");
        let n = sent.len() as u64;
        if start.elapsed() >= Duration::from_millis(n * 20) {
            // A VP8 keyframe header and a body that differs per frame.
            let mut data = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
            data.extend((0..200).map(|i| (n as u8).wrapping_add(i)));
            publisher.rtc.writer(video).context("writer")?.write(pt, Instant::now(), MediaTime::from_90khz(n * 1800), data.clone())?;
            sent.push(data);
        }
        publisher.pump()?;
        subscriber.pump()?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let got = common::media_data(&subscriber.events, sub_mids[1]);
    // Every frame that arrived is one that was sent, whole and in order.
    let first = sent.iter().position(|f| Some(f) == got.first()).context("first frame is not one that was sent")?;
    assert_eq!(got, sent[first..first + got.len()], "frames changed on the way");

    // The hostile connections were cut; the good ones carried on meanwhile.
    let soon = Duration::from_millis(500);
    assert!(closed_at(&mut garbage, soon).await.is_some(), "random bytes left open");
    assert!(closed_at(&mut huge, soon).await.is_some(), "huge length prefix left open");
    assert!(closed_at(&mut stranger, soon).await.is_some(), "STUN for no session left open");
    // Silence is only judged after the ICE timeout (5 s).
    let closed = closed_at(&mut half_open, WAIT).await.context("half-open connection left open")?;
    let after = closed.duration_since(opened);
    ensure!((4800..7000).contains(&after.as_millis()), "half-open connection closed after {after:?}, expected ~5 s");
    publisher.pump()?;
    assert!(publisher.rtc.is_connected() && subscriber.rtc.is_connected());
    Ok(())
}
