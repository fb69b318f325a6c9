//! Components shared by pages.

pub mod chat;
pub mod stream;
