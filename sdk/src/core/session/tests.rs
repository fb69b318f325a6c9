//! The stage session's sequences, driven with a fake clock: joining,
//! leaving and true states here, recovery (one test per thing that can
//! happen to a participant on a real network) in `recovery.rs`.

use super::*;

mod recovery;
mod simulcast;
use crate::core::backoff::Jitter;
use crate::core::events::{PublishState as PS, StreamRef, SubscribeState as SS};
use crate::core::link::DISCONNECTED_GRACE_MS;
use crate::core::publish::LocalStream;
use crate::core::state::tests::p;
use crate::core::strategy::{DesiredStream, StreamKind, SubscribeKind};
use crate::core::token::tests::make_token;
use stagecast_protocol::events::{DisconnectReason, IceServer};

/// `Date.now()` at the start of every test.
const UNIX_MS: f64 = 1_700_000_000_000.0;
const ME: &str = "p-1";
const AUDIO: DesiredStream = DesiredStream {
    key: 1,
    kind: StreamKind::Audio,
};
const VIDEO: DesiredStream = DesiredStream {
    key: 2,
    kind: StreamKind::Video,
};

fn published(id: &str) -> ParticipantState {
    ParticipantState {
        published: true,
        tracks: vec!["audio".into(), "video".into()],
        ..p(id)
    }
}

fn turn() -> Vec<IceServer> {
    vec![IceServer {
        urls: vec!["turn:turn.example.net:3478?transport=tcp".into()],
        username: Some("u".into()),
        credential: Some("c".into()),
    }]
}

/// A session, its clock, and what it has done.
struct H {
    s: Session,
    now: f64,
    gen: u32,
    log: Vec<Action>,
}

impl H {
    /// A session whose token expires `exp_in_s` seconds from now.
    fn new(exp_in_s: i64, allow_publish: bool) -> H {
        let exp = (UNIX_MS / 1000.0) as i64 + exp_in_s;
        let mut s = Session::new(make_token(exp, allow_publish), 0.0);
        s.ctx.jitter = Jitter::fixed(0.0);
        H {
            s,
            now: 1_000.0,
            gen: 0,
            log: Vec::new(),
        }
    }

    fn take(&mut self) -> Vec<Action> {
        let actions = self.s.take_actions();
        for a in &actions {
            if let Action::OpenSocket { gen } = a {
                self.gen = *gen;
            }
        }
        self.log.extend(actions.iter().cloned());
        actions
    }

    fn input(&mut self, input: Input) -> Vec<Action> {
        self.s.handle(input, self.now);
        self.take()
    }

    /// Lets `ms` pass, ticking at every deadline on the way. A deadline
    /// that a tick does not move on would spin the browser's timer: fail.
    fn advance(&mut self, ms: f64) -> Vec<Action> {
        let end = self.now + ms;
        let mut out = Vec::new();
        while let Some(t) = self.s.poll_timeout().filter(|t| *t <= end) {
            self.now = self.now.max(t);
            self.s.handle(Input::Tick, self.now);
            out.extend(self.take());
            let next = self.s.poll_timeout();
            assert!(
                next.is_none_or(|n| n > self.now),
                "deadline {next:?} not moved on by a tick at {}",
                self.now
            );
        }
        self.now = end;
        out
    }

    fn frame(&mut self, message: ServerMessage) -> Vec<Action> {
        let gen = self.gen;
        self.input(Input::SocketFrame {
            gen,
            message: Some(message),
        })
    }

    fn snapshot(&mut self, seq: u64, participants: Vec<ParticipantState>) -> Vec<Action> {
        self.frame(ServerMessage::StageState {
            sequence_number: seq,
            self_id: ME.into(),
            participants,
        })
    }

    fn closed(&mut self, was_open: bool) -> Vec<Action> {
        let gen = self.gen;
        self.input(Input::SocketClosed { gen, was_open })
    }

    /// The strategy: publish audio + video, subscribe to everyone asked about.
    fn answer(&mut self, asked: &[Action]) -> Vec<Action> {
        let Some(Action::AskStrategy { publish, remotes }) =
            asked.iter().find(|a| matches!(a, Action::AskStrategy { .. }))
        else {
            return Vec::new();
        };
        let streams = [AUDIO, VIDEO].map(|stream| LocalStream {
            stream,
            muted: false,
        });
        self.input(Input::Strategy(StrategyAnswer {
            publish: publish.then(|| (true, streams.to_vec())),
            subscribe: remotes
                .iter()
                .map(|id| (id.clone(), SubscribeKind::AudioVideo))
                .collect(),
        }))
    }

