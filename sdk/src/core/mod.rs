//! Sans-IO SDK logic: nothing here touches the browser, the network or the
//! clock. The web adapters feed it inputs (snapshots, strategy answers, the
//! current time) and apply what it returns, so all of it is tested natively.

pub mod backoff;
pub mod base64url;
pub mod broadcast;
pub mod chat;
pub mod error;
pub mod json;
pub mod layout;
pub mod state;
pub mod strategy;
pub mod token;
pub mod wire;

pub use error::{ErrorCategory, ErrorCode, StageError};
pub use state::{ParticipantChange, StageView};
pub use strategy::{PublishAction, StreamKind, SubscribeKind, SubscriptionAction};
