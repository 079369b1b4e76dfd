//! The emulated account in Postgres, in the emulator's own schema
//! (`stripe_emulator`) of the service's database, so it survives a restart
//! and every instance on that database shares it: `cargo run` twice in a row
//! continues the demo where it was.
//!
//! - `stripe_emulator.account`: one row, the account's [`State`] as one
//!   JSONB document (customers, subscriptions, invoices, sessions, settings,
//!   idempotency keys), the test clock's offset, a `version` every write
//!   moves and a `generation` that only a reset moves.
//! - `stripe_emulator.events`: one row per event (`seq` in the order they
//!   were emitted), what `GET /v1/events` lists; those older than the Events
//!   API reaches (30 days on the test clock) are deleted as operations are
//!   written.
//!
//! The emulator creates both when it starts (`CREATE … IF NOT EXISTS`, under
//! an advisory lock, so instances starting together do not collide): the
//! schema is not one of the service's migrations, since a production build has
//! no emulator. An operation locks the row (`FOR UPDATE`), so operations of all
//! instances take turns; each instance keeps the account in memory and reads
//! only what changed since (nothing, when the version is the one it wrote).
//! A whole document per write is the simple choice for a development
//! stand-in; the events, most of its bytes, are kept apart, so a write costs
//! the account's objects only.
//!
//! Webhook deliveries still pending when a process stops are lost, as
//! deliveries to an endpoint that is down are: the events stay listed, and
//! the service's start-up catch-up applies them.

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::result::Error as DieselError;
use diesel::sql_types::{Array, BigInt, Nullable, Text};
use diesel::{QueryableByName, RunQueryDsl};

use super::model::State;
use crate::config::DatabaseSettings;
use crate::db::{self, DbError, OpenTransaction, PgPool};

/// The emulator's schema in the service's database.
pub const SCHEMA: &str = "stripe_emulator";

/// Connections of the emulator's own pool: operations take turns on the
/// account anyway; a second lets a page read while an operation writes.
const POOL_SIZE: u32 = 2;

/// Creates the schema and tables when missing, and the account's row. An
/// advisory lock in the two-key space (the service's own locks use the
/// one-key space, which never meets it) keeps instances starting together
/// from racing on `CREATE … IF NOT EXISTS`.
const CREATE: &str = "
    SELECT pg_advisory_xact_lock(1414681684, 1);
    CREATE SCHEMA IF NOT EXISTS stripe_emulator;
    CREATE TABLE IF NOT EXISTS stripe_emulator.account (
        id                BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
        generation        BIGINT NOT NULL DEFAULT 1,
        version           BIGINT NOT NULL DEFAULT 0,
        last_event        BIGINT NOT NULL DEFAULT 0,
        clock_offset_secs BIGINT NOT NULL DEFAULT 0,
        state             JSONB NOT NULL DEFAULT '{}',
        updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS stripe_emulator.events (
        seq     BIGINT PRIMARY KEY,
        created BIGINT NOT NULL,
        body    JSONB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS events_created ON stripe_emulator.events (created);
    INSERT INTO stripe_emulator.account (id) VALUES (TRUE) ON CONFLICT DO NOTHING;
";

/// What an instance's copy of the account reflects of the stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    pub(super) generation: i64,
    pub(super) version: i64,
    /// The `seq` of the newest event it holds.
    pub(super) last_event: i64,
}

/// What a read brings back, given what the reader already had.
#[derive(Debug)]
pub(super) struct Snapshot {
    pub(super) seen: Seen,
    pub(super) clock_offset_secs: i64,
    /// The stored document, unless the reader's copy is this very version.
    pub(super) state: Option<String>,
    /// The events after the reader's newest (JSON array), or all of them
    /// when `all_events`; `None` with `state`.
    pub(super) events: Option<String>,
    pub(super) all_events: bool,
}

/// One operation's writes.
pub(super) struct Write {
    pub(super) state: String,
    pub(super) clock_offset_secs: i64,
    /// (created, JSON) of the events it emitted, in order.
    pub(super) events: Vec<(i64, String)>,
    /// Events created before this are deleted (the Events API's reach).
    pub(super) oldest_kept: i64,
}

#[derive(QueryableByName)]
struct AccountRow {
    #[diesel(sql_type = BigInt)]
    generation: i64,
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = BigInt)]
    last_event: i64,
    #[diesel(sql_type = BigInt)]
    clock_offset_secs: i64,
    #[diesel(sql_type = Nullable<Text>)]
    state: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    events: Option<String>,
}

