//! The tokio driver: one task owns the UDP socket and the [`Sfu`] core,
//! like the `run()` loop of str0m's chat example. Requests from HTTP
//! handlers and the stage hub arrive on a command channel; ICE-TCP frames
//! arrive from the connection tasks of `tcp.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use stagecast_protocol::{ParticipantId, StageId};
use str0m::net::Protocol;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use super::core::{LayerReport, LayerRequest, LayerStart, Sfu, SfuOutput, SfuStats, Transmit};
use super::tcp::{self, Link, LinkState, TcpEvent};
use super::{SessionId, SfuError, SfuEvent};

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

/// The handle HTTP handlers and the stage hub use to reach the SFU task.
/// Cheap to clone. When every handle is dropped the task ends.
#[derive(Clone)]
pub struct SfuHandle {
    commands: mpsc::UnboundedSender<Command>,
}

impl SfuHandle {
    /// Spawn the SFU task on the current tokio runtime, UDP only.
    /// `candidate` is the address advertised to clients (the socket's public
    /// address).
    pub fn start(udp: UdpSocket, candidate: SocketAddr) -> (Self, mpsc::UnboundedReceiver<SfuEvent>) {
        // No connection ever arrives on this channel; its sender is dropped.
        let (_, tcp_rx) = mpsc::channel(1);
        Self::spawn(udp, tcp_rx, candidate, None)
    }

    /// [`SfuHandle::start`] plus ICE over TCP: `candidate` is also
    /// advertised as a passive TCP candidate, and `tcp` (bound to the same
    /// port as `udp`) takes at most `max_tcp` connections.
    pub fn start_with_tcp(
        udp: UdpSocket,
        tcp: TcpListener,
        candidate: SocketAddr,
        max_tcp: usize,
    ) -> (Self, mpsc::UnboundedReceiver<SfuEvent>) {
        let (tcp_tx, tcp_rx) = mpsc::channel(tcp::IN_QUEUE);
        tokio::spawn(tcp::accept_loop(tcp, tcp_tx, max_tcp));
        Self::spawn(udp, tcp_rx, candidate, Some(candidate))
    }

    fn spawn(
        udp: UdpSocket,
        tcp_rx: mpsc::Receiver<TcpEvent>,
        candidate: SocketAddr,
        tcp_candidate: Option<SocketAddr>,
    ) -> (Self, mpsc::UnboundedReceiver<SfuEvent>) {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(udp, tcp_rx, candidate, tcp_candidate, command_rx, event_tx));
        (Self { commands }, event_rx)
    }

    /// A handle that does not keep the SFU task alive.
    pub fn downgrade(&self) -> WeakSfuHandle {
        WeakSfuHandle { commands: self.commands.downgrade() }
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, SfuError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).map_err(|_| SfuError::Unavailable)?;
        rx.await.map_err(|_| SfuError::Unavailable)?
    }

    /// Start a publish session from a WHIP offer; returns its id and the SDP answer.
    pub async fn publish(&self, stage: StageId, participant: ParticipantId, offer: String) -> Result<(SessionId, String), SfuError> {
        self.ask(|reply| Command::Publish { stage, participant, offer, reply }).await
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
        self.ask(|reply| Command::Subscribe { stage, subscriber, publisher, offer, start, cap, reply }).await
    }

    /// Cap and/or pause the video of `owner`'s subscription.
    pub async fn set_layer(&self, session: SessionId, owner: ParticipantId, req: LayerRequest) -> Result<(), SfuError> {
        self.ask(|reply| Command::SetLayer { session, owner, req, reply }).await
    }

    /// The layers of `owner`'s subscription and which one it gets.
    pub async fn layers(&self, session: SessionId, owner: ParticipantId) -> Result<LayerReport, SfuError> {
        self.ask(|reply| Command::Layers { session, owner, reply }).await
    }

    /// End a session; with `owner`, only if that participant owns it.
    pub async fn close_session(&self, session: SessionId, owner: Option<ParticipantId>) -> Result<(), SfuError> {
        self.ask(|reply| Command::Close { session, owner, reply }).await
    }

    /// The stage and participant a live session belongs to.
    pub async fn session_owner(&self, session: SessionId) -> Option<(StageId, ParticipantId)> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Owner { session, reply: tx }).ok()?;
        rx.await.ok().flatten()
    }

    /// End all media sessions of a participant (fire and forget).
    pub fn remove_participant(&self, stage: StageId, participant: ParticipantId) {
        let _ = self.commands.send(Command::RemoveParticipant { stage, participant });
    }

    /// The SFU's counters and open sessions (`None` once the SFU task is gone).
    pub async fn stats(&self) -> Option<SfuStats> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Stats { reply: tx }).ok()?;
        rx.await.ok()
    }

    /// End all media sessions of a stage (fire and forget).
    pub fn remove_stage(&self, stage: StageId) {
        let _ = self.commands.send(Command::RemoveStage { stage });
    }
}

