//! Issue 20: the `accounts` migration keeps every row. A database at the
//! schema before it (every earlier migration, applied as the service applies
//! them) is filled with users, customers, subscriptions and events; the
//! service then starts on it, migrating, and every user reads as before.

use diesel::connection::SimpleConnection;
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use diesel_migrations::{FileBasedMigrations, MigrationHarness};

use crate::support::*;

/// The first migration of organisations: the database is left just before it.
const ACCOUNTS_MIGRATION: &str = "20261223000001";

#[derive(Debug, PartialEq, QueryableByName)]
struct Snapshot {
    #[diesel(sql_type = diesel::sql_types::Text)]
    row: String,
}

/// Every row of `query`'s one JSON column, in order.
fn snapshot(conn: &mut PgConnection, query: &str) -> Vec<String> {
    diesel::sql_query(query)
        .load::<Snapshot>(conn)
        .unwrap()
        .into_iter()
        .map(|s| s.row)
        .collect()
}

/// Today's rows: 300 users, every other one with a customer and a
/// subscription (active, canceled, or past due in grace), their paid flags as
/// the service would have left them, some with an open checkout session or a
/// refresh claim; and events.
const TODAYS_ROWS: &str = "
INSERT INTO users (id, email, stripe_customer_id, paid, created_at, updated_at, refreshed_at,
                   customer_key_attempt, checkout_session_id, checkout_session_price,
                   checkout_session_url)
SELECT 'user_' || n,
       CASE WHEN n % 5 = 0 THEN NULL ELSE 'user' || n || '@example.com' END,
       CASE WHEN n % 2 = 0 THEN 'cus_' || n END,
       n % 2 = 0 AND (n % 6 = 0 OR n % 4 <> 0),
       '2026-01-01T00:00:00Z'::timestamptz + n * interval '1 minute',
       '2026-02-01T00:00:00Z'::timestamptz + n * interval '1 minute',
       CASE WHEN n % 7 = 0 THEN '2026-03-01T00:00:00Z'::timestamptz END,
       n % 3,
       CASE WHEN n % 11 = 0 THEN 'cs_test_' || n END,
       CASE WHEN n % 11 = 0 THEN 'price_pro' END,
       CASE WHEN n % 11 = 0 THEN 'https://checkout.stripe.com/c/pay/cs_test_' || n END
FROM generate_series(1, 300) AS n;
INSERT INTO subscriptions (id, customer_id, user_id, status, price_id, product_id,
                           current_period_end, cancel_at_period_end, last_event_at,
                           past_due_since, source)
SELECT 'sub_' || n, 'cus_' || n, 'user_' || n,
       CASE WHEN n % 6 = 0 THEN 'active' WHEN n % 4 = 0 THEN 'canceled' ELSE 'past_due' END,
       'price_pro', 'prod_pro', now() + interval '20 days', n % 12 = 0,
       '2026-03-01T00:00:00Z'::timestamptz + n * interval '1 second',
       CASE WHEN n % 6 <> 0 AND n % 4 <> 0 THEN now() - interval '1 day' END,
       'webhook'
FROM generate_series(2, 300, 2) AS n;
INSERT INTO stripe_events (id, type, stripe_created_at, received_at, outcome)
SELECT 'evt_' || n, 'customer.subscription.updated', now(), now(), 'applied'
FROM generate_series(1, 150) AS n;
";

const USERS: &str = "SELECT row_to_json(u)::text AS row FROM users u ORDER BY id";
const SUBSCRIPTIONS: &str = "SELECT to_jsonb(s)::text AS row FROM subscriptions s ORDER BY id";
/// The same, without the column a later migration adds (`same_second_returns`).
const SUBSCRIPTIONS_AFTER: &str =
    "SELECT (to_jsonb(s) - 'tie_by_previous')::text AS row FROM subscriptions s ORDER BY id";
const EVENTS: &str = "SELECT row_to_json(e)::text AS row FROM stripe_events e ORDER BY id";

