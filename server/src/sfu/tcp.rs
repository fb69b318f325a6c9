//! ICE over TCP, the socket side: a listener on the media port (same number
//! and address as the UDP socket) whose connections carry RFC 4571 frames
//! to and from the SFU task. Browsers behind networks that block UDP reach
//! the SFU through the passive TCP candidate every answer advertises.
//!
//! Each connection is one task that reads frames and hands them to the SFU
//! task, and writes what the SFU sends it. Everything is bounded: frames
//! ([`MAX_FRAME`]), the outbound queue (full → media dropped, the SFU never
//! waits), the number of connections, and time ([`LinkTimer`]: valid ICE
//! within [`ICE_TIMEOUT`], then never silent for [`SILENCE_TIMEOUT`];
//! a write that takes [`WRITE_TIMEOUT`] ends the connection). A bad or
//! hostile connection costs itself only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::framing::{encode, FrameDecoder, LinkTimer};
use crate::serve::watch::LogThrottle;

/// Largest frame accepted. WebRTC packets are MTU-sized (~1.2–1.5 KB).
pub const MAX_FRAME: usize = 4096;
/// A connection must carry a STUN check a session accepts within this time.
pub const ICE_TIMEOUT: Duration = Duration::from_secs(5);
/// An established connection that receives nothing for this long is closed
/// (browsers send consent checks every ~5 s; str0m drops a silent session sooner).
pub const SILENCE_TIMEOUT: Duration = Duration::from_secs(20);
/// Writing one frame may take this long before the reader counts as dead.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames queued towards one connection; past this, media is dropped.
pub const OUT_QUEUE: usize = 256;
/// Frames and open/close notices queued from all connections to the SFU task.
pub const IN_QUEUE: usize = 1024;

/// What the SFU task tells a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Pending,
    /// A session accepted its traffic: only silence ends it now.
    Validated,
    /// Its first traffic was not for any session: close it.
    Refused,
}

/// The SFU task's end of one connection.
#[derive(Debug)]
pub struct Link {
    pub id: u64,
    pub out: mpsc::Sender<Vec<u8>>,
    pub state: watch::Sender<LinkState>,
}

/// From connection tasks to the SFU task.
#[derive(Debug)]
pub enum TcpEvent {
    Opened { peer: SocketAddr, link: Link },
    Frame { id: u64, peer: SocketAddr, bytes: Vec<u8> },
    Closed { id: u64, peer: SocketAddr },
}

/// Accept ICE-TCP connections until `events` is closed (the SFU stopped).
pub async fn accept_loop(listener: TcpListener, events: mpsc::Sender<TcpEvent>, max_connections: usize) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut refused = LogThrottle::new(Duration::from_secs(1));
    let mut next_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = events.closed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, "media TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            if let Some(n) = refused.hit(Instant::now()) {
                tracing::warn!(max = max_connections, refused = n, "media TCP connection limit reached");
            }
            continue;
        };
        next_id = next_id.wrapping_add(1);
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, peer, next_id, events.clone(), slot));
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, id: u64, events: mpsc::Sender<TcpEvent>, _slot: OwnedSemaphorePermit) {
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    let (state_tx, mut state_rx) = watch::channel(LinkState::Pending);
    if events.send(TcpEvent::Opened { peer, link: Link { id, out: out_tx, state: state_tx } }).await.is_err() {
        return;
    }
    let (mut reader, mut writer) = stream.into_split();
    let mut decoder = FrameDecoder::new(MAX_FRAME);
    let mut timer = LinkTimer::new(ICE_TIMEOUT, SILENCE_TIMEOUT, Instant::now());
    let mut buf = vec![0u8; 4096];
    let reason: String = 'conn: loop {
        let deadline = timer.deadline();
        tokio::select! {
            read = reader.read(&mut buf) => {
                let n = match read {
                    Ok(0) => break 'conn "closed by the peer".into(),
                    Ok(n) => n,
                    Err(e) => break 'conn format!("read failed: {e}"),
                };
                timer.on_data(Instant::now());
                decoder.push(buf.get(..n).unwrap_or_default());
                loop {
                    match decoder.next_frame() {
                        Ok(Some(bytes)) => {
                            if events.send(TcpEvent::Frame { id, peer, bytes }).await.is_err() {
                                break 'conn "the SFU stopped".into();
                            }
                        }
                        Ok(None) => break,
                        Err(e) => break 'conn e.to_string(),
                    }
                }
            }
            out = out_rx.recv() => {
                let Some(packet) = out else { break 'conn "the SFU closed it".into() };
                let Some(frame) = encode(&packet) else { continue 'conn };
                match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&frame)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break 'conn format!("write failed: {e}"),
                    Err(_) => break 'conn "the peer stopped reading".into(),
                }
            }
            changed = state_rx.changed() => {
                if changed.is_err() {
                    break 'conn "the SFU closed it".into();
                }
                let state = *state_rx.borrow_and_update();
                match state {
                    LinkState::Validated => timer.on_validated(),
                    LinkState::Refused => break 'conn "its traffic is for no session".into(),
                    LinkState::Pending => {}
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                if let Some(why) = timer.expired(Instant::now()) {
                    break 'conn why.as_str().into();
                }
            }
        }
    };
    tracing::debug!(%peer, reason, "media TCP connection closed");
    let _ = events.send(TcpEvent::Closed { id, peer }).await;
}

/// Bind the media UDP socket and the ICE-TCP listener on the same address
/// and port. With port 0, a port free for both is picked.
pub async fn bind_media(addr: SocketAddr) -> std::io::Result<(tokio::net::UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        let tcp = TcpListener::bind(addr).await?;
        return Ok((udp, tcp));
    }
    let mut last_error = None;
    for _ in 0..20 {
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        let port_addr = udp.local_addr()?;
        match TcpListener::bind(port_addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("no port free for both UDP and TCP")))
}