#[derive(QueryableByName)]
struct Events {
    #[diesel(sql_type = Text)]
    events: String,
}

/// The account's row, with the document unless `seen` is its version, and
/// (unless `locking`) the events `seen` lacks, in one statement and so one
/// snapshot. A locking read takes the row lock first and reads the events in
/// a second statement: in `READ COMMITTED` that one sees everything committed
/// before the lock was granted, where a subquery of the locking statement
/// would still see its older snapshot.
fn fetch(
    conn: &mut PgConnection,
    seen: Option<Seen>,
    locking: bool,
) -> Result<Snapshot, DieselError> {
    let (generation, version, after) =
        seen.map_or((0, -1, 0), |s| (s.generation, s.version, s.last_event));
    let same = "a.generation = $1 AND a.version = $2";
    let events = if locking {
        "NULL::text".to_string()
    } else {
        format!(
            "CASE WHEN {same} THEN NULL ELSE \
               (SELECT coalesce(json_agg(e.body ORDER BY e.seq), '[]')::text \
                FROM stripe_emulator.events e \
                WHERE e.seq > CASE WHEN a.generation = $1 THEN $3 ELSE 0 END) END"
        )
    };
    let row: AccountRow = diesel::sql_query(format!(
        "SELECT a.generation, a.version, a.last_event, a.clock_offset_secs, \
                CASE WHEN {same} THEN NULL ELSE a.state::text END AS state, \
                {events} AS events \
         FROM stripe_emulator.account a {}",
        if locking { "FOR UPDATE" } else { "" }
    ))
    .bind::<BigInt, _>(generation)
    .bind::<BigInt, _>(version)
    .bind::<BigInt, _>(after)
    .get_result(conn)?;
    let all_events = row.generation != generation;
    let mut events = row.events;
    if locking && row.state.is_some() {
        let from = if all_events { 0 } else { after };
        events = Some(
            diesel::sql_query(
                "SELECT coalesce(json_agg(body ORDER BY seq), '[]')::text AS events \
                 FROM stripe_emulator.events WHERE seq > $1",
            )
            .bind::<BigInt, _>(from)
            .get_result::<Events>(conn)?
            .events,
        );
    }
    Ok(Snapshot {
        seen: Seen {
            generation: row.generation,
            version: row.version,
            last_event: row.last_event,
        },
        clock_offset_secs: row.clock_offset_secs,
        state: row.state,
        events,
        all_events,
    })
}

#[derive(QueryableByName)]
struct Written {
    #[diesel(sql_type = BigInt)]
    generation: i64,
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = BigInt)]
    last_event: i64,
}

