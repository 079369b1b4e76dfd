//! The in-process cache of `GET /billing/status` answers, one per account,
//! invalidated by Postgres: what [`super::summary::of_user`] computed, kept
//! until something that answer is made of changes.
//!
//! **Invalidation.** Triggers (the `status_notify` migration) send
//! `NOTIFY billing_status, '<account>'` inside every transaction that changes
//! an account's email, name or customer, its subscriptions, its customer's
//! features, or (`*`) any price or product, so the notification exists
//! exactly when the change commits, whichever instance, command or operator
//! made it. Each instance listens on one dedicated connection (a thread of
//! its own, `application_name` `billing-portal status listener`) and drops
//! what is named.
//!
//! **The staleness bound, by construction.** Postgres delivers a listener
//! its notifications in commit order. The listener sends itself a heartbeat
//! (a notification on a channel only it listens to) every [`HEARTBEAT`];
//! when one comes back, every change committed before it was sent has been
//! processed. Answers are served only while the newest heartbeat processed
//! was sent less than [`FRESHNESS`] ago: a change committed anywhere is
//! never answered stale for longer than that, however loaded the machine,
//! however slow the connection. When the connection is lost (or stalls)
//! heartbeats stop coming back, the cache stops answering within
//! [`FRESHNESS`] and every request reads Postgres; a new connection empties
//! the cache before it answers again.
//!
//! **Fills never store the past.** A read registers before it queries
//! Postgres; a notification for its account that arrives before it stores
//! its answer marks it, and a marked read stores nothing (its snapshot may
//! predate the change). Emptying the whole cache starts a new epoch, and a
//! read of an older epoch stores nothing either.
//!
//! **Read your writes.** An instance that changes an account drops its
//! answer itself after the commit ([`super::Billing::forget_status`]), not
//! waiting for the notification; the few paths that do not know which
//! accounts they changed hold answers back until the listener has caught up
//! ([`StatusCache::wrote`]).
//!
//! **Time.** An answer that time alone will change (a past-due grace that
//! ends) is kept only until then, by the billing clock. Nothing else in an
//! answer depends on the time: a period end changes no answer until Stripe
//! says so, and that arrives as a change.
//!
//! **Memory.** At most `STATUS_CACHE_ENTRIES` answers, least recently read
//! dropped first, in a flat LRU map (no allocation per entry): the account key
//! inline up to 24 bytes, the parts many accounts share (status, plan,
//! features, …) interned once, times as seconds. About 100 bytes an account
//! (`scripts/bench --only status_cache` measures it).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use compact_str::CompactString;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use schnellru::{ByLength, LruMap};

use super::plans::Plan;
use super::status::Reason;
use super::summary::BillingSummary;
use crate::ids::AccountId;
use crate::metrics::{CacheRead, Metrics};

/// The channel the triggers notify (the `status_notify` migration).
pub const CHANNEL: &str = "billing_status";
/// How often the listener sends itself a heartbeat.
pub const HEARTBEAT: Duration = Duration::from_millis(20);
/// How old the newest processed heartbeat may be for answers to be served:
/// the bound on how stale an answer can be. Under the 100 ms, with
/// room for the heartbeat's own round trip.
pub const FRESHNESS: Duration = Duration::from_millis(80);
/// How often the listener reads what Postgres sent (diesel offers no way to
/// wait on the socket): the notification latency when idle.
const POLL: Duration = Duration::from_millis(2);
/// Notifications read at once after which the memory libpq took for them is
/// given back.
const BURST: usize = 1_000;
/// How long the listener waits before connecting again after a failure, at
/// most (doubling from 50 ms).
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The cache of one instance. `None` in [`super::Billing`] when
/// `STATUS_CACHE_ENTRIES` is 0 and for commands and tests built without it.
pub struct StatusCache {
    inner: Mutex<Inner>,
    /// Nanoseconds since `origin` before which answers may be served: the
    /// newest processed heartbeat's sending time plus [`FRESHNESS`]; 0 when
    /// not listening.
    fresh_until: AtomicU64,
    /// Nanoseconds since `origin` of the last [`StatusCache::wrote`]: answers
    /// are held back until a heartbeat sent after it is processed.
    wrote_at: AtomicU64,
    origin: Instant,
    hasher: RandomState,
    metrics: Arc<Metrics>,
}

