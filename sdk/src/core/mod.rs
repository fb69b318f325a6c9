//! Sans-IO SDK logic: nothing here touches the browser, the network or the
//! clock. The web adapters feed it inputs (snapshots, strategy answers, peer
//! connection states, the current time) and apply what it returns, so all
//! of it is tested natively.
//!
//! - [`session`] (+ [`publish`], [`subscribe`]): the stage session's
//!   lifecycle, reconnects and recovery; [`events`] is what it tells the app.
//! - [`link`]: one media connection and its recovery (stage publish and
//!   subscriptions, channel ingest).
//! - [`ingest`]: the broadcast client's connection to a channel.

pub mod backoff;
pub mod base64url;
pub mod broadcast;
pub mod chat;
pub mod error;
pub mod events;
pub mod ice;
pub mod ingest;
pub mod json;
pub mod layers;
pub mod layout;
pub mod link;
pub mod publish;
pub mod quality;
pub mod session;
pub mod simulcast;
pub mod state;
pub mod strategy;
pub mod subscribe;
pub mod token;
pub mod wire;

pub use error::{ErrorCategory, ErrorCode, HttpFailure, StageError};
pub use events::{ConnectionState, LeftReason, PublishState, StageEvent, StreamRef, SubscribeState};
pub use state::{DeltaMismatch, ParticipantChange, StageView};
pub use strategy::{PublishAction, StreamKind, SubscribeKind, SubscriptionAction};
