//! The last messages of a room, for people who connect later (IVS Chat keeps
//! none; the watch page and the sample app show them on connect).
//!
//! Bounded: at most `capacity` messages (the server's `--chat-history`), each
//! at most a room's longest message (500 code points, 1 KiB of attributes,
//! and its sender's token attributes, 1 KiB), so a room holds well under
//! 4 KiB × capacity. Deleted messages are removed; a disconnected user's
//! messages stay, as they do on the screens of everyone who saw them.

use std::collections::VecDeque;

use super::wire::Frame;

/// Most messages a room may keep (below the outbound queue, so a new
/// connection's queue always has room for its history).
pub const MAX_HISTORY: usize = 200;

#[derive(Debug, Clone, Default)]
pub struct History {
    capacity: usize,
    /// MESSAGE frames as everyone received them (no `RequestId`), oldest first.
    frames: VecDeque<Frame>,
}

impl History {
    /// Keeps the last `capacity` messages (at most [`MAX_HISTORY`]); 0 keeps none.
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.min(MAX_HISTORY), frames: VecDeque::new() }
    }

    /// Remember a MESSAGE that everyone was sent (other frames are ignored).
    pub fn push(&mut self, frame: &Frame) {
        if self.capacity == 0 || !matches!(frame, Frame::Message { .. }) {
            return;
        }
        if self.frames.len() >= self.capacity {
            self.frames.pop_front();
        }
        self.frames.push_back(frame.clone().with_request_id(None));
    }

    /// Forget the message with this id (it was deleted). True if it was kept.
    pub fn remove(&mut self, message_id: &str) -> bool {
        let before = self.frames.len();
        self.frames.retain(|f| !matches!(f, Frame::Message { id, .. } if id == message_id));
        self.frames.len() != before
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// What a connecting client is sent, oldest first: each message marked
    /// as history (`"History": true`, a field the official client ignores).
    pub fn replay(&self) -> impl Iterator<Item = Frame> + '_ {
        self.frames.iter().map(|f| f.clone().as_history())
    }
}
