//! The tokio driver. The SFU's sessions are spread over worker tasks, each
//! owning one sans-IO [`Sfu`] core with the sessions of its stages: a stage
//! stays on one worker ([`Routes::worker_of`]), so its publishers forward to
//! its subscribers without crossing tasks, and tokio's multi-thread runtime
//! runs the workers on as many cores as there are workers.
//!
//! One dispatcher task owns the media port: it reads the UDP socket and the
//! frames of the ICE-TCP connections (`tcp.rs`) and hands each packet to
//! the worker whose session takes it ([`Routes`]). Workers send UDP straight
//! from the shared socket; their ICE-TCP packets go back through the
//! dispatcher, which owns the connections. Every queue between tasks is
//! bounded and full means dropped (media tolerates loss; no task waits on
//! a client), except commands, which come from HTTP handlers one request
//! at a time. Requests from HTTP handlers and the stage hub go to the
//! stage's worker, or, naming only a session, to every worker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stagecast_protocol::{ParticipantId, StageId};
use str0m::net::Protocol;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::core::{LayerReport, LayerRequest, LayerStart, Sfu, SfuOutput, SfuStats, Transmit};
use super::routes::{Outcome, Route, Routes};
use super::tcp::{self, Link, LinkState, TcpEvent};
use super::{SessionId, SfuError, SfuEvent};
use crate::serve::watch::LogThrottle;

/// Packets queued from the dispatcher to one worker; past this, dropped.
const PACKET_QUEUE: usize = 2048;
/// Verdicts and ICE-TCP packets queued from the workers to the dispatcher.
const REPORT_QUEUE: usize = 4096;
/// How often the dispatcher forgets routes no packet used.
const EXPIRE_EVERY: Duration = Duration::from_secs(10);

type Reply<T> = oneshot::Sender<Result<T, SfuError>>;

enum Command {
    Publish {
        stage: StageId,
        participant: ParticipantId,
        offer: String,
        reply: Reply<(SessionId, String)>,
    },
    Subscribe {
        stage: StageId,
        subscriber: ParticipantId,
        publisher: ParticipantId,
        offer: String,
        start: LayerStart,
        cap: Option<String>,
        reply: Reply<(SessionId, String)>,
    },
    SetLayer {
        session: SessionId,
        owner: ParticipantId,
        req: LayerRequest,
        reply: Reply<()>,
    },
    Layers {
        session: SessionId,
        owner: ParticipantId,
        reply: Reply<LayerReport>,
    },
    Close {
        session: SessionId,
        owner: Option<ParticipantId>,
        reply: Reply<()>,
    },
    Owner {
        session: SessionId,
        reply: oneshot::Sender<Option<(StageId, ParticipantId)>>,
    },
    RemoveParticipant {
        stage: StageId,
        participant: ParticipantId,
    },
    RemoveStage {
        stage: StageId,
    },
    Stats {
        reply: oneshot::Sender<SfuStats>,
    },
}

/// A packet for a worker.
struct Packet {
    proto: Protocol,
    source: SocketAddr,
    bytes: Vec<u8>,
    /// Sent to find its owner (every worker gets it), or an ICE-TCP
    /// connection's first traffic: the worker says whether it took it.
    probe: bool,
}

/// From a worker to the dispatcher.
enum Report {
    Verdict { proto: Protocol, source: SocketAddr, worker: usize, accepted: bool, probe: bool },
    Tcp(Transmit),
}

/// The handle HTTP handlers and the stage hub use to reach the SFU workers.
/// Cheap to clone. When every handle is dropped the tasks end.
#[derive(Clone)]
pub struct SfuHandle {
    workers: Arc<[mpsc::UnboundedSender<Command>]>,
}

impl SfuHandle {
    /// Start the SFU on the current tokio runtime, one worker, UDP only.
    /// `candidate` is the address advertised to clients (the socket's public
    /// address).
    pub fn start(udp: UdpSocket, candidate: SocketAddr) -> (Self, mpsc::UnboundedReceiver<SfuEvent>) {
        // No connection ever arrives on this channel; its sender is dropped.
        let (_, tcp_rx) = mpsc::channel(1);
        Self::spawn(udp, tcp_rx, candidate, None, 1)
    }

