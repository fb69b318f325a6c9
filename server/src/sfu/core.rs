//! The sans-IO SFU core: one str0m [`Rtc`] per WHIP publish or WHEP-style
//! subscribe session, all multiplexed over one UDP address.
//!
//! Nothing here touches a socket or the clock. The driver feeds packets
//! ([`Sfu::handle_receive`]) and timeouts ([`Sfu::handle_timeout`]) and drains
//! [`Sfu::poll_output`] until it returns [`SfuOutput::Timeout`]. Media frames
//! a publisher sends are written to each of its subscribers (payload types
//! mapped with `match_params`); keyframe requests travel the other way.

mod simulcast;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use stagecast_protocol::{ParticipantId, StageId, MAX_PUBLISHERS_PER_STAGE};
use str0m::config::DtlsCert;
use str0m::bwe::{Bitrate, BweKind};
use str0m::media::{Direction, MediaKind, Mid, Rids};
use str0m::net::{DatagramRecv, Protocol, Receive, TcpType};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use super::layers::{Layer, Selector, Start};
use super::{SessionId, SfuError, SfuEvent};

pub use super::layers::{LayerInfo, LayerReport, LayerRequest, Start as LayerStart};

/// A session that has not completed ICE + DTLS within this time is dropped.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A closing session that has not drained its goodbye packets by then is dropped.
const CLOSE_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// A subscriber's first bandwidth estimate when it starts at the lowest layer.
const INITIAL_ESTIMATE_KBPS: u64 = 300;
/// A subscriber's bandwidth estimate before it is measured: low for one
/// that starts at the lowest layer, enough for the top for one that starts there.
pub(super) fn initial_estimate(start: Start) -> Bitrate {
    match start {
        Start::Lowest => Bitrate::kbps(INITIAL_ESTIMATE_KBPS),
        Start::Highest => Bitrate::mbps(3),
    }
}

/// How often a subscriber's egress stats (loss from its receiver reports) come.
const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// When no session wants a timeout, wake up this often anyway.
const IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// A packet to send from the media socket (`Udp`) or on the ICE-TCP
/// connection from `destination` (`Tcp`).
#[derive(Debug)]
pub struct Transmit {
    pub proto: Protocol,
    pub destination: SocketAddr,
    pub bytes: Vec<u8>,
}

/// What [`Sfu::poll_output`] returns.
#[derive(Debug)]
pub enum SfuOutput {
    Transmit(Transmit),
    Event(SfuEvent),
    /// Nothing more to do until this time (or new input).
    Timeout(Instant),
}

/// One incoming media track of a publisher.
#[derive(Debug)]
struct TrackIn {
    mid: Mid,
    kind: MediaKind,
    /// Video: the layers received, lowest quality first (one, with rid
    /// `None`, without simulcast). Audio: none.
    layers: Vec<Layer>,
    /// The rids last announced as wanted ([`SfuEvent::LayersWanted`]).
    wanted: Vec<String>,
}

// One per session, beside its `Rtc` (kilobytes): the subscriber's inline
// selector costs nothing worth a box and a pointer chase per frame.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Role {
    Publisher {
        tracks: Vec<TrackIn>,
        subscribers: Vec<u64>,
        /// Whether `PublishStarted` was emitted.
        announced: bool,
    },
    Subscriber {
        publisher: u64,
        audio: Option<Mid>,
        video: Option<Mid>,
        /// Which of the publisher's video layers this subscriber gets.
        selector: Selector,
        /// The `desired` and `minimum` bitrates last given to str0m's bandwidth estimator.
        bwe_desired: (u64, u64),
        /// Its estimator was restarted at the first video frame (see `forward`).
        bwe_primed: bool,
    },
}

struct Session {
    id: SessionId,
    stage: StageId,
    participant: ParticipantId,
    role: Role,
    rtc: Rtc,
    created: Instant,
    connected: bool,
    /// Detached from its stage and closing; removed once str0m is done.
    ended_at: Option<Instant>,
    /// The earliest timer entry this session has in [`Sfu::timers`].
    scheduled: Option<Instant>,
    queued: bool,
    /// Remote addresses seen, to clean the demux cache on removal.
    sources: Vec<(Protocol, SocketAddr)>,
}