    fn ok(&mut self, op: u32) -> Vec<Action> {
        self.input(Input::PeerAnswered { op, result: Ok(()) })
    }

    fn fail(&mut self, op: u32, f: HttpFailure) -> Vec<Action> {
        self.input(Input::PeerAnswered { op, result: Err(f) })
    }

    fn peer(&mut self, op: u32, state: PeerState) -> Vec<Action> {
        self.input(Input::PeerState { op, state })
    }

    /// Joined, publishing and subscribed to `a`, all connected. Returns
    /// (publish op, subscription op).
    fn live(&mut self) -> (u32, u32) {
        self.input(Input::Join { unix_ms: UNIX_MS });
        self.frame(ServerMessage::Config {
            ice_servers: turn(),
        });
        let asked = self.snapshot(1, vec![published("a"), p(ME)]);
        let opened = self.answer(&asked);
        let (pub_op, sub_op) = (publish_op(&opened), subscribe_op(&opened, "a"));
        self.ok(pub_op);
        self.peer(pub_op, PeerState::Connected);
        self.ok(sub_op);
        self.peer(sub_op, PeerState::Connected);
        self.snapshot(2, vec![published("a"), published(ME)]);
        self.log.clear();
        (pub_op, sub_op)
    }
}

fn events(actions: &[Action]) -> Vec<StageEvent> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn publish_op(actions: &[Action]) -> u32 {
    actions
        .iter()
        .find_map(|a| match a {
            Action::OpenPublish { op, .. } => Some(*op),
            _ => None,
        })
        .expect("a publish was opened")
}

fn subscribe_op(actions: &[Action], id: &str) -> u32 {
    actions
        .iter()
        .find_map(|a| match a {
            Action::OpenSubscribe { op, publisher, .. } if publisher == id => Some(*op),
            _ => None,
        })
        .unwrap_or_else(|| panic!("a subscription to {id} was opened: {actions:?}"))
}

fn remote(op: u32) -> Vec<StreamRef> {
    [StreamKind::Audio, StreamKind::Video]
        .map(|kind| StreamRef::Remote {
            op,
            kind,
            muted: false,
        })
        .to_vec()
}

fn sub_state(id: &str, state: SS) -> StageEvent {
    StageEvent::SubscribeStateChanged {
        id: id.into(),
        state,
    }
}

fn no_membership_change(actions: &[Action]) -> bool {
    !events(actions).iter().any(|e| {
        matches!(
            e,
            StageEvent::ParticipantJoined(_) | StageEvent::ParticipantLeft(_) | StageEvent::StageLeft(_)
        )
    })
}

#[test]
fn join_then_published_and_subscribed_only_once_media_can_flow() {
    let mut h = H::new(3600, true);
    let a = h.input(Input::Join { unix_ms: UNIX_MS });
    assert_eq!(
        a,
        [
            Action::Emit(StageEvent::ConnectionStateChanged(ConnectionState::Connecting)),
            Action::OpenSocket { gen: 1 },
        ]
    );
    h.frame(ServerMessage::Config {
        ice_servers: turn(),
    });
    let a = h.snapshot(1, vec![published("a"), p(ME)]);
    assert_eq!(
        events(&a),
        [
            StageEvent::ConnectionStateChanged(ConnectionState::Connected),
            StageEvent::ParticipantJoined(published("a")),
            StageEvent::ParticipantJoined(p(ME)),
        ]
    );
    assert!(a.contains(&Action::ResolveJoin));
    let a = h.answer(&a);
    let (pub_op, sub_op) = (publish_op(&a), subscribe_op(&a, "a"));
    assert!(a.contains(&Action::OpenPublish {
        op: pub_op,
        streams: vec![AUDIO, VIDEO],
        ice_servers: turn(),
    }));
    assert!(a.contains(&Action::OpenSubscribe {
        op: sub_op,
        publisher: "a".into(),
        ice_servers: turn(),
    }));
    assert_eq!(
        events(&a),
        [
            StageEvent::PublishStateChanged(PS::AttemptingPublish),
            sub_state("a", SS::AttemptingSubscribe),
        ]
    );
    // The answers alone are not media.
    assert_eq!(events(&h.ok(pub_op)), []);
    assert_eq!(events(&h.ok(sub_op)), []);
    let a = h.peer(pub_op, PeerState::Connected);
    assert_eq!(
        events(&a),
        [
            StageEvent::PublishStateChanged(PS::Published),
            StageEvent::StreamsAdded {
                id: ME.into(),
                streams: vec![StreamRef::Local(1), StreamRef::Local(2)],
            },
        ]
    );
    assert!(a.contains(&Action::Send(ClientMessage::SetState {
        audio_muted: false,
        video_stopped: false,
    })));
    let a = h.peer(sub_op, PeerState::Connected);
    assert_eq!(
        events(&a),
        [
            sub_state("a", SS::Subscribed),
            StageEvent::StreamsAdded {
                id: "a".into(),
                streams: remote(sub_op),
            },
        ]
    );
    let a = h.input(Input::LocalMute { key: 1, muted: true });
    assert_eq!(
        a,
        [Action::Send(ClientMessage::SetState {
            audio_muted: true,
            video_stopped: false,
        })]
    );
}