    /// [`SfuHandle::start`] with `workers` workers (at least one) plus ICE
    /// over TCP: `candidate` is also advertised as a passive TCP candidate,
    /// and `tcp` (bound to the same port as `udp`) takes at most `max_tcp`
    /// connections.
    pub fn start_with_tcp(
        udp: UdpSocket,
        tcp: TcpListener,
        candidate: SocketAddr,
        max_tcp: usize,
        workers: usize,
    ) -> (Self, mpsc::UnboundedReceiver<SfuEvent>) {
        let (tcp_tx, tcp_rx) = mpsc::channel(tcp::IN_QUEUE);
        tokio::spawn(tcp::accept_loop(tcp, tcp_tx, max_tcp));
        Self::spawn(udp, tcp_rx, candidate, Some(candidate), workers)
    }

    fn spawn(
        udp: UdpSocket,
        tcp_rx: mpsc::Receiver<TcpEvent>,
        candidate: SocketAddr,
        tcp_candidate: Option<SocketAddr>,
        workers: usize,
    ) -> (Self, mpsc::UnboundedReceiver<SfuEvent>) {
        let count = workers.max(1);
        let udp = Arc::new(udp);
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let (report_tx, report_rx) = mpsc::channel(REPORT_QUEUE);
        let mut commands = Vec::with_capacity(count);
        let mut packets = Vec::with_capacity(count);
        // One certificate for all sessions of all workers.
        let cert = str0m::crypto::from_feature_flags().dtls_provider.generate_certificate();
        for index in 0..count {
            let (command_tx, command_rx) = mpsc::unbounded_channel();
            let (packet_tx, packet_rx) = mpsc::channel(PACKET_QUEUE);
            let mut sfu = Sfu::with_cert(candidate, cert.clone(), Instant::now());
            if let Some(tcp) = tcp_candidate {
                sfu = sfu.with_tcp_candidate(tcp);
            }
            let worker = Worker {
                index,
                count,
                sfu,
                udp: udp.clone(),
                candidate,
                tcp_destination: tcp_candidate.unwrap_or(candidate),
                reports: report_tx.clone(),
                events: event_tx.clone(),
            };
            tokio::spawn(worker.run(command_rx, packet_rx));
            commands.push(command_tx);
            packets.push(packet_tx);
        }
        drop(report_tx);
        tracing::info!(%candidate, tcp = tcp_candidate.is_some(), workers = count, "SFU running");
        tokio::spawn(dispatch(udp, tcp_rx, packets, report_rx));
        (Self { workers: commands.into() }, event_rx)
    }

    /// How many workers share the sessions.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// A handle that does not keep the SFU tasks alive.
    pub fn downgrade(&self) -> WeakSfuHandle {
        WeakSfuHandle { workers: self.workers.iter().map(mpsc::UnboundedSender::downgrade).collect() }
    }

    fn worker(&self, stage: &StageId) -> &mpsc::UnboundedSender<Command> {
        let index = Routes::worker_of(&stage.0, self.workers.len());
        // `worker_of` is below the count; the first worker is there regardless.
        self.workers.get(index).or_else(|| self.workers.first()).expect("invariant: at least one worker")
    }

