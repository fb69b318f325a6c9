//! Webhooks: each event is POSTed as JSON to every `--webhook-url`, signed
//! `Stagecast-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//!
//! The event plane only pushes onto a bounded queue per URL ([`EventSink::emit`]
//! never waits); one task per URL delivers in order, with a timeout per
//! request and retries with exponential backoff. A full queue drops its
//! oldest event and counts it (`stagecast_webhook_events_dropped_total`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::Notify;

/// Events waiting per URL; past it the oldest is dropped.
pub const QUEUE_LEN: usize = 1024;
/// Tries per event and URL (the first plus four retries: 1 s, 2 s, 4 s, 8 s apart).
pub const TRIES: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(16);
/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Stagecast-Signature";

/// One event, already serialized (it is built once, shared by every URL).
#[derive(Debug, Clone)]
pub struct Event {
    pub body: Arc<str>,
}

/// `detail-type`s, as IVS sends them through EventBridge.
pub const STAGE_UPDATE: &str = "IVS Stage Update";
pub const STREAM_STATE_CHANGE: &str = "IVS Stream State Change";

impl Event {
    /// An EventBridge-shaped envelope: `version`, `id`, `detail-type`,
    /// `source`, `account`, `time`, `region`, `resources`, `detail`.
    pub fn new(detail_type: &str, resources: Vec<String>, detail: Value) -> Self {
        let id = crate::auth::random_alphanumeric(24);
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let envelope = json!({
            "version": "0",
            "id": id,
            "detail-type": detail_type,
            "source": "stagecast",
            "account": "",
            "time": time,
            "region": "",
            "resources": resources,
            "detail": detail,
        });
        Self { body: Arc::from(envelope.to_string()) }
    }
}

/// Delivery counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub delivered: AtomicU64,
    /// Events given up on after the last try.
    pub failed: AtomicU64,
    /// Tries that failed (each retry counts).
    pub failed_tries: AtomicU64,
    /// Events dropped from a full queue.
    pub dropped: AtomicU64,
}

struct Queue {
    url: String,
    events: Mutex<VecDeque<Event>>,
    ready: Notify,
}

/// Where stage, channel and chat code hands events. Cheap to clone; a sink
/// without URLs drops everything at once.
#[derive(Clone, Default)]
pub struct EventSink {
    queues: Arc<Vec<Arc<Queue>>>,
    stats: Arc<WebhookStats>,
}

impl EventSink {
    /// A sink that delivers nowhere.
    pub fn none() -> Self {
        Self::default()
    }

    pub fn is_enabled(&self) -> bool {
        !self.queues.is_empty()
    }

    pub fn stats(&self) -> &WebhookStats {
        &self.stats
    }

    /// Queue `event` for every URL; never waits.
    pub fn emit(&self, event: Event) {
        for queue in self.queues.iter() {
            let mut events = queue.events.lock().unwrap_or_else(PoisonError::into_inner);
            if events.len() >= QUEUE_LEN {
                events.pop_front();
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            events.push_back(event.clone());
            drop(events);
            queue.ready.notify_one();
        }
    }

    /// An EventBridge "IVS Stage Update" for one participant.
    pub fn stage_update(&self, stage: &str, event_name: &str, participant_id: &str, user_id: &str) {
        if !self.is_enabled() {
            return;
        }
        let detail = json!({
            "session_id": stage,
            "event_name": event_name,
            "user_id": user_id,
            "participant_id": participant_id,
        });
        self.emit(Event::new(STAGE_UPDATE, vec![format!("arn:stagecast:ivs:local:stage/{stage}")], detail));
    }

    /// An EventBridge "IVS Stream State Change" ("Stream Start" / "Stream End").
    pub fn stream_state(&self, channel: &str, event_name: &str, stream_id: &str) {
        if !self.is_enabled() {
            return;
        }
        let detail = json!({ "event_name": event_name, "channel_name": channel, "stream_id": stream_id });
        self.emit(Event::new(STREAM_STATE_CHANGE, vec![crate::channel::channel_arn(channel)], detail));
    }
}

/// Spawn one delivery task per URL and return the sink that feeds them.
/// The tasks end when every clone of the sink is gone.
pub fn start(urls: &[String], secret: &str, timeout: Duration) -> EventSink {
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client: webhooks are off");
            return EventSink::none();
        }
    };
    let stats = Arc::new(WebhookStats::default());
    let queues: Vec<Arc<Queue>> = urls
        .iter()
        .map(|url| Arc::new(Queue { url: url.clone(), events: Mutex::new(VecDeque::new()), ready: Notify::new() }))
        .collect();
    for queue in &queues {
        let worker = Worker {
            queue: queue.clone(),
            client: client.clone(),
            secret: secret.to_owned(),
            stats: stats.clone(),
        };
        tokio::spawn(worker.run());
    }
    EventSink { queues: Arc::new(queues), stats }
}