struct Inner {
    answers: LruMap<CompactString, Cached, ByLength>,
    /// The parts of answers many accounts share, one copy each.
    shapes: HashSet<Arc<Shape>>,
    /// `shapes.len()` after the last pruning of unused ones.
    shapes_kept: usize,
    /// The reads in flight, by account.
    reading: HashMap<CompactString, Reading>,
    /// How many reads began so far: each read's number (`Fill::ticket`).
    fills: u64,
    /// Bumped whenever everything is dropped.
    epoch: u64,
}

#[derive(Default)]
struct Reading {
    readers: u32,
    /// Reads numbered below this began before a notification for the
    /// account arrived: they store nothing (later ones may).
    stale_below: u64,
}

/// One account's answer: 40 bytes beside its key.
struct Cached {
    shape: Arc<Shape>,
    /// A hash of the row's email: a token with another one is a miss (the
    /// row is brought up to date by the read).
    email: u64,
    /// `current_period_end`, `cancel_at`, `grace_ends_at`, `synced_at`, in
    /// seconds (the answer shows seconds).
    times: [Option<NonZeroU32>; 4],
    /// The billing-clock second from which time alone changes the answer.
    valid_until: Option<NonZeroU32>,
}

/// What an answer shares with other accounts' (all but its times).
#[derive(PartialEq, Eq, Hash)]
struct Shape {
    paid: bool,
    reason: Reason,
    status: Option<String>,
    price_id: Option<String>,
    product_id: Option<String>,
    cancel_at_period_end: bool,
    has_customer: bool,
    plan: Option<Plan>,
    /// An organisation's name: compared with the token's, never hashed.
    account_name: Option<String>,
    features: Vec<String>,
}

/// A read of one account's answer from Postgres, registered so that a
/// change notified meanwhile is not stored over ([`Fill::store`]).
pub(crate) struct Fill {
    cache: Arc<StatusCache>,
    key: CompactString,
    epoch: u64,
    /// This read's number, in the order reads began.
    ticket: u64,
    done: bool,
}

impl StatusCache {
    /// A cache of at most `capacity` answers and its listener thread on
    /// `database_url`; `None` for a capacity of 0 (`STATUS_CACHE_ENTRIES=0`).
    /// The thread ends when the cache is dropped.
    pub(crate) fn start(
        capacity: u32,
        database_url: String,
        metrics: Arc<Metrics>,
    ) -> Option<Arc<Self>> {
        let cache = Self::new(capacity, metrics)?;
        let weak = Arc::downgrade(&cache);
        let spawned = std::thread::Builder::new()
            .name("status-listener".into())
            .spawn(move || listen(weak, database_url));
        if let Err(e) = spawned {
            // Never listening: never fresh, every read goes to Postgres.
            log::error!(
                "status cache: cannot start its listener thread ({e}); status reads Postgres"
            );
        }
        Some(cache)
    }

