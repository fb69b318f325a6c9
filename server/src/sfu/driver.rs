//! The tokio driver: one task owns the UDP socket and the [`Sfu`] core,
//! like the `run()` loop of str0m's chat example. Requests from HTTP
//! handlers and the stage hub arrive on a command channel.

use std::net::SocketAddr;
use std::time::Instant;

use stagecast_protocol::{ParticipantId, StageId};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::core::{Sfu, SfuOutput};
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
        reply: Reply<(SessionId, String)>,
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
}

/// The handle HTTP handlers and the stage hub use to reach the SFU task.
/// Cheap to clone. When every handle is dropped the task ends.
#[derive(Clone)]
pub struct SfuHandle {
    commands: mpsc::UnboundedSender<Command>,
}

impl SfuHandle {
    /// Spawn the SFU task on the current tokio runtime. `candidate` is the
    /// address advertised to clients (the socket's public address).
    pub fn start(udp: UdpSocket, candidate: SocketAddr) -> (Self, mpsc::UnboundedReceiver<SfuEvent>) {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(udp, candidate, command_rx, event_tx));
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

    /// Start a subscription to `publisher`'s media; returns its id and the SDP answer.
    pub async fn subscribe(
        &self,
        stage: StageId,
        subscriber: ParticipantId,
        publisher: ParticipantId,
        offer: String,
    ) -> Result<(SessionId, String), SfuError> {
        self.ask(|reply| Command::Subscribe { stage, subscriber, publisher, offer, reply }).await
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
        Command::Subscribe { stage, subscriber, publisher, offer, reply } => {
            let _ = reply.send(sfu.subscribe(&stage, &subscriber, &publisher, &offer, now));
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
    }
}

async fn run(
    udp: UdpSocket,
    candidate: SocketAddr,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<SfuEvent>,
) {
    let mut sfu = Sfu::new(candidate, Instant::now());
    // Larger than any MTU-sized datagram WebRTC sends.
    let mut buf = vec![0u8; 2048];
    tracing::info!(%candidate, "SFU running");
    loop {
        let deadline = loop {
            match sfu.poll_output() {
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