struct Worker {
    queue: Arc<Queue>,
    client: reqwest::Client,
    secret: String,
    stats: Arc<WebhookStats>,
}

impl Worker {
    async fn run(self) {
        // The sink holds the other reference; once every sink is gone, stop.
        while Arc::strong_count(&self.queue) > 1 {
            let next = self.queue.events.lock().unwrap_or_else(PoisonError::into_inner).pop_front();
            match next {
                Some(event) => self.deliver(&self.queue.url, &event).await,
                // Re-check now and then so the task ends with the server.
                None => {
                    let _ = tokio::time::timeout(Duration::from_secs(5), self.queue.ready.notified()).await;
                }
            }
        }
    }

    async fn deliver(&self, url: &str, event: &Event) {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=TRIES {
            let t = crate::auth::now_unix();
            let result = self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, signature_header(&self.secret, t, &event.body))
                .body(event.body.to_string())
                .send()
                .await;
            match result {
                Ok(response) if response.status().is_success() => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(response) => tracing::debug!(url, attempt, status = %response.status(), "webhook refused"),
                Err(e) => tracing::debug!(url, attempt, error = %e, "webhook not delivered"),
            }
            self.stats.failed_tries.fetch_add(1, Ordering::Relaxed);
            if attempt < TRIES {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(url, "webhook event given up after {TRIES} tries");
    }
}

/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature_header(secret: &str, t: i64, body: &str) -> String {
    format!("t={t},v1={}", sign(secret, t, body))
}

/// The hex HMAC-SHA256 of `"<t>.<body>"` under `secret`.
pub fn sign(secret: &str, t: i64, body: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC takes keys of any length; this cannot happen.
        return String::new();
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_the_timestamp_and_the_body() {
        let a = sign("secret", 1_700_000_000, "{}");
        assert_eq!(a.len(), 64);
        assert_ne!(a, sign("secret", 1_700_000_001, "{}"));
        assert_ne!(a, sign("secret", 1_700_000_000, "{ }"));
        assert_ne!(a, sign("other", 1_700_000_000, "{}"));
        assert_eq!(signature_header("secret", 1_700_000_000, "{}"), format!("t=1700000000,v1={a}"));
    }

    #[test]
    fn a_full_queue_drops_its_oldest_event_and_counts_it() {
        let queue = Arc::new(Queue { url: "http://x".to_owned(), events: Mutex::new(VecDeque::new()), ready: Notify::new() });
        let sink = EventSink { queues: Arc::new(vec![queue.clone()]), stats: Arc::default() };
        for i in 0..QUEUE_LEN + 3 {
            sink.emit(Event { body: Arc::from(i.to_string()) });
        }
        let events = queue.events.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(events.len(), QUEUE_LEN);
        assert_eq!(events.front().map(|e| &*e.body), Some("3"));
        assert_eq!(sink.stats().dropped.load(Ordering::Relaxed), 3);
    }
}
