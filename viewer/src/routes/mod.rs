//! One page per file.

pub mod channel;
pub mod not_found;
pub mod watch;