/// A [`SfuHandle`] that does not keep the SFU task alive (for tasks that
/// themselves live as long as the SFU, like the stage hub's event reader).
#[derive(Clone)]
pub struct WeakSfuHandle {
    commands: mpsc::WeakUnboundedSender<Command>,
}

impl WeakSfuHandle {
    pub fn upgrade(&self) -> Option<SfuHandle> {
        self.commands.upgrade().map(|commands| SfuHandle { commands })
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

/// The open ICE-TCP connections, by remote address.
#[derive(Default)]
struct TcpLinks {
    links: HashMap<SocketAddr, Link>,
}

impl TcpLinks {
    fn handle(&mut self, sfu: &mut Sfu, candidate: SocketAddr, event: TcpEvent) {
        match event {
            TcpEvent::Opened { peer, link } => {
                self.links.insert(peer, link);
            }
            TcpEvent::Frame { id, peer, bytes } => {
                let accepted = sfu.receive(Instant::now(), Protocol::Tcp, peer, candidate, &bytes);
                let Some(link) = self.links.get(&peer).filter(|l| l.id == id) else { return };
                let state = *link.state.borrow();
                match (state, accepted) {
                    (LinkState::Pending, true) => {
                        let _ = link.state.send(LinkState::Validated);
                    }
                    (LinkState::Pending, false) => {
                        // Its first packets are for no session: not ICE for us.
                        let _ = link.state.send(LinkState::Refused);
                        self.links.remove(&peer);
                    }
                    _ => {}
                }
            }
            TcpEvent::Closed { id, peer } => {
                if self.links.get(&peer).is_some_and(|l| l.id == id) {
                    self.links.remove(&peer);
                }
            }
        }
    }

    /// Queue a packet on its connection; dropped when that queue is full
    /// (media tolerates loss; the SFU task never waits on one client).
    fn send(&mut self, t: Transmit) {
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

async fn run(
    udp: UdpSocket,
    mut tcp_events: mpsc::Receiver<TcpEvent>,
    candidate: SocketAddr,
    tcp_candidate: Option<SocketAddr>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<SfuEvent>,
) {
    let mut sfu = Sfu::new(candidate, Instant::now());
    if let Some(tcp) = tcp_candidate {
        sfu = sfu.with_tcp_candidate(tcp);
    }
    let mut tcp_links = TcpLinks::default();
    // Larger than any MTU-sized datagram WebRTC sends.
    let mut buf = vec![0u8; 2048];
    tracing::info!(%candidate, tcp = tcp_candidate.is_some(), "SFU running");
    loop {
        let deadline = loop {
            match sfu.poll_output() {
                SfuOutput::Transmit(t) if t.proto == Protocol::Tcp => tcp_links.send(t),
                SfuOutput::Transmit(t) => {
                    // A send error concerns one peer (e.g. unreachable); the
                    // session's ICE timeout will drop it if it persists.
                    if let Err(e) = udp.send_to(&t.bytes, t.destination).await {
                        tracing::debug!(destination = %t.destination, error = %e, "UDP send failed");
                    }
                }
                SfuOutput::Event(e) => {
                    let _ = events.send(e);
                }
                SfuOutput::Timeout(t) => break t,
            }
        };

        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => handle_command(&mut sfu, command, Instant::now()),
                None => break,
            },
            Some(event) = tcp_events.recv() => tcp_links.handle(&mut sfu, tcp_candidate.unwrap_or(candidate), event),
            received = udp.recv_from(&mut buf) => match received {
                Ok((n, source)) => {
                    let bytes = buf.get(..n).unwrap_or_default();
                    sfu.handle_receive(Instant::now(), source, candidate, bytes);
                }
                Err(e) => {
                    // e.g. ICMP port unreachable reported on the next recv: not fatal.
                    tracing::debug!(error = %e, "UDP receive failed");
                }
            },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                sfu.handle_timeout(Instant::now());
            }
        }
    }
    tracing::info!("SFU stopped");
}
