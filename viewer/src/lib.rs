//! The Stagecast watch page: a Leptos (CSR) app served at `/watch/{groupId}`
//! (a sample-app group: its channel and chat) and `/watch/channel/{channelId}`
//! (any channel, one made through `/v1` too: its video alone).
//!
//! It plays the group's channel through the IVS Player (default) or hls.js
//! (`?player=hls`), both loaded at run time from `/dist/players.js` through
//! JS interop ([`player`]), follows the stream's Offline / Live / Ended state
//! by polling the demo backend, and shows the group's chat room through the
//! SDK's Rust [`stagecast_sdk::ChatRoom`] ([`components::chat`]).
//! Everything but the plain arithmetic of [`latency`] is wasm32-only; on the
//! host the crate is nearly empty.
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

#[cfg(target_arch = "wasm32")]
pub use app::App;