/// A new database at the schema before the `accounts` migration, every
/// earlier migration applied as the service applies them: its name, URL and
/// a connection.
fn database_before_accounts() -> (String, String, PgConnection) {
    let db_name = format!("billing_migration_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::establish(&format!("{}/postgres", admin_url())).unwrap();
    diesel::sql_query(format!("CREATE DATABASE \"{db_name}\""))
        .execute(&mut admin)
        .unwrap();
    let url = format!("{}/{db_name}", admin_url());
    let mut conn = PgConnection::establish(&url).unwrap();
    let source =
        FileBasedMigrations::from_path(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).unwrap();
    // diesel's own bookkeeping table, as `run_pending_migrations` creates it.
    conn.batch_execute(
        "CREATE TABLE __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL, \
         run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    )
    .unwrap();
    let mut migrations = MigrationSource::<Pg>::migrations(&source).unwrap();
    migrations.sort_by_key(|m| m.name().version().to_string());
    for migration in migrations
        .iter()
        .filter(|m| m.name().version().to_string().as_str() < ACCOUNTS_MIGRATION)
    {
        conn.run_migration(migration.as_ref()).unwrap();
    }
    (db_name, url, conn)
}

#[actix_rt::test]
async fn the_accounts_migration_keeps_every_users_paid_flag_customer_subscriptions_and_events() {
    let (db_name, url, mut conn) = database_before_accounts();
    conn.batch_execute(TODAYS_ROWS).unwrap();
    let (users, subscriptions, events) = (
        snapshot(&mut conn, USERS),
        snapshot(&mut conn, SUBSCRIPTIONS),
        snapshot(&mut conn, EVENTS),
    );
    assert_eq!(users.len(), 300);

    // The service starts on it and migrates.
    let mut app = spawn_app_with(|vars| {
        vars.insert("DATABASE_URL".into(), url.clone());
    })
    .await;
    app.db_name = db_name;

    assert_eq!(
        snapshot(&mut conn, USERS),
        users,
        "the users view reads as the table did"
    );
    assert_eq!(snapshot(&mut conn, SUBSCRIPTIONS_AFTER), subscriptions);
    assert_eq!(snapshot(&mut conn, EVENTS), events);
    assert_eq!(app.count("accounts"), 300);
    assert_eq!(app.count("accounts WHERE kind = 'user'"), 300);
    // And the service reads them: a paid user with their customer, an unpaid one without.
    let paid = app.status(&token_for("user_6", None)).await;
    assert_eq!(
        (
            paid["data"]["paid"].clone(),
            paid["data"]["hasCustomer"].clone()
        ),
        (true.into(), true.into())
    );
    assert_eq!(paid["data"]["account"]["type"], "user");
    let unpaid = app.status(&token_for("user_7", None)).await;
    assert_eq!(
        (
            unpaid["data"]["paid"].clone(),
            unpaid["data"]["hasCustomer"].clone()
        ),
        (false.into(), false.into())
    );
    // The paid flags were not recomputed into something else on the way.
    assert_eq!(
        app.user("user_6").unwrap().stripe_customer_id.as_deref(),
        Some("cus_6")
    );
}

#[actix_rt::test]
async fn a_database_with_a_user_id_beginning_with_org_is_refused_rather_than_migrated_into_a_leak()
{
    let (db_name, url, mut conn) = database_before_accounts();
    conn.batch_execute(
        "INSERT INTO users (id, stripe_customer_id, paid) VALUES ('org:acme', 'cus_1', true)",
    )
    .unwrap();

    let refused = try_spawn_app_with(|vars| {
        vars.insert("DATABASE_URL".into(), url.clone());
    })
    .await;

    let error = format!("{:#}", refused.err().expect("start-up refused"));
    assert!(error.contains("org:"), "{error}");
    // Nothing changed: the table is still `users`, with its row.
    assert_eq!(
        snapshot(&mut conn, "SELECT id AS row FROM users"),
        ["org:acme"]
    );
    drop(conn);
    let mut admin = PgConnection::establish(&format!("{}/postgres", admin_url())).unwrap();
    diesel::sql_query(format!("DROP DATABASE \"{db_name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .unwrap();
}