/// The SFU state for every stage on this node.
pub struct Sfu {
    candidate: SocketAddr,
    /// Where the passive ICE-TCP candidate listens, if it is offered.
    tcp_candidate: Option<SocketAddr>,
    cert: Option<DtlsCert>,
    sessions: HashMap<u64, Session>,
    by_id: HashMap<SessionId, u64>,
    /// Demux cache: the session that last accepted traffic from an address.
    by_source: HashMap<(Protocol, SocketAddr), u64>,
    next_key: u64,
    /// Sessions with input since they were last drained.
    queue: Vec<u64>,
    /// When sessions want to be woken (str0m timeouts, connect and close
    /// deadlines). Entries may be stale; waking a session early is harmless.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    due: Vec<u64>,
    out: VecDeque<SfuOutput>,
    last_now: Instant,
    /// Running totals for `/metrics`: plain integers, read through [`Sfu::stats`].
    stats: SfuStats,
}

/// What the SFU has done since it started, plus its open sessions (`/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SfuStats {
    /// Media sessions (peer connections) open now, publish and subscribe.
    pub publish_sessions: u64,
    pub subscribe_sessions: u64,
    /// Media frames written to subscribers, and their payload bytes.
    pub forwarded_frames: u64,
    pub forwarded_bytes: u64,
    /// Datagrams (RTP, RTCP, STUN, DTLS) handed to the sockets, and their bytes.
    pub sent_packets: u64,
    pub sent_bytes: u64,
}

impl std::iter::Sum for SfuStats {
    /// Every worker's counters together.
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), |sum, s| sum + s)
    }
}

impl std::ops::Add for SfuStats {
    type Output = Self;
    /// Two cores' counters together.
    fn add(self, o: Self) -> Self {
        Self {
            publish_sessions: self.publish_sessions + o.publish_sessions,
            subscribe_sessions: self.subscribe_sessions + o.subscribe_sessions,
            forwarded_frames: self.forwarded_frames + o.forwarded_frames,
            forwarded_bytes: self.forwarded_bytes + o.forwarded_bytes,
            sent_packets: self.sent_packets + o.sent_packets,
            sent_bytes: self.sent_bytes + o.sent_bytes,
        }
    }
}

impl Sfu {
    /// An SFU whose sessions advertise one ICE host candidate, `candidate`
    /// (the public address of the media socket).
    pub fn new(candidate: SocketAddr, now: Instant) -> Self {
        // One certificate for all sessions: generating a key per session
        // would cost the media task milliseconds per join.
        let cert = str0m::crypto::from_feature_flags().dtls_provider.generate_certificate();
        Self::with_cert(candidate, cert, now)
    }

    /// [`Sfu::new`] with a DTLS certificate shared with other cores (`None`:
    /// str0m makes one per session).
    pub fn with_cert(candidate: SocketAddr, cert: Option<DtlsCert>, now: Instant) -> Self {
        Self {
            candidate,
            tcp_candidate: None,
            cert,
            sessions: HashMap::new(),
            by_id: HashMap::new(),
            by_source: HashMap::new(),
            next_key: 1,
            queue: Vec::new(),
            timers: BinaryHeap::new(),
            due: Vec::new(),
            out: VecDeque::new(),
            last_now: now,
            stats: SfuStats::default(),
        }
    }

    /// Also advertise a passive TCP host candidate at `addr` (RFC 6544,
    /// framed per RFC 4571 by the driver) in every answer, for clients
    /// whose UDP is blocked. It ranks below the UDP one.
    pub fn with_tcp_candidate(mut self, addr: SocketAddr) -> Self {
        self.tcp_candidate = Some(addr);
        self
    }

    /// The address put in every answer's candidate.
    pub fn candidate(&self) -> SocketAddr {
        self.candidate
    }