#[test]
fn join_failures_are_explained() {
    let mut h = H::new(3600, true);
    h.input(Input::Join { unix_ms: UNIX_MS });
    let a = h.closed(false);
    let gen = h.gen;
    assert_eq!(a, [Action::Diagnose { gen }]);
    let expired = HttpFailure::http(401, Some("TOKEN_EXPIRED".into()), Some("expired".into()));
    let a = h.input(Input::Diagnosed {
        gen,
        failure: Some(expired),
    });
    let Some(Action::RejectJoin(e)) = a.last() else {
        panic!("join rejected: {a:?}")
    };
    assert_eq!(e.code, ErrorCode::TokenExpired);
    assert_eq!(h.s.connection_state(), ConnectionState::Errored);
    // A second join may be tried; this one times out.
    let a = h.input(Input::Join { unix_ms: UNIX_MS });
    assert!(a.contains(&Action::OpenSocket { gen: h.gen }));
    let a = h.advance(JOIN_TIMEOUT_MS);
    let Some(Action::RejectJoin(e)) = a.last() else {
        panic!("join rejected: {a:?}")
    };
    assert_eq!(e.code, ErrorCode::Timeout);
    // An expired token never reaches the network.
    let mut h = H::new(-5, true);
    let a = h.input(Input::Join { unix_ms: UNIX_MS });
    assert!(matches!(&a[..], [Action::RejectJoin(e)] if e.code == ErrorCode::TokenExpired));
}

#[test]
fn leave_deletes_the_sessions_and_says_so() {
    let mut h = H::new(3600, true);
    let (pub_op, sub_op) = h.live();
    let a = h.input(Input::Leave);
    assert!(a.contains(&Action::ClosePeer { op: pub_op, delete: true }));
    assert!(a.contains(&Action::ClosePeer { op: sub_op, delete: true }));
    let close = a.iter().position(|a| *a == Action::CloseSocket { deliberate: true });
    let last_delete = a.iter().rposition(|a| matches!(a, Action::ClosePeer { .. }));
    assert!(close > last_delete, "the socket closes after the DELETEs are queued");
    let ev = events(&a);
    assert_eq!(
        ev,
        [
            StageEvent::StreamsRemoved {
                id: "a".into(),
                streams: remote(sub_op),
            },
            sub_state("a", SS::NotSubscribed),
            StageEvent::StreamsRemoved {
                id: ME.into(),
                streams: vec![StreamRef::Local(1), StreamRef::Local(2)],
            },
            StageEvent::PublishStateChanged(PS::NotPublished),
            StageEvent::ParticipantLeft(published("a")),
            StageEvent::ConnectionStateChanged(ConnectionState::Disconnected),
            StageEvent::StageLeft(LeftReason::UserInitiated),
        ]
    );
    assert_eq!(h.s.poll_timeout(), None);
    assert_eq!(h.input(Input::Leave), []);
}

#[test]
fn a_token_without_publish_is_told_once() {
    let mut h = H::new(3600, false);
    h.input(Input::Join { unix_ms: UNIX_MS });
    let a = h.snapshot(1, vec![p(ME)]);
    let a = h.answer(&a);
    let ev = events(&a);
    assert_eq!(ev[0], StageEvent::PublishStateChanged(PS::Errored));
    assert!(matches!(&ev[1], StageEvent::Error(e) if e.code == ErrorCode::TokenNotAllowed));
    let a = h.input(Input::RefreshStrategy);
    assert_eq!(events(&h.answer(&a)), [], "the same answer is not an error again");
}

