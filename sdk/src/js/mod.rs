//! The `#[wasm_bindgen]` surface, with the IVS Web Broadcast SDK names.
//! `stage` and `broadcast` are behind the crate features of those names.

#[cfg(feature = "broadcast")]
pub mod auto_layout;
#[cfg(feature = "broadcast")]
pub mod broadcast;
pub mod chat;
// Chat alone uses only part of the conversions.
#[cfg_attr(not(all(feature = "stage", feature = "broadcast")), allow(dead_code))]
mod convert;
#[cfg(any(feature = "stage", feature = "broadcast"))]
mod listeners;
// Chat alone uses only part of it.
#[cfg_attr(not(any(feature = "stage", feature = "broadcast")), allow(dead_code))]
mod small_map;
#[cfg(feature = "stage")]
pub mod stage;
#[cfg(feature = "stage")]
pub mod stream;