    async fn ask<T>(to: &mpsc::UnboundedSender<Command>, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, SfuError> {
        let (tx, rx) = oneshot::channel();
        to.send(make(tx)).map_err(|_| SfuError::Unavailable)?;
        rx.await.map_err(|_| SfuError::Unavailable)?
    }

    /// Ask every worker about a session only one of them holds: the first
    /// answer that is not "no such session" (or that one if all say so).
    async fn ask_session<T>(&self, session: &SessionId, make: impl Fn(Reply<T>) -> Command) -> Result<T, SfuError> {
        let mut answer = Err(SfuError::SessionNotFound(session.clone()));
        for worker in self.workers.iter() {
            match Self::ask(worker, &make).await {
                Err(SfuError::SessionNotFound(_)) => {}
                other => {
                    answer = other;
                    break;
                }
            }
        }
        answer
    }

    /// Start a publish session from a WHIP offer; returns its id and the SDP answer.
    pub async fn publish(&self, stage: StageId, participant: ParticipantId, offer: String) -> Result<(SessionId, String), SfuError> {
        Self::ask(self.worker(&stage), |reply| Command::Publish { stage, participant, offer, reply }).await
    }

    /// Start a subscription to `publisher`'s media, video at the lowest or
    /// highest layer until bandwidth decides, capped at layer `cap`;
    /// returns its id and the SDP answer.
    pub async fn subscribe(
        &self,
        stage: StageId,
        subscriber: ParticipantId,
        publisher: ParticipantId,
        offer: String,
        start: LayerStart,
        cap: Option<String>,
    ) -> Result<(SessionId, String), SfuError> {
        let to = self.worker(&stage);
        Self::ask(to, |reply| Command::Subscribe { stage, subscriber, publisher, offer, start, cap, reply }).await
    }

    /// Cap and/or pause the video of `owner`'s subscription.
    pub async fn set_layer(&self, session: SessionId, owner: ParticipantId, req: LayerRequest) -> Result<(), SfuError> {
        self.ask_session(&session, |reply| Command::SetLayer { session: session.clone(), owner: owner.clone(), req: req.clone(), reply })
            .await
    }

    /// The layers of `owner`'s subscription and which one it gets.
    pub async fn layers(&self, session: SessionId, owner: ParticipantId) -> Result<LayerReport, SfuError> {
        self.ask_session(&session, |reply| Command::Layers { session: session.clone(), owner: owner.clone(), reply }).await
    }

    /// End a session; with `owner`, only if that participant owns it.
    pub async fn close_session(&self, session: SessionId, owner: Option<ParticipantId>) -> Result<(), SfuError> {
        self.ask_session(&session, |reply| Command::Close { session: session.clone(), owner: owner.clone(), reply }).await
    }

    /// The stage and participant a live session belongs to.
    pub async fn session_owner(&self, session: SessionId) -> Option<(StageId, ParticipantId)> {
        for worker in self.workers.iter() {
            let (tx, rx) = oneshot::channel();
            worker.send(Command::Owner { session: session.clone(), reply: tx }).ok()?;
            if let Some(owner) = rx.await.ok().flatten() {
                return Some(owner);
            }
        }
        None
    }

    /// End all media sessions of a participant (fire and forget).
    pub fn remove_participant(&self, stage: StageId, participant: ParticipantId) {
        let _ = self.worker(&stage).send(Command::RemoveParticipant { stage, participant });
    }

    /// Each worker's counters and open sessions, in worker order (`None`
    /// once the SFU is gone).
    pub async fn stats_by_worker(&self) -> Option<Vec<SfuStats>> {
        let mut all = Vec::with_capacity(self.workers.len());
        for worker in self.workers.iter() {
            let (tx, rx) = oneshot::channel();
            worker.send(Command::Stats { reply: tx }).ok()?;
            all.push(rx.await.ok()?);
        }
        Some(all)
    }

    /// The SFU's counters and open sessions, all workers together.
    pub async fn stats(&self) -> Option<SfuStats> {
        let all = self.stats_by_worker().await?;
        Some(all.into_iter().sum())
    }

    /// End all media sessions of a stage (fire and forget).
    pub fn remove_stage(&self, stage: StageId) {
        let _ = self.worker(&stage).send(Command::RemoveStage { stage });
    }
}

/// A [`SfuHandle`] that does not keep the SFU tasks alive (for tasks that
/// themselves live as long as the SFU, like the stage hub's event reader).
#[derive(Clone)]
pub struct WeakSfuHandle {
    workers: Vec<mpsc::WeakUnboundedSender<Command>>,
}

impl WeakSfuHandle {
    pub fn upgrade(&self) -> Option<SfuHandle> {
        let workers: Option<Vec<_>> = self.workers.iter().map(mpsc::WeakUnboundedSender::upgrade).collect();
        Some(SfuHandle { workers: workers?.into() })
    }
}

fn handle_command(sfu: &mut Sfu, command: Command, now: Instant) {
    // A dropped reply receiver means the HTTP client went away; the session
    // it created then simply fails to connect and times out.
    match command {
        Command::Publish { stage, participant, offer, reply } => {
            let _ = reply.send(sfu.publish(&stage, &participant, &offer, now));
        }
        Command::Subscribe { stage, subscriber, publisher, offer, start, cap, reply } => {
            let _ = reply.send(sfu.subscribe_with(&stage, &subscriber, &publisher, &offer, start, cap.as_deref(), now));
        }
        Command::SetLayer { session, owner, req, reply } => {
            let _ = reply.send(sfu.set_layer(&session, &owner, &req, now));
        }
        Command::Layers { session, owner, reply } => {
            let _ = reply.send(sfu.layer_report(&session, &owner));
        }
        Command::Close { session, owner, reply } => {
            let _ = reply.send(sfu.close_session(&session, owner.as_ref(), now));
        }
        Command::Owner { session, reply } => {
            let owner = sfu.session_owner(&session).map(|(s, p)| (s.clone(), p.clone()));
            let _ = reply.send(owner);
        }
        Command::RemoveParticipant { stage, participant } => sfu.remove_participant(&stage, &participant, now),
        Command::RemoveStage { stage } => sfu.remove_stage(&stage, now),
        Command::Stats { reply } => {
            let _ = reply.send(sfu.stats());
        }
    }
}

/// One worker: a [`Sfu`] core with the sessions of its stages.
struct Worker {
    index: usize,
    count: usize,
    sfu: Sfu,
    udp: Arc<UdpSocket>,
    candidate: SocketAddr,
    /// The local address of ICE-TCP traffic (the passive candidate).
    tcp_destination: SocketAddr,
    reports: mpsc::Sender<Report>,
    events: mpsc::UnboundedSender<SfuEvent>,
}

impl Worker {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>, mut packets: mpsc::Receiver<Packet>) {
        loop {
            let deadline = loop {
                match self.sfu.poll_output() {
                    SfuOutput::Transmit(t) if t.proto == Protocol::Tcp => {
                        // Full: dropped, like a full connection queue.
                        let _ = self.reports.try_send(Report::Tcp(t));
                    }
                    SfuOutput::Transmit(t) => {
                        // A send error concerns one peer (e.g. unreachable); the
                        // session's ICE timeout will drop it if it persists.
                        if let Err(e) = self.udp.send_to(&t.bytes, t.destination).await {
                            tracing::debug!(destination = %t.destination, error = %e, "UDP send failed");
                        }
                    }
                    SfuOutput::Event(e) => {
                        let _ = self.events.send(e);
                    }
                    SfuOutput::Timeout(t) => break t,
                }
            };

            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => handle_command(&mut self.sfu, command, Instant::now()),
                    None => break,
                },
                Some(packet) = packets.recv() => self.receive(packet),
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                    self.sfu.handle_timeout(Instant::now());
                }
            }
        }
        tracing::info!(worker = self.index, "SFU worker stopped");
    }

    fn receive(&mut self, packet: Packet) {
        let Packet { proto, source, bytes, probe } = packet;
        let destination = if proto == Protocol::Tcp { self.tcp_destination } else { self.candidate };
        let accepted = self.sfu.receive(Instant::now(), proto, source, destination, &bytes);
        // What the dispatcher needs: who owns a probed address (and, for
        // ICE-TCP, who does not), and that a routed one is no longer ours.
        let report = match (probe, accepted) {
            (true, true) => true,
            (true, false) => proto == Protocol::Tcp,
            (false, false) => self.count > 1,
            (false, true) => false,
        };
        if report {
            let _ = self.reports.try_send(Report::Verdict { proto, source, worker: self.index, accepted, probe });
        }
    }
}

