//! An event-plane client as the SDK is one: it keeps the stage from the
//! first STAGE_STATE and applies each STAGE_DELTA to it, refusing a delta
//! whose base is not the last sequence number it saw.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use stagecast_protocol::events::{IceServer, ParticipantState, ServerMessage};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::{Api, Token, Ws, EVENTS_PATH};

/// How long a test waits for the next frame.
pub const WAIT: Duration = Duration::from_secs(5);

/// The stage as the frames so far describe it.
#[derive(Debug, Default, Clone)]
pub struct StageView {
    pub sequence: Option<u64>,
    pub self_id: String,
    pub members: Vec<ParticipantState>,
}

impl StageView {
    /// Apply a STAGE_STATE or STAGE_DELTA (true), ignore anything else (false).
    pub fn apply(&mut self, msg: &ServerMessage) -> Result<bool> {
        match msg {
            ServerMessage::StageState { sequence_number, self_id, participants } => {
                self.sequence = Some(*sequence_number);
                self.self_id.clone_from(self_id);
                self.members.clone_from(participants);
            }
            ServerMessage::StageDelta { sequence_number, base_sequence_number, participants, removed } => {
                ensure!(
                    self.sequence == Some(*base_sequence_number),
                    "delta from {base_sequence_number} but the last frame was {:?}",
                    self.sequence
                );
                ensure!(sequence_number > base_sequence_number, "delta goes backwards: {msg:?}");
                self.sequence = Some(*sequence_number);
                self.members.retain(|m| !removed.contains(&m.id));
                for p in participants {
                    match self.members.iter_mut().find(|m| m.id == p.id) {
                        Some(m) => *m = p.clone(),
                        None => self.members.push(p.clone()),
                    }
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub fn ids(&self) -> Vec<&str> {
        self.members.iter().map(|p| p.id.as_str()).collect()
    }

    pub fn get(&self, id: &str) -> Option<&ParticipantState> {
        self.members.iter().find(|p| p.id == id)
    }
}

/// One event-plane connection and the stage as it has seen it.
pub struct EventClient {
    pub ws: Ws,
    pub view: StageView,
    /// The ICE servers of the CONFIG frame, once received.
    pub ice_servers: Option<Vec<IceServer>>,
    /// Every STAGE_DELTA's `removed` ids, in order.
    pub removed_seen: Vec<String>,
}

impl EventClient {
    pub async fn connect(api: &Api, token: &Token) -> Result<Self> {
        Ok(Self::new(api.ws_connect(EVENTS_PATH, &token.token).await?))
    }

    pub fn new(ws: Ws) -> Self {
        Self { ws, view: StageView::default(), ice_servers: None, removed_seen: Vec::new() }
    }

    /// The next server message (transport pings skipped; tungstenite
    /// answers them), applied to the view.
    pub async fn recv(&mut self) -> Result<ServerMessage> {
        self.recv_within(WAIT).await
    }

    pub async fn recv_within(&mut self, wait: Duration) -> Result<ServerMessage> {
        loop {
            let msg = tokio::time::timeout(wait, self.ws.next()).await.context("no message in time")?.context("socket ended")??;
            let msg: ServerMessage = match msg {
                Message::Text(text) => serde_json::from_str(text.as_str())?,
                Message::Ping(_) | Message::Pong(_) => continue,
                other => bail!("unexpected frame {other:?}"),
            };
            match &msg {
                ServerMessage::Config { ice_servers } => {
                    ensure!(self.ice_servers.is_none() && self.view.sequence.is_none(), "CONFIG must come first, once");
                    self.ice_servers = Some(ice_servers.clone());
                }
                ServerMessage::StageState { .. } | ServerMessage::StageDelta { .. } => {
                    ensure!(self.ice_servers.is_some(), "a stage frame before CONFIG");
                    ensure!(
                        self.view.sequence.is_some() || matches!(msg, ServerMessage::StageState { .. }),
                        "the first stage frame must be a full STAGE_STATE"
                    );
                    if let ServerMessage::StageDelta { removed, .. } = &msg {
                        self.removed_seen.extend(removed.iter().cloned());
                    }
                }
                _ => {}
            }
            self.view.apply(&msg)?;
            return Ok(msg);
        }
    }

    /// Frames until the next stage change; the view after it.
    pub async fn state(&mut self) -> Result<&StageView> {
        loop {
            let msg = self.recv().await?;
            if matches!(msg, ServerMessage::StageState { .. } | ServerMessage::StageDelta { .. }) {
                return Ok(&self.view);
            }
        }
    }

    /// Frames until the view satisfies `pred` (checked on the view as it is
    /// first); a DISCONNECT fails.
    pub async fn state_where(&mut self, pred: impl Fn(&StageView) -> bool) -> Result<&StageView> {
        while self.view.sequence.is_none() || !pred(&self.view) {
            match self.recv().await? {
                ServerMessage::Disconnect { reason, .. } => bail!("disconnected ({reason:?}) while waiting for a stage state"),
                _ => continue,
            }
        }
        Ok(&self.view)
    }

    pub async fn send_json(&mut self, value: serde_json::Value) -> Result<()> {
        self.ws.send(Message::text(value.to_string())).await?;
        Ok(())
    }

    pub async fn set_state(&mut self, audio_muted: bool, video_stopped: bool) -> Result<()> {
        self.send_json(serde_json::json!({"type": "SET_STATE", "audioMuted": audio_muted, "videoStopped": video_stopped})).await
    }

    /// Leave as the SDK's `leave()` does: close 1000 "user-initiated".
    pub async fn leave(mut self) -> Result<()> {
        let frame = CloseFrame { code: CloseCode::Normal, reason: "user-initiated".into() };
        self.ws.close(Some(frame)).await?;
        Ok(())
    }
}