    /// Live (not closing) sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.values().filter(|s| s.ended_at.is_none()).count()
    }

    /// Participants with a live publish session in `stage`.
    pub fn publishers(&self, stage: &StageId) -> Vec<ParticipantId> {
        let mut out: Vec<ParticipantId> = self
            .sessions
            .values()
            .filter(|s| s.ended_at.is_none() && &s.stage == stage && matches!(s.role, Role::Publisher { .. }))
            .map(|s| s.participant.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether `id` is a live session.
    pub fn has_session(&self, id: &SessionId) -> bool {
        self.by_id.contains_key(id)
    }

    /// Who owns a live session.
    pub fn session_owner(&self, id: &SessionId) -> Option<(&StageId, &ParticipantId)> {
        let key = self.by_id.get(id)?;
        self.sessions.get(key).map(|s| (&s.stage, &s.participant))
    }

    fn new_rtc(&self, now: Instant, bwe: Option<Bitrate>) -> Rtc {
        let mut config = Rtc::builder()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_h264(true);
        if let Some(cert) = &self.cert {
            config = config.set_dtls_cert(cert.clone());
        }
        if bwe.is_some() {
            // Subscribers: a TWCC estimate of their downlink picks their
            // layers, and their receiver reports' loss (every second) can
            // switch them down sooner.
            config = config.enable_bwe(bwe).set_stats_interval(Some(STATS_INTERVAL));
        }
        let mut rtc = config.build(now);
        if let Ok(candidate) = Candidate::host(self.candidate, "udp") {
            rtc.add_local_candidate(candidate);
        }
        if let Some(addr) = self.tcp_candidate {
            if let Ok(candidate) = Candidate::builder().tcp().host(addr).tcptype(TcpType::Passive).build() {
                rtc.add_local_candidate(candidate);
            }
        }
        rtc
    }

    fn accept(&self, rtc: &mut Rtc, offer_sdp: &str) -> Result<String, SfuError> {
        // A panic in the parser costs this request, not the SFU task (the Rtc is discarded).
        crate::sdp::accept_offer(rtc, offer_sdp).map_err(|e| SfuError::InvalidSdp(e.to_string()))
    }

    fn insert(&mut self, stage: StageId, participant: ParticipantId, role: Role, rtc: Rtc, now: Instant) -> (u64, SessionId) {
        let key = self.next_key;
        self.next_key += 1;
        let id = SessionId::random();
        self.by_id.insert(id.clone(), key);
        self.sessions.insert(
            key,
            Session {
                id: id.clone(),
                stage,
                participant,
                role,
                rtc,
                created: now,
                connected: false,
                ended_at: None,
                scheduled: None,
                queued: false,
                sources: Vec::new(),
            },
        );
        self.timers.push(Reverse((now + CONNECT_TIMEOUT, key)));
        self.enqueue(key);
        (key, id)
    }

    /// Accept a WHIP offer from `participant`: a new publish session. A
    /// participant's earlier publish session is replaced. Refused with
    /// [`SfuError::StageAtCapacity`] when the stage already has
    /// [`MAX_PUBLISHERS_PER_STAGE`] other publishers.
    pub fn publish(
        &mut self,
        stage: &StageId,
        participant: &ParticipantId,
        offer_sdp: &str,
        now: Instant,
    ) -> Result<(SessionId, String), SfuError> {
        self.last_now = self.last_now.max(now);
        let others = self.publishers(stage).into_iter().filter(|p| p != participant).count();
        if others >= MAX_PUBLISHERS_PER_STAGE {
            return Err(SfuError::StageAtCapacity(stage.clone()));
        }
        let mut rtc = self.new_rtc(now, None);
        let answer = self.accept(&mut rtc, offer_sdp)?;

        let previous = self.live_sessions(|s| {
            &s.stage == stage && &s.participant == participant && matches!(s.role, Role::Publisher { .. })
        });
        self.end_sessions(previous, "replaced by a new publish session", now);

        let role = Role::Publisher { tracks: Vec::new(), subscribers: Vec::new(), announced: false };
        let (key, id) = self.insert(stage.clone(), participant.clone(), role, rtc, now);
        self.learn_media(key, &answer);
        tracing::info!(stage = %stage, participant = %participant, session = %id, "publish session created");
        Ok((id, answer))
    }

    /// Accept a WHEP-style offer from `subscriber` for `publisher`'s media.
    /// An earlier subscription of the same pair is replaced. Video starts at
    /// the publisher's lowest layer ([`Sfu::subscribe_with`] to choose).
    pub fn subscribe(
        &mut self,
        stage: &StageId,
        subscriber: &ParticipantId,
        publisher: &ParticipantId,
        offer_sdp: &str,
        now: Instant,
    ) -> Result<(SessionId, String), SfuError> {
        self.subscribe_with(stage, subscriber, publisher, offer_sdp, LayerStart::Lowest, None, now)
    }

    /// [`Sfu::subscribe`], starting video at the lowest or highest layer
    /// until the subscriber's bandwidth estimate takes over, capped at layer
    /// `cap` (see [`Sfu::set_layer`]) if given.
    #[allow(clippy::too_many_arguments)]
    pub fn subscribe_with(
        &mut self,
        stage: &StageId,
        subscriber: &ParticipantId,
        publisher: &ParticipantId,
        offer_sdp: &str,
        start: Start,
        cap: Option<&str>,
        now: Instant,
    ) -> Result<(SessionId, String), SfuError> {
        self.last_now = self.last_now.max(now);
        let publisher_key = self
            .live_sessions(|s| {
                &s.stage == stage && &s.participant == publisher && matches!(s.role, Role::Publisher { .. })
            })
            .into_iter()
            .max()
            .ok_or_else(|| SfuError::PublisherNotFound(publisher.clone()))?;
        let cap = cap.map(|rid| self.layer_cap(publisher_key, rid)).transpose()?;
        let mut rtc = self.new_rtc(now, Some(initial_estimate(start)));
        let answer = self.accept(&mut rtc, offer_sdp)?;

        let previous = self.live_sessions(|s| {
            &s.stage == stage
                && &s.participant == subscriber
                && matches!(s.role, Role::Subscriber { publisher, .. } if publisher == publisher_key)
        });
        self.end_sessions(previous, "replaced by a new subscription", now);

        let mut selector = Selector::new(start);
        selector.cap = cap;
        let role = Role::Subscriber { publisher: publisher_key, audio: None, video: None, selector, bwe_desired: (0, 0), bwe_primed: false };
        let (key, id) = self.insert(stage.clone(), subscriber.clone(), role, rtc, now);
        self.learn_media(key, &answer);
        if let Some(Session { role: Role::Publisher { subscribers, .. }, .. }) = self.sessions.get_mut(&publisher_key) {
            subscribers.push(key);
        }
        tracing::info!(stage = %stage, subscriber = %subscriber, publisher = %publisher, session = %id, "subscribe session created");
        Ok((id, answer))
    }

    /// End a session (the WHIP `DELETE`). With `owner`, only that
    /// participant's session is closed; another's reads as not found.
    pub fn close_session(&mut self, id: &SessionId, owner: Option<&ParticipantId>, now: Instant) -> Result<(), SfuError> {
        let key = *self.by_id.get(id).ok_or_else(|| SfuError::SessionNotFound(id.clone()))?;
        let session = self.sessions.get(&key).ok_or_else(|| SfuError::SessionNotFound(id.clone()))?;
        if owner.is_some_and(|o| o != &session.participant) {
            return Err(SfuError::SessionNotFound(id.clone()));
        }
        self.end_session(key, "closed by the client", true, now);
        Ok(())
    }

    /// End every session of one participant (left the stage or was removed).
    pub fn remove_participant(&mut self, stage: &StageId, participant: &ParticipantId, now: Instant) {
        let keys = self.live_sessions(|s| &s.stage == stage && &s.participant == participant);
        self.end_sessions(keys, "participant left the stage", now);
    }

    /// End every session of a stage.
    pub fn remove_stage(&mut self, stage: &StageId, now: Instant) {
        let keys = self.live_sessions(|s| &s.stage == stage);
        self.end_sessions(keys, "stage removed", now);
    }

    /// A datagram arrived on the media UDP socket: [`Sfu::receive`] over UDP.
    pub fn handle_receive(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, bytes: &[u8]) {
        self.receive(now, Protocol::Udp, source, destination, bytes);
    }

    /// A packet arrived over `proto` (a UDP datagram, or an RFC 4571 frame
    /// of the ICE-TCP connection from `source`). Traffic that no session
    /// accepts is dropped silently (stray or late packets are normal);
    /// returns whether a session took it.
    pub fn receive(&mut self, now: Instant, proto: Protocol, source: SocketAddr, destination: SocketAddr, bytes: &[u8]) -> bool {
        self.last_now = self.last_now.max(now);
        let Ok(contents) = DatagramRecv::try_from(bytes) else {
            return false;
        };
        let input = Input::Receive(now, Receive { proto, source, destination, contents });

        let cached = self
            .by_source
            .get(&(proto, source))
            .copied()
            .filter(|k| self.sessions.get(k).is_some_and(|s| s.rtc.is_alive() && s.rtc.accepts(&input)));
        let key = match cached {
            Some(k) => k,
            None => {
                let Some(k) = self
                    .sessions
                    .iter()
                    .find(|(_, s)| s.rtc.is_alive() && s.rtc.accepts(&input))
                    .map(|(k, _)| *k)
                else {
                    return false;
                };
                self.by_source.insert((proto, source), k);
                if let Some(s) = self.sessions.get_mut(&k) {
                    if !s.sources.contains(&(proto, source)) {
                        s.sources.push((proto, source));
                    }
                }
                k
            }
        };

        let Some(session) = self.sessions.get_mut(&key) else {
            return false;
        };
        // Packets are untrusted: a panic deep in a parser drops this session only.
        match std::panic::catch_unwind(AssertUnwindSafe(|| session.rtc.handle_input(input))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let reason = format!("bad input: {e}");
                self.fail_session(key, &reason, now);
            }
            Err(_) => self.fail_session(key, "panic while handling a packet", now),
        }
        self.enqueue(key);
        true
    }

    /// Time has advanced to `now`: drive every session whose timer is due,
    /// and drop sessions that never connected or never finished closing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        let mut due = std::mem::take(&mut self.due);
        while let Some(Reverse((t, key))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            if let Some(s) = self.sessions.get_mut(&key) {
                if s.scheduled.is_some_and(|sch| sch <= now) {
                    s.scheduled = None;
                }
                due.push(key);
            }
        }
        due.sort_unstable();
        due.dedup();
        for &key in &due {
            let Some(s) = self.sessions.get_mut(&key) else { continue };
            if let Some(ended) = s.ended_at {
                if now >= ended + CLOSE_DRAIN_TIMEOUT {
                    s.rtc.disconnect();
                }
            } else if !s.connected && now >= s.created + CONNECT_TIMEOUT {
                self.fail_session(key, "ICE/DTLS did not connect in time", now);
                continue;
            }
            // Always re-drain: that re-arms the session's timer. A panic in
            // str0m's timers costs this session only.
            match std::panic::catch_unwind(AssertUnwindSafe(|| s.rtc.handle_input(Input::Timeout(now)))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let reason = format!("timeout handling failed: {e}");
                    self.fail_session(key, &reason, now);
                    continue;
                }
                Err(_) => {
                    self.fail_session(key, "panic while handling a timeout", now);
                    continue;
                }
            }
            self.enqueue(key);
        }
        due.clear();
        self.due = due;
    }

    /// The next thing to do: a datagram to send, an event for the stage hub,
    /// or the time at which [`Sfu::handle_timeout`] is due.
    pub fn poll_output(&mut self) -> SfuOutput {
        loop {
            if let Some(o) = self.out.pop_front() {
                return o;
            }
            let Some(key) = self.queue.pop() else {
                return SfuOutput::Timeout(self.next_timeout());
            };
            self.drain(key);
        }
    }

    fn next_timeout(&self) -> Instant {
        let idle = self.last_now + IDLE_TIMEOUT;
        self.timers.peek().map_or(idle, |Reverse((t, _))| (*t).min(idle))
    }

    fn enqueue(&mut self, key: u64) {
        if let Some(s) = self.sessions.get_mut(&key) {
            if !s.queued {
                s.queued = true;
                self.queue.push(key);
            }
        }
    }

    /// Poll one session's `Rtc` until it returns a timeout, handling events.
    fn drain(&mut self, key: u64) {
        loop {
            let Some(s) = self.sessions.get_mut(&key) else {
                return;
            };
            s.queued = false;
            if !s.rtc.is_alive() {
                self.remove(key);
                return;
            }
            let Ok(polled) = std::panic::catch_unwind(AssertUnwindSafe(|| s.rtc.poll_output())) else {
                self.fail_session(key, "panic while polling", self.last_now);
                continue;
            };
            match polled {
                Ok(Output::Transmit(t)) => {
                    self.stats.sent_packets += 1;
                    self.stats.sent_bytes += t.contents.len() as u64;
                    self.out.push_back(SfuOutput::Transmit(Transmit {
                        proto: t.proto,
                        destination: t.destination,
                        bytes: t.contents.into(),
                    }));
                }
                Ok(Output::Timeout(t)) => {
                    // A later time needs no entry: the earlier one wakes the
                    // session, and draining it then schedules the later one.
                    if s.scheduled.is_none_or(|sch| t < sch) {
                        s.scheduled = Some(t);
                        self.timers.push(Reverse((t, key)));
                    }
                    return;
                }
                Ok(Output::Event(e)) => self.handle_event(key, e),
                Err(e) => {
                    let reason = format!("poll failed: {e}");
                    self.fail_session(key, &reason, self.last_now);
                }
            }
        }
    }

    fn handle_event(&mut self, key: u64, event: Event) {
        match event {
            Event::MediaData(data) => self.forward(key, &data),
            Event::KeyframeRequest(req) => self.relay_keyframe_request(key, req),
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. } | BweKind::Remb { estimate, .. }) => {
                if let Some(Session { role: Role::Subscriber { selector, .. }, .. }) = self.sessions.get_mut(&key) {
                    tracing::trace!(session = key, estimate = estimate.as_u64(), "bandwidth estimate");
                    selector.estimate = Some(estimate.as_u64());
                }
            }
            Event::MediaEgressStats(stats) => self.on_egress_stats(key, &stats),
            Event::Connected => self.on_connected(key),
            Event::MediaAdded(added) => self.on_media_added(key, added.mid, added.kind, added.direction),
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.fail_session(key, "ICE disconnected (peer went silent)", self.last_now);
            }
            Event::Closed => {
                self.end_session(key, "peer closed the connection", false, self.last_now);
            }
            _ => {}
        }
    }

    fn on_connected(&mut self, key: u64) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        s.connected = true;
        tracing::info!(session = %s.id, participant = %s.participant, "media session connected");
        match &mut s.role {
            Role::Publisher { tracks, announced, .. } => {
                if s.ended_at.is_none() && !*announced {
                    *announced = true;
                    let mut kinds: Vec<String> = Vec::with_capacity(2);
                    for kind in [MediaKind::Audio, MediaKind::Video] {
                        if tracks.iter().any(|t| t.kind == kind) {
                            kinds.push(kind_name(kind).to_owned());
                        }
                    }
                    self.out.push_back(SfuOutput::Event(SfuEvent::PublishStarted {
                        stage: s.stage.clone(),
                        participant: s.participant.clone(),
                        session: s.id.clone(),
                        kinds,
                    }));
                }
            }
            Role::Subscriber { .. } => self.subscriber_connected(key),
        }
    }

    /// Learn a new session's m-lines from our own answer, so forwarding and
    /// `PublishStarted` never wait on (or race with) `MediaAdded` events.
    fn learn_media(&mut self, key: u64, answer: &str) {
        for (mid, kind, direction) in answer_media(answer) {
            self.on_media_added(key, mid, kind, direction);
        }
    }

    fn on_media_added(&mut self, key: u64, mid: Mid, kind: MediaKind, direction: Direction) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        match &mut s.role {
            Role::Publisher { tracks, .. } => {
                if matches!(direction, Direction::RecvOnly | Direction::SendRecv) && !tracks.iter().any(|t| t.mid == mid) {
                    let mut layers = Vec::new();
                    if kind == MediaKind::Video {
                        match s.rtc.media(mid).map(|m| m.rids_rx()) {
                            Some(Rids::Specific(list)) => layers.extend(list.iter().map(|r| Layer::new(Some(*r)))),
                            _ => layers.push(Layer::new(None)),
                        }
                        super::layers::sort_layers(&mut layers);
                    }
                    let wanted = layers.iter().filter_map(|l| l.name().map(str::to_owned)).collect();
                    tracks.push(TrackIn { mid, kind, layers, wanted });
                }
            }
            Role::Subscriber { audio, video, .. } => {
                if matches!(direction, Direction::SendOnly | Direction::SendRecv) {
                    let slot = if kind == MediaKind::Audio { audio } else { video };
                    if slot.is_none() {
                        *slot = Some(mid);
                    }
                }
            }
        }
    }

    /// The running totals, with the sessions open now (counted on call: `/metrics` scrapes are rare).
    pub fn stats(&self) -> SfuStats {
        let mut stats = self.stats;
        for s in self.sessions.values().filter(|s| s.ended_at.is_none()) {
            match s.role {
                Role::Publisher { .. } => stats.publish_sessions += 1,
                Role::Subscriber { .. } => stats.subscribe_sessions += 1,
            }
        }
        stats
    }

    /// Drop a session hard (no goodbye): it failed or went silent.
    fn fail_session(&mut self, key: u64, reason: &str, now: Instant) {
        self.end_session(key, reason, false, now);
        if let Some(s) = self.sessions.get_mut(&key) {
            s.rtc.disconnect();
        }
        self.enqueue(key);
    }

    /// Detach a session from its stage (events, subscriber links) and start
    /// closing it; `graceful` sends RTCP BYE and DTLS close_notify so the
    /// browser sees the end at once. The entry stays until str0m has drained.
    /// The keys of the sessions that are not ending and satisfy `pred`.
    fn live_sessions(&self, pred: impl Fn(&Session) -> bool) -> Vec<u64> {
        self.sessions.iter().filter(|(_, s)| s.ended_at.is_none() && pred(s)).map(|(k, _)| *k).collect()
    }

    /// End each of `keys` gracefully.
    fn end_sessions(&mut self, keys: Vec<u64>, reason: &str, now: Instant) {
        for key in keys {
            self.end_session(key, reason, true, now);
        }
    }

    fn end_session(&mut self, key: u64, reason: &str, graceful: bool, now: Instant) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        if s.ended_at.is_some() {
            return;
        }
        s.ended_at = Some(now);
        self.timers.push(Reverse((now + CLOSE_DRAIN_TIMEOUT, key)));
        self.by_id.remove(&s.id);
        tracing::info!(session = %s.id, stage = %s.stage, participant = %s.participant, reason, "media session ended");
        if graceful && s.rtc.close().is_err() {
            s.rtc.disconnect();
        }
        let mut orphans: Vec<u64> = Vec::new();
        let mut unlink: Option<u64> = None;
        match &mut s.role {
            Role::Publisher { subscribers, .. } => {
                orphans = std::mem::take(subscribers);
                // Owed whether or not it ever started: a WHIP-only member
                // whose session never connects leaves with it.
                self.out.push_back(SfuOutput::Event(SfuEvent::PublishStopped {
                    stage: s.stage.clone(),
                    participant: s.participant.clone(),
                    session: s.id.clone(),
                }));
            }
            Role::Subscriber { publisher, .. } => unlink = Some(*publisher),
        }
        self.enqueue(key);
        if let Some(pk) = unlink {
            if let Some(Session { role: Role::Publisher { subscribers, .. }, .. }) = self.sessions.get_mut(&pk) {
                subscribers.retain(|k| *k != key);
            }
            // Its layer may now be wanted by no one.
            self.update_wanted(pk);
        }
        for sub in orphans {
            self.end_session(sub, "publisher left", true, now);
        }
    }

    fn remove(&mut self, key: u64) {
        let now = self.last_now;
        // Make sure the stage hears about it even when str0m closed first.
        self.end_session(key, "connection closed", false, now);
        if let Some(s) = self.sessions.remove(&key) {
            for source in &s.sources {
                if self.by_source.get(source) == Some(&key) {
                    self.by_source.remove(source);
                }
            }
        }
    }
}

