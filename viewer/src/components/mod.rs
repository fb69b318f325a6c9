//! Components shared by pages.

pub mod chat;
pub mod recordings;
pub mod stream;
