//! Webhook delivery: each operation's events, in the account's delivery order,
//! go one after another to the service's `/webhooks/stripe`, so the order
//! chosen (shuffled by default: Stripe does not order deliveries,
//! docs.stripe.com/webhooks "Event ordering") is the order they arrive in.
//! Operations are delivered in the order they ran. A delivery that is not
//! acknowledged is retried on its own with doubling backoff, so, as at Stripe,
//! a retried event may arrive after later ones.
//!
//! Signatures use the wall clock, never the virtual one: Stripe signs with its
//! own clock, and the service checks the tolerance against its wall clock.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::account::Emulator;
use crate::stripe::signature;

/// Delivery attempts per event, with doubling backoff from [`RETRY_BASE`].
const DELIVERY_ATTEMPTS: u32 = 8;
const RETRY_BASE: Duration = Duration::from_millis(500);

pub(super) struct Deliveries {
    url: String,
    secret: String,
    http: reqwest::Client,
    queue: UnboundedSender<Vec<Value>>,
    /// Taken by the worker that the first delivery starts (on the runtime of
    /// the request that produced it: the emulator is built before any runs).
    pending: Mutex<Option<UnboundedReceiver<Vec<Value>>>>,
}

impl Deliveries {
    pub(super) fn new(url: String, secret: String) -> Self {
        let (queue, pending) = unbounded_channel();
        Self {
            url,
            secret,
            http: reqwest::Client::new(),
            queue,
            pending: Mutex::new(Some(pending)),
        }
    }

    /// Queues one operation's events, already in arrival order.
    pub(super) fn send(&self, emu: &Arc<Emulator>, batch: Vec<Value>) {
        let worker = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(queue) = worker {
            let emu = Arc::downgrade(emu);
            actix_web::rt::spawn(work(emu, queue));
        }
        // The receiver lives as long as the emulator that holds this sender.
        let _ = self.queue.send(batch);
    }

    /// One signed POST; whether the service acknowledged it.
    async fn attempt(&self, body: &str, attempt: u32, id: &Value, type_: &Value) -> bool {
        let t = chrono::Utc::now().timestamp();
        let header = signature::sign(&self.secret, t, body.as_bytes());
        let outcome = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("stripe-signature", header)
            .body(body.to_string())
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match outcome {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                log::warn!(
                    "emulator: delivery {attempt} of {type_} {id} answered {}",
                    r.status()
                );
                false
            }
            Err(e) => {
                log::warn!("emulator: delivery {attempt} of {type_} {id} failed ({e})");
                false
            }
        }
    }
}

/// Delivers batches one event at a time until the emulator is gone.
async fn work(emu: Weak<Emulator>, mut queue: UnboundedReceiver<Vec<Value>>) {
    while let Some(batch) = queue.recv().await {
        for event in batch {
            let Some(emu) = emu.upgrade() else { return };
            let body = event.to_string();
            let (id, type_) = (&event["id"], &event["type"]);
            if !emu.deliveries.attempt(&body, 1, id, type_).await {
                actix_web::rt::spawn(retry(emu.clone(), event));
            }
        }
    }
}

/// Retries one event with doubling backoff until it is acknowledged.
async fn retry(emu: Arc<Emulator>, event: Value) {
    let body = event.to_string();
    let (id, type_) = (&event["id"], &event["type"]);
    let mut wait = RETRY_BASE;
    for attempt in 2..=DELIVERY_ATTEMPTS {
        actix_web::rt::time::sleep(wait).await;
        if emu.deliveries.attempt(&body, attempt, id, type_).await {
            return;
        }
        wait *= 2;
    }
    log::error!("emulator: gave up delivering {type_} {id}");
}

/// Fisher–Yates with the process's UUID randomness (no extra dependency).
pub(super) fn shuffle(events: &mut [Value]) {
    for i in (1..events.len()).rev() {
        let j = (uuid::Uuid::new_v4().as_u128() % (i as u128 + 1)) as usize;
        events.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffling_keeps_every_event_and_reaches_every_order() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut events: Vec<Value> = (0..3).map(Value::from).collect();
            shuffle(&mut events);
            let mut sorted = events.clone();
            sorted.sort_by_key(|v| v.as_i64());
            assert_eq!(sorted, (0..3).map(Value::from).collect::<Vec<_>>());
            seen.insert(events);
        }
        assert_eq!(seen.len(), 6, "all 3! orders appear in 200 shuffles");
    }
}
