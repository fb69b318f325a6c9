//! The `#[wasm_bindgen]` surface, with the IVS Web Broadcast SDK names.

pub mod auto_layout;
pub mod broadcast;
pub mod chat;
mod convert;
pub mod stage;
pub mod stream;
