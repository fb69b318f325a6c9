//! The `#[wasm_bindgen]` surface, with the IVS Web Broadcast SDK names.

mod convert;
pub mod stage;
pub mod stream;
