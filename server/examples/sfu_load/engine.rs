//! The SFU load generator's peers and the one task that runs them all: str0m
//! publishers writing synthetic simulcast and audio, subscriptions in RTP
//! mode counting what arrives ([`super::account`]), one UDP socket each.

use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use str0m::format::Codec;
use str0m::media::{Frequency, KeyframeRequest, MediaTime, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::account::{audio_number_of, audio_packet, due_slots, video_frame, video_frame_of, FrameCounter, SeqCounter};

/// IVS's default simulcast layers, lowest first: rid, kbit/s, fps, width, height.
pub const LAYERS: [(&str, u64, u64, u16, u16); 3] =
    [("low", 200, 15, 320, 180), ("mid", 700, 20, 640, 360), ("high", 2500, 30, 1280, 720)];
/// Opus-sized audio: bytes per packet and packets per second (32 kbit/s).
pub const AUDIO_BYTES: usize = 80;
pub const AUDIO_PPS: u64 = 50;
/// The engine looks at its commands (new peers, the window) at least this often.
const MAX_WAIT: Duration = Duration::from_millis(5);

/// A str0m peer on its own UDP socket, serviced by the engine task.
pub struct Peer {
    pub rtc: Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    /// When str0m next wants a timeout.
    deadline: Instant,
    /// UDP bytes received (the whole datagrams: media, RTCP, STUN).
    rx_bytes: u64,
    /// Datagrams str0m wanted sent that the socket refused (buffer full).
    send_failures: u64,
    connected: bool,
    /// str0m failed or ICE disconnected: no longer serviced.
    dead: bool,
}

impl Peer {
    pub async fn new(rtp_mode: bool) -> Result<Self> {
        Self::on(IpAddr::from([127, 0, 0, 1]), rtp_mode).await
    }

    /// A peer on `ip` (Janus gathers no loopback candidates: against Janus
    /// the peers use a local non-loopback address, routed over `lo` all the same).
    pub async fn on(ip: IpAddr, rtp_mode: bool) -> Result<Self> {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let addr = socket.local_addr()?;
        let now = Instant::now();
        let mut rtc = Rtc::builder().set_rtp_mode(rtp_mode).build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp")?);
        Ok(Self { rtc, socket, addr, deadline: now, rx_bytes: 0, send_failures: 0, connected: false, dead: false })
    }

    /// Send what str0m wants sent and hand its events to `on_event`, until
    /// it names its next timeout.
    fn drain(&mut self, on_event: &mut impl FnMut(Event)) -> Result<()> {
        while self.rtc.is_alive() {
            match self.rtc.poll_output()? {
                Output::Transmit(t) => {
                    if self.socket.try_send_to(&t.contents, t.destination).is_err() {
                        self.send_failures += 1;
                    }
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::IceConnectionStateChange(IceConnectionState::Disconnected)) => self.dead = true,
                Output::Event(e) => on_event(e),
                Output::Timeout(t) => {
                    self.deadline = t;
                    break;
                }
            }
        }
        Ok(())
    }

    /// Take in every datagram waiting on the socket (draining str0m after
    /// each: in RTP mode it holds one received packet at a time), then the
    /// timeout if it is due. `force` drains even without input (new media
    /// was written).
    fn service(&mut self, now: Instant, buf: &mut [u8], force: bool, mut on_event: impl FnMut(Event)) {
        let result = (|| -> Result<()> {
            // Read until the socket would block (so tokio clears its
            // readiness; nothing waiting costs no system call). A dead peer's
            // datagrams are read and dropped.
            let mut errors = 0;
            loop {
                let (n, source) = match self.socket.try_recv_from(buf) {
                    Ok(received) => received,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    // An ICMP error for an earlier send: read on.
                    Err(_) if errors < 16 => {
                        errors += 1;
                        continue;
                    }
                    Err(_) => break,
                };
                if self.dead {
                    continue;
                }
                self.rx_bytes += n as u64;
                let Some(bytes) = buf.get(..n) else { continue };
                let Ok(receive) = Receive::new(Protocol::Udp, source, self.addr, bytes) else { continue };
                // Stamped when read, not when the loop woke: the SFU's
                // delay-based estimate works from the arrival times this peer reports.
                self.rtc.handle_input(Input::Receive(Instant::now(), receive))?;
                self.drain(&mut on_event)?;
            }
            if self.dead {
                return Ok(());
            }
            if now >= self.deadline {
                self.rtc.handle_input(Input::Timeout(now))?;
                self.drain(&mut on_event)?;
            } else if force {
                self.drain(&mut on_event)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            eprintln!("sfu_load: a peer failed ({e:#}); it is no longer serviced");
            self.dead = true;
        }
    }
}

/// One WHIP publisher: simulcast video on `video`, audio on `audio`.
pub struct Publisher {
    peer: Peer,
    video: Mid,
    audio: Mid,
    vp8: Pt,
    opus: Pt,
    /// When it first sent (once connected).
    started: Option<Instant>,
    /// The next slot of each layer's schedule (frame intervals since
    /// `started`), and of the audio's.
    slots: [u64; 3],
    audio_slot: u64,
    /// Frames written per layer and audio packets: the next one's number
    /// (contiguous: a skipped slot is no frame, so no gap).
    frames: [u32; 3],
    audio_packets: u32,
    /// Layers that owe a keyframe (never sent one, or the SFU asked).
    owe_keyframe: [bool; 3],
    keyframe_requests: u64,
    /// Media payload bytes written.
    media_bytes: u64,
    /// Reused for every frame.
    scratch: Vec<u8>,
}

impl Publisher {
    /// A publisher on `peer`, whose offer had audio on `audio` and simulcast
    /// video on `video` (rids as in [`LAYERS`]) and was answered.
    pub fn new(peer: Peer, audio: Mid, video: Mid) -> Result<Self> {
        let vp8 = *pts(&peer.rtc, Codec::Vp8).first().context("no VP8")?;
        let opus = *pts(&peer.rtc, Codec::Opus).first().context("no Opus")?;
        Ok(Self {
            peer,
            video,
            audio,
            vp8,
            opus,
            started: None,
            slots: [0; 3],
            audio_slot: 0,
            frames: [0; 3],
            audio_packets: 0,
            owe_keyframe: [true; 3],
            keyframe_requests: 0,
            media_bytes: 0,
            scratch: Vec::with_capacity(16 * 1024),
        })
    }

    /// Write every frame that is due (at most a few per layer: after a
    /// stall, frames are skipped as an encoder would, not sent in a burst).
    fn write_due(&mut self, now: Instant) -> Result<bool> {
        if !self.peer.connected || self.peer.dead {
            return Ok(false);
        }
        let started = *self.started.get_or_insert(now);
        let micros = now.saturating_duration_since(started).as_micros() as u64;
        let mut wrote = false;
        for (i, (rid, kbps, fps, width, height)) in LAYERS.iter().enumerate() {
            for slot in due_slots(&mut self.slots[i], micros * fps / 1_000_000) {
                let key = std::mem::replace(&mut self.owe_keyframe[i], false);
                let size = (kbps * 1000 / 8 / fps) as usize;
                video_frame(&mut self.scratch, size, i as u8, self.frames[i], key, *width, *height);
                // Each layer's RTP time starts elsewhere, as browsers' do.
                let ticks = (i as u64) * 1_000_000 + slot * 90_000 / fps;
                let writer = self.peer.rtc.writer(self.video).context("no video writer")?;
                writer.rid(Rid::from(*rid)).write(self.vp8, now, MediaTime::from_90khz(ticks), &self.scratch[..])?;
                self.media_bytes += size as u64;
                self.frames[i] = self.frames[i].wrapping_add(1);
                wrote = true;
            }
        }
        for slot in due_slots(&mut self.audio_slot, micros * AUDIO_PPS / 1_000_000) {
            audio_packet(&mut self.scratch, AUDIO_BYTES, self.audio_packets);
            let ticks = slot * 48_000 / AUDIO_PPS;
            let writer = self.peer.rtc.writer(self.audio).context("no audio writer")?;
            writer.write(self.opus, now, MediaTime::new(ticks, Frequency::FORTY_EIGHT_KHZ), &self.scratch[..])?;
            self.media_bytes += AUDIO_BYTES as u64;
            self.audio_packets = self.audio_packets.wrapping_add(1);
            wrote = true;
        }
        Ok(wrote)
    }

    /// When the next frame or audio packet is due (far off until connected).
    fn next_due(&self) -> Instant {
        let Some(started) = self.started else { return Instant::now() + MAX_WAIT };
        let slot_at = |slot: u64, rate: u64| started + Duration::from_micros((slot * 1_000_000).div_ceil(rate));
        LAYERS
            .iter()
            .enumerate()
            .map(|(i, l)| slot_at(self.slots[i], l.2))
            .fold(slot_at(self.audio_slot, AUDIO_PPS), Instant::min)
    }

    fn step(&mut self, now: Instant, buf: &mut [u8]) {
        let wrote = match self.write_due(now) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("sfu_load: a publisher failed to write ({e:#}); it is no longer serviced");
                self.peer.dead = true;
                false
            }
        };
        let (owe, requests) = (&mut self.owe_keyframe, &mut self.keyframe_requests);
        self.peer.service(now, buf, wrote, |e| {
            if let Event::KeyframeRequest(KeyframeRequest { rid, .. }) = e {
                *requests += 1;
                match rid.and_then(|r| LAYERS.iter().position(|l| l.0 == &*r)) {
                    Some(i) => owe[i] = true,
                    None => *owe = [true; 3],
                }
            }
        });
    }
}

/// What one subscription received of one track.
#[derive(Default)]
struct Track {
    seq: SeqCounter,
    frames: FrameCounter,
    packets: u64,
    payload_bytes: u64,
    /// Packets by the layer of the frame they belong to (video).
    by_layer: [u64; 3],
    last: Option<Instant>,
    max_gap: Duration,
}

impl Track {
    fn restart(&mut self, now: Instant) {
        self.seq.numbers.restart();
        self.frames.restart();
        self.packets = 0;
        self.payload_bytes = 0;
        self.by_layer = [0; 3];
        self.max_gap = Duration::ZERO;
        // A stall that began before the window counts from its start.
        self.last = Some(now);
    }

    fn packet(&mut self, now: Instant, seq: u16, payload: &[u8]) {
        self.seq.record(seq);
        self.packets += 1;
        self.payload_bytes += payload.len() as u64;
        if let Some(last) = self.last {
            self.max_gap = self.max_gap.max(now.saturating_duration_since(last));
        }
        self.last = Some(now);
    }

    /// The longest gap so far, counting one still open at `now`.
    fn gap(&self, now: Instant) -> Duration {
        self.max_gap.max(self.last.map_or(Duration::ZERO, |l| now.saturating_duration_since(l)))
    }
}

/// One subscriber's subscription to one publisher.
pub struct Subscription {
    peer: Peer,
    /// The subscriber (a stage member), numbered across stages.
    member: usize,
    vp8: Vec<Pt>,
    opus: Vec<Pt>,
    video: Track,
    audio: Track,
}

impl Subscription {
    /// Subscriber `member`'s subscription on `peer` (in RTP mode, answered).
    pub fn new(peer: Peer, member: usize) -> Self {
        let (vp8, opus) = (pts(&peer.rtc, Codec::Vp8), pts(&peer.rtc, Codec::Opus));
        Self { peer, member, vp8, opus, video: Track::default(), audio: Track::default() }
    }

    fn step(&mut self, now: Instant, buf: &mut [u8]) {
        let Self { peer, vp8, opus, video, audio, .. } = self;
        peer.service(now, buf, false, |e| {
            let Event::RtpPacket(p) = e else { return };
            let (pt, seq, payload) = (p.header.payload_type, p.header.sequence_number, &p.payload[..]);
            if vp8.contains(&pt) {
                video.packet(now, seq, payload);
                if let Some((layer, n)) = video_frame_of(payload) {
                    video.frames.record(layer, n);
                }
                if let Some(layer) = video.frames.layer().filter(|l| *l < 3) {
                    video.by_layer[layer as usize] += 1;
                }
            } else if opus.contains(&pt) {
                audio.packet(now, seq, payload);
                if let Some(n) = audio_number_of(payload) {
                    audio.frames.record(0, n);
                }
            }
        });
    }
}

/// What the controller asks of the engine task.
pub enum Command {
    AddPublisher(Box<Publisher>),
    /// Stop the publisher added as the n-th (its session was deleted).
    Retire(usize),
    AddSubscription(Box<Subscription>),
    Status(oneshot::Sender<Status>),
    /// Start the measurement window.
    Restart(oneshot::Sender<()>),
    /// End it: what each subscription received.
    Collect(oneshot::Sender<Collected>),
}

#[derive(Debug, Clone, Copy)]
pub struct Status {
    pub publishers_connected: usize,
    pub subscriptions: usize,
    pub subscriptions_connected: usize,
    pub dead: usize,
}

pub struct SubscriptionResult {
    pub member: usize,
    pub connected: bool,
    pub dead: bool,
    pub rx_bytes: u64,
    pub send_failures: u64,
    /// (expected, received) RTP packets, video + audio.
    pub packets: (u64, u64),
    /// (expected, received) frames (video) and audio packets by number.
    pub video_frames: (u64, u64),
    pub audio_frames: (u64, u64),
    pub payload_bytes: u64,
    /// The layer most of its video packets in the window belonged to.
    pub layer: Option<usize>,
    pub switches: u64,
    pub max_gap: Duration,
}

pub struct Collected {
    pub subscriptions: Vec<SubscriptionResult>,
    /// Every local port of the generator's sockets.
    pub ports: HashSet<u16>,
    pub keyframe_requests: u64,
    pub publisher_media_bytes: u64,
    pub publisher_send_failures: u64,
}

#[derive(Default)]
pub struct Engine {
    publishers: Vec<Publisher>,
    subscriptions: Vec<Subscription>,
}

impl Engine {
    fn command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::AddPublisher(p) => self.publishers.push(*p),
            Command::Retire(n) => {
                if let Some(p) = self.publishers.get_mut(n) {
                    p.peer.dead = true;
                }
            }
            Command::AddSubscription(s) => self.subscriptions.push(*s),
            Command::Status(reply) => {
                let _ = reply.send(Status {
                    publishers_connected: self.publishers.iter().filter(|p| p.peer.connected && !p.peer.dead).count(),
                    subscriptions: self.subscriptions.len(),
                    subscriptions_connected: self.subscriptions.iter().filter(|s| s.peer.connected && !s.peer.dead).count(),
                    dead: self.subscriptions.iter().filter(|s| s.peer.dead).count(),
                });
            }
            Command::Restart(reply) => {
                for s in &mut self.subscriptions {
                    s.video.restart(now);
                    s.audio.restart(now);
                    s.peer.rx_bytes = 0;
                    s.peer.send_failures = 0;
                }
                for p in &mut self.publishers {
                    p.keyframe_requests = 0;
                    p.media_bytes = 0;
                    p.peer.send_failures = 0;
                }
                let _ = reply.send(());
            }
            Command::Collect(reply) => {
                let subscriptions = self
                    .subscriptions
                    .iter()
                    .map(|s| {
                        let (v, a) = (&s.video, &s.audio);
                        let top = (0..3).max_by_key(|i| v.by_layer[*i]).filter(|i| v.by_layer[*i] > 0);
                        SubscriptionResult {
                            member: s.member,
                            connected: s.peer.connected,
                            dead: s.peer.dead,
                            rx_bytes: s.peer.rx_bytes,
                            send_failures: s.peer.send_failures,
                            packets: (
                                v.seq.numbers.expected() + a.seq.numbers.expected(),
                                v.seq.numbers.received() + a.seq.numbers.received(),
                            ),
                            video_frames: (v.frames.expected(), v.frames.received()),
                            audio_frames: (a.frames.expected(), a.frames.received()),
                            payload_bytes: v.payload_bytes + a.payload_bytes,
                            layer: top,
                            switches: v.frames.switches(),
                            max_gap: v.gap(now),
                        }
                    })
                    .collect();
                let ports = self
                    .publishers
                    .iter()
                    .map(|p| &p.peer)
                    .chain(self.subscriptions.iter().map(|s| &s.peer))
                    .map(|p| p.addr.port())
                    .collect();
                let _ = reply.send(Collected {
                    subscriptions,
                    ports,
                    keyframe_requests: self.publishers.iter().map(|p| p.keyframe_requests).sum(),
                    publisher_media_bytes: self.publishers.iter().map(|p| p.media_bytes).sum(),
                    publisher_send_failures: self.publishers.iter().map(|p| p.peer.send_failures).sum(),
                });
            }
        }
    }

    /// Every peer on this one task: service them all, then wait until a
    /// socket has data, a frame or a str0m timeout is due, or [`MAX_WAIT`].
    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; 2048];
        loop {
            loop {
                match commands.try_recv() {
                    Ok(command) => self.command(command),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            let now = Instant::now();
            for p in &mut self.publishers {
                p.step(now, &mut buf);
            }
            for s in &mut self.subscriptions {
                s.step(now, &mut buf);
            }
            let peers = self.publishers.iter().map(|p| &p.peer).chain(self.subscriptions.iter().map(|s| &s.peer));
            let next = self
                .publishers
                .iter()
                .filter(|p| !p.peer.dead)
                .map(Publisher::next_due)
                .chain(peers.filter(|p| !p.dead).map(|p| p.deadline))
                .fold(now + MAX_WAIT, Instant::min);
            self.wait(next).await;
        }
    }

    /// Until `until` or any socket is readable. Registering with every
    /// socket is cheap (no system call); with many peers the loop is busy
    /// and finds data at once anyway.
    async fn wait(&self, until: Instant) {
        let sleep = tokio::time::sleep_until(until.into());
        tokio::pin!(sleep);
        std::future::poll_fn(|cx| {
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            let mut sockets =
                self.publishers.iter().map(|p| &p.peer.socket).chain(self.subscriptions.iter().map(|s| &s.peer.socket));
            if sockets.any(|s| s.poll_recv_ready(cx).is_ready()) {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
    }
}

/// The controller's way to the engine task.
#[derive(Clone)]
pub struct EngineHandle(pub mpsc::UnboundedSender<Command>);

impl EngineHandle {
    pub fn send(&self, command: Command) -> Result<()> {
        self.0.send(command).map_err(|_| anyhow!("the engine task stopped"))
    }

    pub async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.context("the engine task stopped")
    }

    pub async fn status(&self) -> Result<Status> {
        self.ask(Command::Status).await
    }
}

/// The payload types the peer negotiated for `codec`.
fn pts(rtc: &Rtc, codec: Codec) -> Vec<Pt> {
    rtc.codec_config().params().iter().filter(|p| p.spec().codec == codec).map(|p| p.pt()).collect()
}
