//! The outbox worker: delivers queued notifications, at least once.
//!
//! Everything sent goes through the `outbox` table first ([`Outbox::push`] commits before it
//! returns), so a notification decided on survives `kill -9`. The worker takes what is due,
//! sends each with its notifier's receiver, and records the result: delivered; failed (tried
//! again after an exponential backoff with jitter; each notifier's queue is first in, first
//! out, so everything behind it waits too: a receiver that is down is not hammered, and a
//! resolve never overtakes its trigger); or
//! dropped (older than `[notifications] max_age`, rejected by the receiver, or for a notifier
//! that a reload removed). A crash between a send and its bookkeeping re-sends it: receivers
//! deduplicate on the notification's `id` / `dedup_key`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Notification, Receiver};
use crate::config::NotificationsConfig;
use crate::metrics::Metrics;
use crate::runtime::Redactor;
use crate::store::{OutboxItem, Queued, Store, StoreError};
use crate::util::unix_millis;

/// How many due notifications one round takes.
const BATCH: usize = 256;

/// The longest the worker sleeps without looking (a push wakes it sooner).
const IDLE: Duration = Duration::from_secs(1);

/// The queue side, shared by whoever decides to notify.
pub struct Outbox {
    store: Store,
    wake: Notify,
    metrics: Arc<Metrics>,
    notifiers: Vec<String>,
}

impl Outbox {
    pub fn new(store: Store, metrics: Arc<Metrics>, notifiers: Vec<String>) -> Arc<Outbox> {
        for n in &notifiers {
            for result in ["sent", "failed", "dropped"] {
                metrics.notifications_total.with_label_values(&[n, result]);
            }
            metrics
                .notification_queue_depth
                .with_label_values(&[n])
                .set(0.0);
        }
        Arc::new(Outbox {
            store,
            wake: Notify::new(),
            metrics,
            notifiers,
        })
    }

    /// `n` for `notifier` as the store queues it, for a write that queues notifications in
    /// its own transaction (call [`Outbox::wake`] once it committed).
    pub fn queued(notifier: &str, n: &Notification) -> Result<Queued, StoreError> {
        Ok(Queued {
            notifier: notifier.to_string(),
            dedup_key: n.dedup_key.clone(),
            payload: serde_json::to_string(n)?,
        })
    }

    /// Tells the worker that something was queued.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Queues `n` for `notifier` (committed when this returns) and wakes the worker.
    pub async fn push(&self, notifier: &str, n: &Notification) -> Result<(), StoreError> {
        let payload = serde_json::to_value(n)?;
        self.store
            .outbox_push(notifier, &n.dedup_key, &payload)
            .await?;
        self.wake.notify_one();
        Ok(())
    }

    async fn refresh_depth(&self) {
        match self.store.outbox_depth().await {
            Ok(depths) => {
                let depths: BTreeMap<String, u64> = depths.into_iter().collect();
                for n in &self.notifiers {
                    let d = depths.get(n).copied().unwrap_or(0);
                    self.metrics
                        .notification_queue_depth
                        .with_label_values(&[n])
                        .set(d as f64);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the outbox depth"),
        }
    }
}

/// Delivery settings and receivers, by notifier name.
pub struct Delivery {
    pub receivers: BTreeMap<String, Arc<Receiver>>,
    pub policy: NotificationsConfig,
    pub redactor: Redactor,
}

/// The backoff before retry number `attempt` (1-based): `initial × 2^(attempt-1)` capped at
/// `max`, then a random factor in [0.5, 1.0] ("equal jitter"), so many notifications failing
/// together do not retry together, and none waits longer than the cap.
pub fn backoff(policy: &NotificationsConfig, attempt: u32, unit_random: f64) -> Duration {
    let exp = policy
        .retry_initial
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(30)));
    let capped = exp.min(policy.retry_max);
    capped.mul_f64(0.5 + 0.5 * unit_random.clamp(0.0, 1.0))
}

