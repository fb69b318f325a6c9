//! Components shared by pages.

pub mod chat;