/// Stores one operation, in one statement: its events, the deletion of those
/// the Events API no longer reaches, and the document. The row is locked:
/// `after` is the newest event's `seq`, so this operation's follow it.
fn write(conn: &mut PgConnection, after: i64, w: &Write) -> Result<Seen, DieselError> {
    let count = i64::try_from(w.events.len()).unwrap_or(i64::MAX);
    let seqs: Vec<i64> = (1..=count).map(|i| after + i).collect();
    let created: Vec<i64> = w.events.iter().map(|(at, _)| *at).collect();
    let bodies: Vec<&str> = w.events.iter().map(|(_, body)| body.as_str()).collect();
    let written: Written = diesel::sql_query(
        "WITH added AS ( \
             INSERT INTO stripe_emulator.events (seq, created, body) \
             SELECT s, c, b::jsonb FROM unnest($4::bigint[], $5::bigint[], $6::text[]) AS t(s, c, b) \
         ), dropped AS ( \
             DELETE FROM stripe_emulator.events WHERE created < $7 \
         ) \
         UPDATE stripe_emulator.account \
         SET state = $1::jsonb, version = version + 1, last_event = $2, \
             clock_offset_secs = GREATEST(clock_offset_secs, $3), updated_at = now() \
         RETURNING generation, version, last_event",
    )
    .bind::<Text, _>(&w.state)
    .bind::<BigInt, _>(after + count)
    .bind::<BigInt, _>(w.clock_offset_secs)
    .bind::<Array<BigInt>, _>(&seqs)
    .bind::<Array<BigInt>, _>(&created)
    .bind::<Array<Text>, _>(&bodies)
    .bind::<BigInt, _>(w.oldest_kept)
    .get_result(conn)?;
    Ok(Seen {
        generation: written.generation,
        version: written.version,
        last_event: written.last_event,
    })
}

/// The emulator's connections to the service's database.
pub(super) struct Store {
    pool: PgPool,
}

impl Store {
    /// Creates the database if missing (the emulator starts before the
    /// service prepares it), then the schema, and reads the whole account.
    /// Blocking: at start-up, on the blocking thread pool.
    pub(super) fn open(settings: &DatabaseSettings) -> anyhow::Result<(Self, Snapshot)> {
        let mut conn = db::connect_creating_if_missing(settings)?;
        let snapshot = diesel::Connection::transaction(&mut conn, |conn| {
            conn.batch_execute(CREATE)?;
            fetch(conn, None, false)
        })
        .map_err(|e| anyhow::anyhow!("cannot prepare the emulator's schema {SCHEMA}: {e}"))?;
        let pool = db::build_small_pool(settings, POOL_SIZE)?;
        Ok((Self { pool }, snapshot))
    }

    /// What changed since `seen` (everything, for `None`), without a lock.
    pub(super) async fn read(&self, seen: Option<Seen>) -> Result<Snapshot, DbError> {
        db::run(&self.pool, move |conn| fetch(conn, seen, false)).await
    }

    /// Begins an operation: locks the account (other instances' operations
    /// wait) and reads what changed since `seen`.
    pub(super) async fn lock(
        &self,
        seen: Option<Seen>,
    ) -> Result<(OpenTransaction, Snapshot), DbError> {
        OpenTransaction::begin_with(&self.pool, move |conn| {
            // A development stand-in's writes need not wait for the disk:
            // a crash of Postgres itself (not of the service) may lose the
            // last few, as a restart of the service never does.
            conn.batch_execute("SET LOCAL synchronous_commit = off")?;
            fetch(conn, seen, true)
        })
        .await
    }

    /// Writes the operation begun by [`Store::lock`] and commits it.
    pub(super) async fn commit(
        &self,
        tx: OpenTransaction,
        after: i64,
        w: Write,
    ) -> Result<Seen, DbError> {
        tx.commit_with(move |conn| write(conn, after, &w)).await
    }

    /// Ends an operation that changed nothing, letting go of the lock.
    pub(super) async fn release(&self, tx: OpenTransaction) -> Result<(), DbError> {
        tx.rollback().await
    }
}

/// What [`reset`] removed.
#[derive(Debug, Clone, Default)]
pub struct Cleared {
    pub customers: i64,
    /// The ids of those customers: exactly what the service may forget.
    pub customer_ids: Vec<String>,
    pub subscriptions: i64,
    pub invoices: i64,
    pub events: i64,
    /// The test clock's offset, which a reset keeps (see [`reset`]).
    pub clock_offset_secs: i64,
}

#[derive(QueryableByName)]
struct Counts {
    #[diesel(sql_type = BigInt)]
    customers: i64,
    #[diesel(sql_type = BigInt)]
    subscriptions: i64,
    #[diesel(sql_type = BigInt)]
    invoices: i64,
    #[diesel(sql_type = BigInt)]
    clock_offset_secs: i64,
}