#[test]
fn new_tracks_of_the_same_kinds_are_swapped_in_place() {
    let mut h = H::new(3600, true);
    let (op, _) = h.live();
    let camera2 = DesiredStream {
        key: 3,
        kind: StreamKind::Video,
    };
    let a = h.input(Input::Strategy(StrategyAnswer {
        publish: Some((
            true,
            [AUDIO, camera2]
                .map(|stream| LocalStream { stream, muted: false })
                .to_vec(),
        )),
        subscribe: vec![],
    }));
    assert_eq!(
        a[0],
        Action::ReplaceTracks {
            op,
            streams: vec![camera2],
        }
    );
    assert_eq!(
        events(&a),
        [
            StageEvent::StreamsRemoved {
                id: ME.into(),
                streams: vec![StreamRef::Local(2)],
            },
            StageEvent::StreamsAdded {
                id: ME.into(),
                streams: vec![StreamRef::Local(3)],
            },
        ]
    );
    assert_eq!(h.s.published_keys(), [1, 3]);
}

fn delta(seq: u64, base: u64, changed: Vec<ParticipantState>, removed: &[&str]) -> ServerMessage {
    ServerMessage::StageDelta {
        sequence_number: seq,
        base_sequence_number: base,
        participants: changed,
        removed: removed.iter().map(|id| (*id).to_owned()).collect(),
    }
}

#[test]
fn deltas_give_the_same_events_and_media_as_snapshots() {
    let mut h = H::new(3600, true);
    let (_, sub_op) = h.live();
    let mut a = published("a");
    a.audio_muted = true;
    let acts = h.frame(delta(3, 2, vec![a.clone(), p("b")], &[]));
    assert_eq!(
        events(&acts),
        [
            StageEvent::StreamMuteChanged {
                id: "a".into(),
                stream: StreamRef::Remote {
                    op: sub_op,
                    kind: StreamKind::Audio,
                    muted: true,
                },
            },
            StageEvent::ParticipantJoined(p("b")),
        ]
    );
    assert!(acts.contains(&Action::AskStrategy {
        publish: false,
        remotes: vec!["b".into()],
    }));
    // `a` leaving by delta ends its subscription, as a snapshot would.
    let acts = h.frame(delta(4, 3, vec![], &["a"]));
    assert!(acts.contains(&Action::ClosePeer { op: sub_op, delete: false }));
    let ev = events(&acts);
    assert!(ev.contains(&sub_state("a", SS::NotSubscribed)), "{ev:?}");
    assert!(matches!(ev.last(), Some(StageEvent::ParticipantLeft(p)) if p.id == "a"));
    assert_eq!(h.s.view().participants().len(), 2, "me and b");
}

#[test]
fn a_delta_that_does_not_follow_reopens_the_socket_without_leaving() {
    let mut h = H::new(3600, true);
    let (pub_op, sub_op) = h.live();
    let gen = h.gen;
    // Sequence 3 was lost: the delta from 3 cannot be applied.
    let acts = h.frame(delta(4, 3, vec![p("b")], &[]));
    assert_eq!(
        acts,
        [
            Action::CloseSocket { deliberate: false },
            Action::OpenSocket { gen: gen + 1 },
        ]
    );
    assert_eq!(h.s.connection_state(), ConnectionState::Connected);
    // The new socket's STAGE_STATE brings what was missed, and nothing else.
    let acts = h.snapshot(4, vec![published("a"), published(ME), p("b")]);
    assert_eq!(events(&acts), [StageEvent::ParticipantJoined(p("b"))]);
    assert!(!acts.iter().any(|a| matches!(a, Action::ClosePeer { op, .. } if *op == pub_op || *op == sub_op)));
    // A delta before the first STAGE_STATE of a socket is retried with
    // backoff, not at once (no tight loop against a confused server).
    h.log.clear();
    h.closed(true);
    h.advance(500.0);
    let acts = h.frame(delta(9, 8, vec![], &[]));
    assert_eq!(acts, [Action::CloseSocket { deliberate: false }]);
    assert!(no_membership_change(&h.log));
}