/// Runs until `shutdown`, delivering what is due.
pub async fn run(outbox: Arc<Outbox>, delivery: Delivery, shutdown: CancellationToken) {
    loop {
        outbox.refresh_depth().await;
        // Stopping abandons a send in progress: it stays queued and goes out after restart.
        let next = tokio::select! {
            r = round(&outbox, &delivery, &shutdown) => r,
            _ = shutdown.cancelled() => return,
        };
        let sleep = match next {
            Ok(()) => match outbox.store.outbox_next_due().await {
                Ok(Some(due)) => {
                    let now = unix_millis(SystemTime::now());
                    Duration::from_millis(due.saturating_sub(now)).min(IDLE)
                }
                Ok(None) => IDLE,
                Err(_) => IDLE,
            },
            Err(e) => {
                tracing::warn!(error = %e, "outbox: cannot read or update the queue");
                IDLE
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = outbox.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// One pass over what is due: each notifier's items in order, notifiers side by side.
async fn round(
    outbox: &Outbox,
    delivery: &Delivery,
    shutdown: &CancellationToken,
) -> Result<(), StoreError> {
    let now = SystemTime::now();
    let due = outbox.store.outbox_due(unix_millis(now), BATCH).await?;
    if due.is_empty() {
        return Ok(());
    }
    let mut by_notifier: BTreeMap<String, Vec<OutboxItem>> = BTreeMap::new();
    for item in due {
        by_notifier
            .entry(item.notifier.clone())
            .or_default()
            .push(item);
    }
    let lanes = by_notifier
        .into_iter()
        .map(|(name, items)| lane(outbox, delivery, name, items, shutdown));
    for r in futures_util::future::join_all(lanes).await {
        r?;
    }
    Ok(())
}

/// One notifier's due items, in order; stops at the first that must be retried.
async fn lane(
    outbox: &Outbox,
    delivery: &Delivery,
    notifier: String,
    items: Vec<OutboxItem>,
    shutdown: &CancellationToken,
) -> Result<(), StoreError> {
    let store = &outbox.store;
    let count = |result: &str| {
        outbox
            .metrics
            .notifications_total
            .with_label_values(&[&notifier, result])
            .inc();
    };
    let max_age_ms = delivery.policy.max_age.as_millis() as u64;
    for item in items {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let now_ms = unix_millis(SystemTime::now());
        let Some(receiver) = delivery.receivers.get(&notifier) else {
            store
                .outbox_mark_dropped(item.id, "no such notifier any more")
                .await?;
            tracing::warn!(notifier = %notifier, id = item.id, "notification dropped: its notifier is no longer configured");
            count("dropped");
            continue;
        };
        if now_ms.saturating_sub(item.created_at_ms) > max_age_ms {
            let why = format!(
                "not delivered within max_age {} (last error: {})",
                humantime::format_duration(delivery.policy.max_age),
                item.last_error.as_deref().unwrap_or("none")
            );
            store.outbox_mark_dropped(item.id, &why).await?;
            tracing::warn!(notifier = %notifier, dedup_key = %item.dedup_key, attempts = item.attempts, "notification dropped: older than max_age");
            count("dropped");
            continue;
        }
        let n: Notification = match serde_json::from_value(item.payload.clone()) {
            Ok(n) => n,
            Err(e) => {
                store
                    .outbox_mark_dropped(item.id, &format!("unreadable payload: {e}"))
                    .await?;
                count("dropped");
                continue;
            }
        };
        let reference = store.receiver_ref(&notifier, &item.dedup_key).await?;
        match receiver.send(&n, reference.as_deref()).await {
            Ok(sent) => {
                store
                    .outbox_delivered_with_ref(item.id, sent.reference)
                    .await?;
                tracing::info!(notifier = %notifier, kind = receiver.type_name(), title = %n.title(), attempts = item.attempts + 1, "notification sent");
                count("sent");
            }
            Err(e) => {
                let mut message = e.message.clone();
                delivery.redactor.scrub(&mut message);
                if !e.retry {
                    store
                        .outbox_mark_dropped(item.id, &format!("rejected: {message}"))
                        .await?;
                    tracing::warn!(notifier = %notifier, title = %n.title(), error = %message, "notification rejected by its receiver; dropped");
                    count("dropped");
                    continue;
                }
                let wait = backoff(&delivery.policy, item.attempts + 1, rand::random::<f64>());
                let until = unix_millis(SystemTime::now()) + wait.as_millis() as u64;
                // The queue behind it waits for it (first in, first out).
                store.outbox_mark_failed(item.id, until, &message).await?;
                tracing::warn!(notifier = %notifier, title = %n.title(), error = %message, attempt = item.attempts + 1, retry_in = %humantime::format_duration(Duration::from_millis(wait.as_millis() as u64)), "notification failed; will retry");
                count("failed");
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> NotificationsConfig {
        NotificationsConfig {
            max_age: Duration::from_secs(3600),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_the_cap() {
        let p = policy();
        // Top of the jitter range: the plain exponential.
        assert_eq!(backoff(&p, 1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(&p, 2, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(&p, 5, 1.0), Duration::from_secs(16));
        assert_eq!(backoff(&p, 7, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(&p, 1000, 1.0), Duration::from_secs(60));
        // Bottom: half of it, never less.
        assert_eq!(backoff(&p, 2, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(&p, 1000, 0.0), Duration::from_secs(30));
        for r in [0.0, 0.3, 0.99, 1.0] {
            let d = backoff(&p, 3, r);
            assert!(
                d >= Duration::from_secs(2) && d <= Duration::from_secs(4),
                "{d:?}"
            );
        }
    }
}