/// Empties the emulated account stored in this database (creating the schema
/// first if the emulator never ran on it): customers, subscriptions,
/// invoices, sessions, settings, idempotency keys and events. Kept: the test
/// clock, which never runs back (the service's stored periods and its
/// catch-up's starting point are on it), and the count of ids handed out, so
/// no id is ever handed out twice (the service remembers event ids). Running
/// instances see the new generation at their next operation and drop their
/// copy. Runs in the caller's transaction.
/// Whether this database holds the emulator's account (its schema and row).
pub fn has_account(conn: &mut PgConnection) -> Result<bool, DieselError> {
    #[derive(QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        exists: bool,
    }
    diesel::sql_query("SELECT to_regclass('stripe_emulator.account') IS NOT NULL AS exists")
        .get_result::<Exists>(conn)
        .map(|row| row.exists)
}

pub fn reset(conn: &mut PgConnection) -> Result<Cleared, DieselError> {
    conn.batch_execute(CREATE)?;
    let counted = |field: &str, kind: &str, count: &str| {
        format!(
            "CASE WHEN jsonb_typeof(state->'{field}') = '{kind}' \
             THEN (SELECT count(*) FROM {count}(state->'{field}')) ELSE 0 END AS {field}"
        )
    };
    let counts: Counts = diesel::sql_query(format!(
        "SELECT {}, {}, {}, clock_offset_secs FROM stripe_emulator.account FOR UPDATE",
        counted("customers", "object", "jsonb_object_keys"),
        counted("subscriptions", "object", "jsonb_object_keys"),
        counted("invoices", "array", "jsonb_array_elements"),
    ))
    .get_result(conn)?;
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
    }
    let customer_ids = diesel::sql_query(
        "SELECT jsonb_object_keys(state->'customers') AS id FROM stripe_emulator.account \
         WHERE jsonb_typeof(state->'customers') = 'object'",
    )
    .load::<Id>(conn)?
    .into_iter()
    .map(|row| row.id)
    .collect();
    let events = diesel::sql_query("DELETE FROM stripe_emulator.events").execute(conn)?;
    diesel::sql_query(
        "UPDATE stripe_emulator.account \
         SET state = jsonb_build_object('ids_issued', coalesce(state->'ids_issued', '0')), \
             generation = generation + 1, version = version + 1, updated_at = now()",
    )
    .execute(conn)?;
    Ok(Cleared {
        customers: counts.customers,
        customer_ids,
        subscriptions: counts.subscriptions,
        invoices: counts.invoices,
        events: i64::try_from(events).unwrap_or(i64::MAX),
        clock_offset_secs: counts.clock_offset_secs,
    })
}

