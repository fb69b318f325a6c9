//! The chat socket driver (`run_connection`) against in-memory sockets, with
//! the keepalive shortened to a ping every second and 3 s of silence (the
//! defaults are 10 s and 30 s): a silent peer is dropped, a peer that answers
//! pings stays, a peer that never reads is cut by the 10 s send timeout even
//! while it keeps sending pings (whose pongs would otherwise pile up), and a
//! ping flood is closed with 1008.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Result;
use axum::extract::ws::Message;
use futures_util::{Sink, Stream};
use serde_json::json;
use stagecast_server::chat::socket::run_connection;
use stagecast_server::chat::{ChatCapability, ChatClaims, ChatHub, Connection};
use tokio::sync::mpsc;
use tokio::time::Instant;

mod common;
use common::Server;

/// An in-memory WebSocket: frames pushed into `incoming` arrive; what the
/// server sends lands in `sent`. `stuck` is a peer that never reads (every
/// write stays pending); `answers_pings` replies to each ping with a pong.
struct FakeSocket {
    incoming: mpsc::UnboundedReceiver<Message>,
    to_incoming: mpsc::UnboundedSender<Message>,
    sent: mpsc::UnboundedSender<Message>,
    stuck: bool,
    answers_pings: bool,
}

struct Peer {
    push: mpsc::UnboundedSender<Message>,
    sent: mpsc::UnboundedReceiver<Message>,
}

fn fake(stuck: bool, answers_pings: bool) -> (FakeSocket, Peer) {
    let (push, incoming) = mpsc::unbounded_channel();
    let (sent_tx, sent) = mpsc::unbounded_channel();
    let socket = FakeSocket { incoming, to_incoming: push.clone(), sent: sent_tx, stuck, answers_pings };
    (socket, Peer { push, sent })
}

impl Stream for FakeSocket {
    type Item = Result<Message, std::convert::Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx).map(|m| m.map(Ok))
    }
}

impl Sink<Message> for FakeSocket {
    type Error = std::convert::Infallible;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.stuck {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }
    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        if self.answers_pings && matches!(item, Message::Ping(_)) {
            let _ = self.to_incoming.send(Message::Pong(Default::default()));
        }
        let _ = self.sent.send(item);
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_ready(cx)
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

/// A server that pings every second and drops a peer silent for 3 s.
async fn short_keepalive(name: &str) -> Result<Server> {
    Server::start_with(name, |c| c.chat_idle_timeout_secs = 3).await
}

/// A joined connection for `user` in a fresh room of `server`.
async fn joined(server: &Server, user: &str) -> Result<(ChatHub, String, Connection)> {
    let room = server.create_room(json!({})).await?;
    let hub = server.running.state.chat.clone();
    let now = chrono::Utc::now().timestamp();
    let claims =
        ChatClaims::new(room.clone(), user.into(), Default::default(), vec![ChatCapability::SendMessage], now, now + 3600, user.into());
    let conn = hub.join(&claims)?;
    Ok((hub, room, conn))
}

fn pings(sent: &mut mpsc::UnboundedReceiver<Message>) -> usize {
    let mut n = 0;
    while let Ok(m) = sent.try_recv() {
        n += usize::from(matches!(m, Message::Ping(_)));
    }
    n
}

#[tokio::test]
async fn a_silent_peer_is_dropped_after_30_s_and_one_that_answers_pings_stays() -> Result<()> {
    let server = short_keepalive("keepalive").await?;
    let (hub, room, conn) = joined(&server, "quiet").await?;
    let (_, alive_room, alive) = joined(&server, "alive").await?;

    // Never says anything (not even a pong): pinged at 1 and 2 s, dropped at 3 s.
    let (socket, mut peer) = fake(false, false);
    let started = Instant::now();
    run_connection(&hub, conn, socket).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(3) && took < Duration::from_millis(4500), "dropped after {took:?}");
    assert!((2..=3).contains(&pings(&mut peer.sent)));
    assert_eq!(hub.connection_count(&room), 0);

    // Answers every ping: still connected after 8 s (well past the 3 s), pinged every second.
    let (socket, mut peer) = fake(false, true);
    let outcome = tokio::time::timeout(Duration::from_secs(8), run_connection(&hub, alive, socket)).await;
    assert!(outcome.is_err(), "a peer that answers pings is never dropped");
    assert!((6..=8).contains(&pings(&mut peer.sent)), "pinged every second");
    // (The connection was dropped with the cancelled future, which leaves the room.)
    assert_eq!(hub.connection_count(&alive_room), 0);
    drop(peer.push);
    server.stop()
}

#[tokio::test]
async fn a_peer_that_never_reads_is_cut_by_the_send_timeout_even_while_it_pings() -> Result<()> {
    let server = short_keepalive("stuck").await?;
    let (hub, room, conn) = joined(&server, "stuck").await?;
    let (socket, peer) = fake(true, false);
    // A ping every 200 ms, well under the frame limit: never silent, and
    // every pong the transport owes it piles up unread.
    let push = peer.push.clone();
    let pinger = tokio::spawn(async move {
        loop {
            if push.send(Message::Ping(Default::default())).is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let started = Instant::now();
    run_connection(&hub, conn, socket).await;
    // The first keepalive ping (at 1 s) never completes: cut 10 s later.
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(11) && took < Duration::from_secs(13), "cut after {took:?}");
    assert_eq!(hub.connection_count(&room), 0);
    pinger.abort();
    server.stop()
}

#[tokio::test]
async fn a_ping_flood_is_closed_with_1008() -> Result<()> {
    let server = Server::start("flood").await?;
    let (hub, room, conn) = joined(&server, "flooder").await?;
    let (socket, mut peer) = fake(false, false);
    for _ in 0..100_000 {
        peer.push.send(Message::Ping(vec![0; 125].into()))?;
    }
    tokio::time::timeout(Duration::from_secs(5), run_connection(&hub, conn, socket)).await?;
    let mut close = None;
    while let Ok(m) = peer.sent.try_recv() {
        if let Message::Close(frame) = m {
            close = frame;
        }
    }
    assert_eq!(close.map(|f| f.code), Some(1008), "policy violation");
    assert_eq!(hub.connection_count(&room), 0);
    server.stop()
}
