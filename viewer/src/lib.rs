//! The Stagecast watch page: a Leptos (CSR) app served at `/watch/{groupId}`
//! (a sample-app group: its channel and chat) and `/watch/channel/{channelId}`
//! (any channel, one made through `/v1` too: its video alone).
//!
//! Both are one page around one component (`components::stream`): it plays
//! the channel through the IVS Player (default) or hls.js (`?player=hls`),
//! both loaded at run time from `/dist/players.js` through JS interop
//! (`player`), and follows the stream by polling the demo backend; what the
//! page says follows one [`state::StreamState`] (Connecting, Offline, Live,
//! Ended, or a stage or channel that does not exist). A stage's page shows
//! the group's chat room through the SDK's Rust [`stagecast_sdk::ChatRoom`]
//! (`components::chat`). Everything but the plain logic of [`state`] and
//! [`latency`] is wasm32-only; on the host the crate is nearly empty.
#![forbid(unsafe_code)]

#[cfg(target_arch = "wasm32")]
mod api;
#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(target_arch = "wasm32")]
mod components;
pub mod latency;
#[cfg(target_arch = "wasm32")]
mod player;
#[cfg(target_arch = "wasm32")]
mod routes;
pub mod state;

#[cfg(target_arch = "wasm32")]
pub use app::App;