/// Reads a stored document back into the account.
pub(super) fn parse_state(text: &str) -> Result<State, serde_json::Error> {
    serde_json::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::emulator::account::Emulator;
    use crate::emulator::model::*;

    /// An account with one of everything an operation leaves behind: cards,
    /// subscriptions in several states with their invoices, a scheduled and
    /// an immediate cancellation, a plan change, a portal deep link, a paid
    /// Checkout Session, an expired first payment and a replayable answer.
    async fn busy_account() -> String {
        let emu = Emulator::new(
            "http://e.test".into(),
            "http://e.test/w".into(),
            "whsec_x".into(),
            Clock::system(),
        );
        let start = emu.clock.unix();
        emu.with_state(|emu, state| {
            let mode = BillingMode::Flexible;
            let ada = emu.create_customer(state, Some("ada@example.com".into()), None, [].into());
            emu.set_card_token(state, &ada.id, "tok_visa").unwrap();
            let plan = "price_emu_starter_monthly";
            let sub = emu.create_subscription(state, &ada.id, plan, [].into(), mode, None);
            let sub = sub.unwrap().id;
            let change = SubscriptionChange {
                price: Some("price_emu_pro_monthly".into()),
                ..Default::default()
            };
            emu.update_subscription(state, &sub, change).unwrap();
            emu.schedule_cancel(state, &sub, Some("too_expensive".into()))
                .unwrap();
            let bob = emu.create_customer(state, None, Some("Bob".into()), [].into());
            let ended = emu.create_subscription(state, &bob.id, plan, [].into(), mode, None);
            emu.cancel_now(state, &ended.unwrap().id, None, Some("bye".into()))
                .unwrap();
            let eve = emu.create_customer(state, None, None, [].into());
            emu.set_card_token(state, &eve.id, "tok_chargeCustomerFail")
                .unwrap();
            emu.create_subscription(state, &eve.id, plan, [].into(), mode, None)
                .unwrap();
            let checkout = CheckoutSession {
                id: emu.new_id("cs_test"),
                customer: bob.id.clone(),
                price: plan.into(),
                client_reference_id: Some("user_1".into()),
                subscription_metadata: [("user_id".to_string(), "user_1".to_string())].into(),
                success_url: None,
                cancel_url: Some("http://app.test/settings/billing".into()),
                metadata: [("user_id".to_string(), "user_1".to_string())].into(),
                created: start,
                expires_at: Some(start + CHECKOUT_SESSION_TTL_SECS),
                status: "complete",
                subscription: None,
                invoice: None,
                authenticating: Some(Card {
                    last4: "3184".into(),
                    exp_month: 12,
                    exp_year: 2034,
                    charges_fail: false,
                }),
            };
            state
                .checkout_sessions
                .insert(checkout.id.clone(), checkout);
            let portal = PortalSession {
                id: emu.new_id("bps"),
                customer: ada.id.clone(),
                return_url: "http://app.test/settings/billing".into(),
                created: start,
                last_used: start + 60,
                flow: Some((FlowKind::SubscriptionCancel, Some(sub.clone()))),
                configuration: "bpc_x".into(),
                locale: Some("fr".into()),
            };
            state.sessions.insert(portal.id.clone(), portal);
            state.idempotency.insert(
                "key_1".into(),
                Replay {
                    fingerprint: "POST customers email=a".into(),
                    status: 200,
                    body: serde_json::json!({"id": ada.id}),
                    at: start,
                },
            );
            state.settings.dunning = Dunning::PastDue;
            state.settings.delivery_order = DeliveryOrder::Reverse;
            emu.advance_clock(state, "clock", start + 2 * DAY).unwrap();
        })
        .await
        .unwrap();
        emu.read(|state| serde_json::to_string(state).unwrap())
            .await
            .unwrap()
    }

    #[actix_rt::test]
    async fn a_stored_account_reads_back_as_it_was() {
        let stored = busy_account().await;

        let read = parse_state(&stored).unwrap();

        assert_eq!(serde_json::to_string(&read).unwrap(), stored);
        assert_eq!(read.customers.len(), 3);
        let statuses: std::collections::BTreeSet<&str> = read
            .subscriptions
            .values()
            .map(|s| s.status.as_str())
            .collect();
        assert_eq!(
            statuses,
            ["active", "canceled", "incomplete_expired"].into()
        );
        assert!(read.ids_issued > 0);
    }

    #[actix_rt::test]
    async fn a_stored_word_this_code_does_not_know_makes_the_account_unreadable() {
        let stored = busy_account().await;
        let altered = stored.replacen(
            r#""status":"paid","billing_reason""#,
            r#""status":"refunded","billing_reason""#,
            1,
        );
        assert_ne!(altered, stored);

        let err = parse_state(&altered).err().unwrap();

        assert!(
            err.to_string()
                .contains("unknown invoice status `refunded`"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_document_is_an_empty_account() {
        let state = parse_state("{}").unwrap();
        assert!(state.customers.is_empty() && state.events.is_empty());
        assert_eq!(state.ids_issued, 0);
    }

    #[test]
    fn the_emulators_customer_ids_carry_its_prefix() {
        let emu = Emulator::new(
            "http://e.test".into(),
            "http://e.test/w".into(),
            "whsec_x".into(),
            Clock::system(),
        );
        assert!(emu
            .new_id("cus")
            .starts_with(crate::emulator::CUSTOMER_ID_PREFIX));
    }
}