/// The (mid, kind, our direction) of each active audio/video m-line of an
/// SDP we generated.
fn answer_media(sdp: &str) -> Vec<(Mid, MediaKind, Direction)> {
    let mut out = Vec::new();
    let mut current: Option<(MediaKind, Option<Mid>, Option<Direction>)> = None;
    let flush = |m: Option<(MediaKind, Option<Mid>, Option<Direction>)>, out: &mut Vec<_>| {
        if let Some((kind, Some(mid), Some(direction))) = m {
            out.push((mid, kind, direction));
        }
    };
    for line in sdp.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix("m=") {
            flush(current.take(), &mut out);
            let port_zero = rest.split_whitespace().nth(1) == Some("0");
            current = match rest.split_whitespace().next() {
                Some("audio") if !port_zero => Some((MediaKind::Audio, None, None)),
                Some("video") if !port_zero => Some((MediaKind::Video, None, None)),
                _ => None,
            };
        } else if let Some((_, mid, direction)) = current.as_mut() {
            if let Some(m) = line.strip_prefix("a=mid:") {
                *mid = Some(Mid::from(m));
            } else {
                match line {
                    "a=sendonly" => *direction = Some(Direction::SendOnly),
                    "a=recvonly" => *direction = Some(Direction::RecvOnly),
                    "a=sendrecv" => *direction = Some(Direction::SendRecv),
                    "a=inactive" => *direction = Some(Direction::Inactive),
                    _ => {}
                }
            }
        }
    }
    flush(current.take(), &mut out);
    out
}

/// "audio" / "video", as `ParticipantState::tracks` spells them.
pub fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}
