//! Stagecast browser SDK: the IVS Web Broadcast SDK stage API in Rust.
//!
//! - [`core`]: sans-IO logic (snapshot diffing, strategy decisions, token
//!   claims, reconnect backoff), unit-tested natively.
//! - `web` (wasm32 only): thin web-sys adapters — the event-plane socket,
//!   WHIP publish / WHEP-style subscribe peer connections, timers.
//! - `js` (wasm32 only): the `#[wasm_bindgen]` surface with IVS names.
//!
//! A subscription always negotiates one audio and one video transceiver (the
//! server contract); `audio_only` is applied client-side by not exposing the
//! video stream.
#![deny(clippy::unwrap_used)]

pub mod core;

// The allocator's logic builds (and is tested) everywhere; it becomes the
// global allocator only on wasm32 with the `heap` feature.
#[cfg_attr(not(all(target_arch = "wasm32", feature = "heap")), allow(dead_code))]
mod heap;

#[cfg(target_arch = "wasm32")]
mod web;

#[cfg(target_arch = "wasm32")]
mod js;

#[cfg(all(target_arch = "wasm32", feature = "stage"))]
pub use js::{stage::Stage, stream::LocalStageStream};

#[cfg(all(target_arch = "wasm32", feature = "broadcast"))]
pub use js::{
    auto_layout::{auto_layout, AutoLayout},
    broadcast::{create_broadcast_client, BroadcastClient},
};

#[cfg(target_arch = "wasm32")]
pub use js::chat::{ChatRoom, DeleteMessageRequest, DisconnectUserRequest, SendMessageRequest};