    fn new(capacity: u32, metrics: Arc<Metrics>) -> Option<Arc<Self>> {
        (capacity > 0).then(|| {
            Arc::new(Self {
                inner: Mutex::new(Inner {
                    answers: LruMap::new(ByLength::new(capacity)),
                    shapes: HashSet::new(),
                    shapes_kept: 0,
                    reading: HashMap::new(),
                    fills: 0,
                    epoch: 0,
                }),
                fresh_until: AtomicU64::new(0),
                wrote_at: AtomicU64::new(0),
                origin: Instant::now(),
                hasher: RandomState::new(),
                metrics,
            })
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding it left a map that is still a map.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn since_origin(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether answers may be served now (see the module docs).
    fn fresh(&self) -> bool {
        self.since_origin(Instant::now()) < self.fresh_until.load(Ordering::Acquire)
    }

    /// The account's answer at `now` (billing clock), if cached, still true
    /// at `now`, for a token that knows the account as the row does.
    pub(crate) fn get(
        &self,
        account: &AccountId,
        email: Option<&str>,
        org_name: Option<&str>,
        now: DateTime<Utc>,
    ) -> Option<BillingSummary> {
        let email_hash = email.map(|e| self.hash(Some(e)));
        let found = {
            let mut inner = self.lock();
            // Checked under the lock, after any wait for it (`heard` and
            // `wrote` take it too): the answer is as fresh as this check.
            if !self.fresh() {
                drop(inner);
                self.metrics.status_cache_read(CacheRead::Bypass);
                return None;
            }
            inner.answers.get(account.as_str()).and_then(|c| {
                let valid = c
                    .valid_until
                    .is_none_or(|t| now.timestamp() < i64::from(t.get()));
                let known = email_hash.is_none_or(|h| h == c.email)
                    && (org_name.is_none() || c.shape.account_name.as_deref() == org_name);
                (valid && known).then(|| (c.shape.clone(), c.times))
            })
        };
        self.metrics.status_cache_read(match found {
            Some(_) => CacheRead::Hit,
            None => CacheRead::Miss,
        });
        // Built outside the lock: the clones are the costly part.
        found.map(|(shape, times)| shape.summary(times))
    }

    /// Registers a read of `account` from Postgres, to be stored with
    /// [`Fill::store`] (or dropped: nothing stored).
    pub(crate) fn fill(self: &Arc<Self>, account: &AccountId) -> Fill {
        let key = CompactString::from(account.as_str());
        let (epoch, ticket) = {
            let mut inner = self.lock();
            inner.reading.entry(key.clone()).or_default().readers += 1;
            inner.fills += 1;
            (inner.epoch, inner.fills)
        };
        Fill {
            cache: self.clone(),
            key,
            epoch,
            ticket,
            done: false,
        }
    }

    /// Drops `account`'s answer, and marks its reads in flight.
    pub(crate) fn forget(&self, account: &str) {
        let mut inner = self.lock();
        inner.answers.remove(account);
        let begun = inner.fills;
        if let Some(reading) = inner.reading.get_mut(account) {
            // Every read of it begun so far; one that begins after this reads
            // a snapshot that has the change.
            reading.stale_below = begun + 1;
        }
        self.metrics.status_cache_entries(inner.answers.len());
    }

    /// Drops every answer, and every read in flight stores nothing.
    pub(crate) fn forget_all(&self) {
        let mut inner = self.lock();
        inner.answers.clear();
        inner.shapes.clear();
        inner.shapes_kept = 0;
        inner.epoch += 1;
        self.metrics.status_cache_entries(0);
    }

    /// After a write whose accounts the writer does not know (a catch-up, a
    /// `customer.deleted`): answers are served again once the listener
    /// processed a heartbeat sent after now, so this instance reads its own
    /// write, whichever account it was.
    pub(crate) fn wrote(&self) {
        // Under the lock, as in `heard`: a heartbeat sent before this must
        // never raise `fresh_until` after it was lowered here.
        let _inner = self.lock();
        let now = self.since_origin(Instant::now());
        self.wrote_at.fetch_max(now, Ordering::AcqRel);
        // The heartbeat that proves the listener caught up is sent after
        // this; until it is processed, no answer is fresh.
        self.fresh_until.fetch_min(now, Ordering::AcqRel);
    }

    /// The listener processed the heartbeat it sent at `sent`.
    fn heard(&self, sent: Instant) {
        let _inner = self.lock();
        let sent = self.since_origin(sent);
        if sent < self.wrote_at.load(Ordering::Acquire) {
            return; // sent before a local write: says nothing about it
        }
        let until = sent.saturating_add(u64::try_from(FRESHNESS.as_nanos()).unwrap_or(u64::MAX));
        self.fresh_until.fetch_max(until, Ordering::AcqRel);
    }

    /// The listener is (again) connected and listening: what was cached
    /// before may have missed notifications.
    fn listening(&self) {
        self.forget_all();
        self.metrics.status_cache_listening(true);
    }

    /// The listener lost its connection: nothing is served until it is back.
    fn deaf(&self) {
        self.fresh_until.store(0, Ordering::Release);
        self.forget_all();
        self.metrics.status_cache_listening(false);
    }

    fn hash(&self, s: Option<&str>) -> u64 {
        self.hasher.hash_one(s)
    }

    fn store(
        &self,
        fill: &Fill,
        summary: &BillingSummary,
        email: Option<&str>,
        valid_until: Option<DateTime<Utc>>,
    ) {
        let cached = Cached::of(summary, self.hash(email), valid_until);
        let mut inner = self.lock();
        let inner = &mut *inner;
        let current = inner.end(fill);
        let Some((shape, email, times, valid_until)) = cached else {
            return; // a time outside what is stored compactly: not cached
        };
        if !current {
            return;
        }
        let shape = match inner.shapes.get(&shape) {
            Some(known) => known.clone(),
            None => {
                let shape = Arc::new(shape);
                inner.shapes.insert(shape.clone());
                shape
            }
        };
        let full = inner.answers.len() >= inner.answers.limiter().max_length() as usize;
        let evicts = full && inner.answers.peek(fill.key.as_str()).is_none();
        inner.answers.insert(
            fill.key.clone(),
            Cached {
                shape,
                email,
                times,
                valid_until,
            },
        );
        if evicts {
            self.metrics.status_cache_evicted();
        }
        // Shapes no answer holds any more (evicted, dropped) go once their
        // number has doubled since the last pruning: amortised O(1).
        if inner.shapes.len() > 2 * inner.shapes_kept + 64 {
            inner.shapes.retain(|s| Arc::strong_count(s) > 1);
            inner.shapes_kept = inner.shapes.len();
        }
        self.metrics.status_cache_entries(inner.answers.len());
    }

    #[cfg(test)]
    fn shapes(&self) -> usize {
        self.lock().shapes.len()
    }
}

impl Inner {
    /// Ends `fill`'s read: whether what it read is still current (no
    /// notification for its account since it began, nothing emptied).
    fn end(&mut self, fill: &Fill) -> bool {
        let Some(reading) = self.reading.get_mut(fill.key.as_str()) else {
            return false;
        };
        reading.readers -= 1;
        let stale = fill.ticket < reading.stale_below;
        if reading.readers == 0 {
            self.reading.remove(fill.key.as_str());
        }
        !stale && fill.epoch == self.epoch
    }
}

impl Fill {
    /// Stores the answer read, unless the account changed (or everything
    /// was dropped) since [`StatusCache::fill`]. `email` is the row's; the
    /// answer is true until `valid_until` (billing clock), or until a change
    /// when `None`.
    pub(crate) fn store(
        mut self,
        summary: &BillingSummary,
        email: Option<&str>,
        valid_until: Option<DateTime<Utc>>,
    ) {
        self.done = true;
        self.cache.store(&self, summary, email, valid_until);
    }
}

impl Drop for Fill {
    /// A read abandoned (an error, a cancelled request) stores nothing.
    fn drop(&mut self) {
        if !self.done {
            self.cache.lock().end(self);
        }
    }
}

/// A time in whole seconds, if it fits (1970 to 2106); `Err` if not.
fn secs(t: Option<DateTime<Utc>>) -> Result<Option<NonZeroU32>, ()> {
    match t {
        None => Ok(None),
        Some(t) => u32::try_from(t.timestamp())
            .ok()
            .and_then(NonZeroU32::new)
            .map(Some)
            .ok_or(()),
    }
}

fn time(t: Option<NonZeroU32>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(i64::from(t.get()), 0))
}

type CachedParts = (Shape, u64, [Option<NonZeroU32>; 4], Option<NonZeroU32>);

impl Cached {
    fn of(
        s: &BillingSummary,
        email: u64,
        valid_until: Option<DateTime<Utc>>,
    ) -> Option<CachedParts> {
        let times = [
            secs(s.current_period_end).ok()?,
            secs(s.cancel_at).ok()?,
            secs(s.grace_ends_at).ok()?,
            secs(s.synced_at).ok()?,
        ];
        // Rounded down: the answer is dropped at or before the second it changes.
        let valid_until = secs(valid_until).ok()?;
        let shape = Shape {
            paid: s.paid,
            reason: s.reason,
            status: s.status.clone(),
            price_id: s.price_id.clone(),
            product_id: s.product_id.clone(),
            cancel_at_period_end: s.cancel_at_period_end,
            has_customer: s.has_customer,
            plan: s.plan.clone(),
            account_name: s.account_name.clone(),
            features: s.features.clone(),
        };
        Some((shape, email, times, valid_until))
    }
}

impl Shape {
    fn summary(
        &self,
        [period_end, cancel_at, grace, synced]: [Option<NonZeroU32>; 4],
    ) -> BillingSummary {
        BillingSummary {
            paid: self.paid,
            reason: self.reason,
            status: self.status.clone(),
            price_id: self.price_id.clone(),
            product_id: self.product_id.clone(),
            current_period_end: time(period_end),
            cancel_at_period_end: self.cancel_at_period_end,
            cancel_at: time(cancel_at),
            grace_ends_at: time(grace),
            synced_at: time(synced),
            plan: self.plan.clone(),
            has_customer: self.has_customer,
            account_name: self.account_name.clone(),
            features: self.features.clone(),
        }
    }
}

// ------------------------------------------------------------------ listener

/// The listener thread: connects, listens, and keeps connecting again after
/// failures (backing off up to [`MAX_BACKOFF`]) until the cache is dropped.
fn listen(cache: Weak<StatusCache>, url: String) {
    let mut backoff = Duration::from_millis(50);
    let mut failing = false;
    loop {
        match session(&cache, &url, &mut backoff, &mut failing) {
            // The cache was dropped: the thread ends.
            Ok(()) => return,
            Err(e) => {
                let Some(c) = cache.upgrade() else { return };
                c.deaf();
                if !failing {
                    // The error is libpq's or the server's: never the URL.
                    log::warn!(
                        "status cache: lost its Postgres listening connection ({e}); status \
                         reads Postgres until it is back"
                    );
                    failing = true;
                }
            }
        }
        // Still failing: said once above, not once a second.
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection's life: `Ok` once the cache is dropped, `Err` when the
/// connection fails. Resets `backoff` once listening.
fn session(
    cache: &Weak<StatusCache>,
    url: &str,
    backoff: &mut Duration,
    failing: &mut bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = PgConnection::establish(url)?;
    conn.batch_execute(&format!(
        "SET application_name = 'billing-portal status listener'; LISTEN {CHANNEL}"
    ))?;
    let pid: i32 =
        diesel::select(diesel::dsl::sql::<Integer>("pg_backend_pid()")).get_result(&mut conn)?;
    // Heartbeats on a channel of this connection's own: no other instance
    // hears them.
    let beats = format!("{CHANNEL}_beat_{pid}");
    conn.batch_execute(&format!("LISTEN {beats}"))?;
    match cache.upgrade() {
        Some(c) => c.listening(),
        None => return Ok(()),
    }
    match std::mem::take(failing) {
        true => log::warn!("status cache: listening on {CHANNEL} again"),
        false => log::info!("status cache: listening on {CHANNEL}"),
    }
    *backoff = Duration::from_millis(50);
    let mut seq: u64 = 0;
    let mut sent: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut next_beat = Instant::now();
    loop {
        let Some(c) = cache.upgrade() else {
            return Ok(());
        };
        let now = Instant::now();
        if now >= next_beat {
            diesel::sql_query("SELECT pg_notify($1, $2)")
                .bind::<Text, _>(&beats)
                .bind::<Text, _>(seq.to_string())
                .execute(&mut conn)?;
            sent.push_back((seq, now));
            // Heartbeats that never came back are not waited for forever.
            if sent.len() > 256 {
                sent.pop_front();
            }
            seq += 1;
            next_beat = now + HEARTBEAT;
        }
        let mut heard = 0_usize;
        for notification in conn.notifications_iter() {
            let notification = notification?;
            heard += 1;
            if notification.channel == beats {
                let Ok(beat) = notification.payload.parse::<u64>() else {
                    continue;
                };
                while let Some(&(n, at)) = sent.front() {
                    if n > beat {
                        break;
                    }
                    sent.pop_front();
                    if n == beat {
                        c.heard(at);
                    }
                }
            } else if notification.payload == "*" {
                c.forget_all();
            } else {
                c.forget(&notification.payload);
            }
        }
        drop(c);
        if heard >= BURST {
            // libpq queued each one (a bulk change: a `sync`, a migration):
            // megabytes the allocator would otherwise keep.
            crate::memory::give_back();
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::plans::Plan;

    const NOW: i64 = 1_800_000_000;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn account(id: &str) -> AccountId {
        AccountId::parse(id).unwrap()
    }

    fn paid() -> BillingSummary {
        BillingSummary {
            paid: true,
            reason: Reason::Active,
            status: Some("active".into()),
            price_id: Some("price_pro".into()),
            product_id: Some("prod_pro".into()),
            current_period_end: Some(at(NOW + 86_400)),
            cancel_at_period_end: false,
            cancel_at: None,
            grace_ends_at: None,
            synced_at: Some(at(NOW - 60)),
            plan: Some(Plan {
                name: Some("Pro".into()),
                amount: Some(1900),
                currency: Some("usd".into()),
                interval: Some("month".into()),
                interval_count: Some(1),
            }),
            has_customer: true,
            account_name: None,
            features: vec!["api".into(), "exports".into()],
        }
    }

    /// An hour from now: a heartbeat "sent" then keeps answers fresh for the
    /// whole test, however slowly it runs.
    fn later() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    /// A cache whose listener heard a heartbeat that keeps it fresh.
    fn listening(capacity: u32) -> (Arc<StatusCache>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let cache = StatusCache::new(capacity, metrics.clone()).unwrap();
        cache.heard(later());
        (cache, metrics)
    }

    fn store(cache: &Arc<StatusCache>, id: &str, summary: &BillingSummary) {
        cache
            .fill(&account(id))
            .store(summary, Some("a@example.com"), None);
    }

    fn get(cache: &StatusCache, id: &str) -> Option<BillingSummary> {
        cache.get(&account(id), Some("a@example.com"), None, at(NOW))
    }

    #[test]
    fn a_stored_answer_is_served_as_it_was_computed() {
        let (cache, metrics) = listening(10);
        store(&cache, "u1", &paid());

        assert_eq!(get(&cache, "u1"), Some(paid()));
        assert_eq!(get(&cache, "u2"), None);
        let text = metrics.render();
        assert!(
            text.contains("billing_portal_status_cache_reads_total{outcome=\"hit\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("billing_portal_status_cache_reads_total{outcome=\"miss\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("billing_portal_status_cache_entries 1"),
            "{text}"
        );
    }

    #[test]
    fn nothing_is_served_without_a_recent_heartbeat() {
        let metrics = Arc::new(Metrics::new());
        let cache = StatusCache::new(10, metrics.clone()).unwrap();
        store(&cache, "u1", &paid());
        assert_eq!(get(&cache, "u1"), None, "never heard: not listening");

        // A heartbeat sent FRESHNESS ago (the cache is older than that; a
        // slower machine only makes it older).
        std::thread::sleep(FRESHNESS);
        cache.heard(Instant::now() - FRESHNESS);
        assert_eq!(
            get(&cache, "u1"),
            None,
            "a heartbeat sent FRESHNESS ago is too old"
        );
        cache.heard(later());
        assert!(get(&cache, "u1").is_some());
        let text = metrics.render();
        assert!(text.contains("billing_portal_status_cache_reads_total{outcome=\"bypass\"} 2"));
        assert!(text.contains("billing_portal_status_cache_reads_total{outcome=\"hit\"} 1"));
    }

    #[test]
    fn a_change_notified_during_a_read_is_not_stored_over() {
        let (cache, _) = listening(10);
        let fill = cache.fill(&account("u1"));
        cache.forget("u1"); // the notification of a change committed after the read's snapshot
        fill.store(&paid(), Some("a@example.com"), None);

        assert_eq!(get(&cache, "u1"), None);
        // The next read stores.
        store(&cache, "u1", &paid());
        assert_eq!(get(&cache, "u1"), Some(paid()));
    }

    #[test]
    fn a_read_that_began_after_the_notification_stores_though_an_older_one_is_in_flight() {
        let (cache, _) = listening(10);
        let old = cache.fill(&account("u1"));
        cache.forget("u1");
        store(&cache, "u1", &paid()); // began after the change: its snapshot has it

        assert_eq!(get(&cache, "u1"), Some(paid()));
        let mut before = paid();
        before.status = Some("past_due".into());
        old.store(&before, Some("a@example.com"), None);
        assert_eq!(
            get(&cache, "u1"),
            Some(paid()),
            "the older read stored nothing"
        );
    }

    #[test]
    fn a_read_that_began_before_everything_was_dropped_stores_nothing() {
        let (cache, _) = listening(10);
        let fill = cache.fill(&account("u1"));
        cache.forget_all();
        fill.store(&paid(), Some("a@example.com"), None);

        assert_eq!(get(&cache, "u1"), None);
    }

    #[test]
    fn an_abandoned_read_leaves_nothing_in_flight() {
        let (cache, _) = listening(10);
        drop(cache.fill(&account("u1")));
        assert!(cache.lock().reading.is_empty());
        store(&cache, "u1", &paid());
        assert!(cache.lock().reading.is_empty());
    }

    #[test]
    fn an_answer_that_time_changes_is_served_only_until_then() {
        let (cache, _) = listening(10);
        let mut grace = paid();
        grace.reason = Reason::PastDueInGrace;
        grace.grace_ends_at = Some(at(NOW + 10));
        cache
            .fill(&account("u1"))
            .store(&grace, Some("a@example.com"), Some(at(NOW + 10)));

        let read = |secs| cache.get(&account("u1"), None, None, at(secs));
        assert_eq!(read(NOW + 9), Some(grace.clone()));
        assert_eq!(read(NOW + 10), None, "the grace ends at NOW + 10");
    }

    #[test]
    fn a_token_with_another_email_or_organisation_name_reads_postgres() {
        let (cache, _) = listening(10);
        store(&cache, "u1", &paid());
        assert_eq!(
            cache.get(&account("u1"), Some("new@example.com"), None, at(NOW)),
            None
        );

        let mut org = paid();
        org.account_name = Some("Acme".into());
        cache.fill(&account("org:acme")).store(&org, None, None);
        let read = |name| cache.get(&account("org:acme"), None, name, at(NOW));
        assert_eq!(read(Some("Acme")), Some(org.clone()));
        assert_eq!(read(None), Some(org));
        assert_eq!(read(Some("Acme Inc.")), None);
    }

    #[test]
    fn the_least_recently_read_answer_goes_first_and_is_counted() {
        let (cache, metrics) = listening(2);
        store(&cache, "u1", &paid());
        store(&cache, "u2", &paid());
        get(&cache, "u1");
        store(&cache, "u3", &paid());

        assert!(get(&cache, "u1").is_some());
        assert!(get(&cache, "u2").is_none(), "u2 was read least recently");
        assert!(get(&cache, "u3").is_some());
        assert!(metrics
            .render()
            .contains("billing_portal_status_cache_evictions_total 1"));
    }

    #[test]
    fn after_a_local_write_answers_wait_for_a_heartbeat_sent_after_it() {
        let (cache, _) = listening(10);
        store(&cache, "u1", &paid());
        let before = Instant::now();
        cache.wrote();

        assert_eq!(get(&cache, "u1"), None);
        cache.heard(before);
        assert_eq!(get(&cache, "u1"), None, "sent before the write");
        cache.heard(later());
        assert_eq!(get(&cache, "u1"), Some(paid()));
    }

    #[test]
    fn accounts_with_the_same_plan_share_one_copy_of_it() {
        let (cache, _) = listening(1000);
        for n in 0..1000 {
            let mut s = paid();
            s.current_period_end = Some(at(NOW + n));
            store(&cache, &format!("u{n}"), &s);
        }
        assert_eq!(cache.shapes(), 1);
        let mut s = paid();
        s.current_period_end = Some(at(NOW + 7));
        assert_eq!(get(&cache, "u7"), Some(s));
    }

    #[test]
    fn an_answer_with_a_time_beyond_2106_is_not_kept() {
        let (cache, _) = listening(10);
        let mut far = paid();
        far.current_period_end = Some(at(5_000_000_000));
        store(&cache, "u1", &far);
        assert_eq!(get(&cache, "u1"), None);
    }

    #[test]
    fn an_answer_and_its_key_fit_in_64_bytes_so_100_000_accounts_stay_under_10_mb() {
        // Key (inline up to 24 bytes) + answer + the LRU's two 32-bit links.
        assert_eq!(
            std::mem::size_of::<CompactString>() + std::mem::size_of::<Cached>(),
            64
        );
    }
}