/// The dispatcher: reads the media port and routes packets to workers
/// until every worker has stopped.
async fn dispatch(
    udp: Arc<UdpSocket>,
    mut tcp_events: mpsc::Receiver<TcpEvent>,
    workers: Vec<mpsc::Sender<Packet>>,
    mut reports: mpsc::Receiver<Report>,
) {
    let mut mux = Mux { routes: Routes::new(workers.len()), workers, links: HashMap::new(), dropped: LogThrottle::new(Duration::from_secs(5)) };
    let mut expire = tokio::time::interval(EXPIRE_EVERY);
    // Larger than any MTU-sized datagram WebRTC sends.
    let mut buf = vec![0u8; 2048];
    loop {
        tokio::select! {
            report = reports.recv() => match report {
                Some(report) => mux.report(report),
                None => break,
            },
            Some(event) = tcp_events.recv() => mux.tcp_event(event),
            received = udp.recv_from(&mut buf) => match received {
                Ok((n, source)) => {
                    let bytes = buf.get(..n).unwrap_or_default().to_vec();
                    mux.deliver(Protocol::Udp, source, bytes, false);
                }
                Err(e) => {
                    // e.g. ICMP port unreachable reported on the next recv: not fatal.
                    tracing::debug!(error = %e, "UDP receive failed");
                }
            },
            _ = expire.tick() => mux.routes.expire(Instant::now()),
        }
    }
    tracing::info!("SFU stopped");
}

