//! The `#[wasm_bindgen]` surface, with the IVS Web Broadcast SDK names.

pub mod auto_layout;
pub mod broadcast;
mod convert;
pub mod stage;
pub mod stream;