/// The dispatcher's state: routes, worker queues, open ICE-TCP connections.
struct Mux {
    routes: Routes,
    workers: Vec<mpsc::Sender<Packet>>,
    /// The open ICE-TCP connections, by remote address.
    links: HashMap<SocketAddr, Link>,
    dropped: LogThrottle,
}

impl Mux {
    fn deliver(&mut self, proto: Protocol, source: SocketAddr, bytes: Vec<u8>, pending: bool) {
        match self.routes.route(proto, source, Instant::now()) {
            Route::Worker(w) => {
                if let Some(worker) = self.workers.get(w) {
                    let packet = Packet { proto, source, bytes, probe: pending };
                    if worker.try_send(packet).is_err() {
                        self.full(w);
                    }
                }
            }
            Route::Probe => {
                for w in 0..self.workers.len() {
                    let Some(worker) = self.workers.get(w) else { continue };
                    let packet = Packet { proto, source, bytes: bytes.clone(), probe: true };
                    if worker.try_send(packet).is_err() {
                        self.full(w);
                    }
                }
            }
        }
    }

    fn full(&mut self, worker: usize) {
        if let Some(n) = self.dropped.hit(Instant::now()) {
            tracing::warn!(worker, dropped = n, "SFU worker queue full, packets dropped");
        }
    }

    fn report(&mut self, report: Report) {
        match report {
            Report::Tcp(t) => self.send_tcp(t),
            Report::Verdict { proto, source, worker, accepted, probe } => {
                match self.routes.verdict(proto, source, worker, accepted, probe, Instant::now()) {
                    Outcome::Claimed(_) if proto == Protocol::Tcp => {
                        if let Some(link) = self.links.get(&source) {
                            let _ = link.state.send(LinkState::Validated);
                        }
                    }
                    Outcome::Refused => {
                        // Its first packets are for no session: not ICE for us.
                        if let Some(link) = self.links.remove(&source) {
                            let _ = link.state.send(LinkState::Refused);
                        }
                    }
                    Outcome::Claimed(_) | Outcome::Nothing => {}
                }
            }
        }
    }

    fn tcp_event(&mut self, event: TcpEvent) {
        match event {
            TcpEvent::Opened { peer, link } => {
                self.routes.tcp_opened(peer);
                self.links.insert(peer, link);
            }
            TcpEvent::Frame { id, peer, bytes } => {
                let Some(link) = self.links.get(&peer).filter(|l| l.id == id) else { return };
                let pending = *link.state.borrow() == LinkState::Pending;
                self.deliver(Protocol::Tcp, peer, bytes, pending);
            }
            TcpEvent::Closed { id, peer } => {
                if self.links.get(&peer).is_some_and(|l| l.id == id) {
                    self.links.remove(&peer);
                    self.routes.tcp_closed(peer);
                }
            }
        }
    }

    /// Queue a packet on its connection; dropped when that queue is full
    /// (media tolerates loss; no task waits on one client).
    fn send_tcp(&mut self, t: Transmit) {
        let Some(link) = self.links.get(&t.destination) else {
            return;
        };
        match link.out.try_send(t.bytes) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => tracing::trace!(destination = %t.destination, "TCP queue full, packet dropped"),
            Err(TrySendError::Closed(_)) => {
                self.links.remove(&t.destination);
            }
        }
    }
}
