-- pgbench ceiling for POST /webhooks/stripe (customer.subscription.updated), run by scripts/bench
-- with -M prepared at the same concurrency as the service. These are the statements
-- billing::sync::apply_event sends for a subscription event whose customer is linked to a user,
-- in the same order and transaction, as diesel renders them (checked with log_statement=all; all
-- are prepared by diesel, like -M prepared): src/db/events.rs claim, src/db/accounts.rs
-- find_by_customer, src/db/subscriptions.rs store (the billing_store_subscription function from
-- migrations/2026-12-05-000001_paid_correctness, which also recomputes the user's paid flag). Differences, all negligible next to a round trip:
--  * ids are built in SQL ('cus_' || :n) where the service binds the finished string;
--  * the event's type, outcome, previous_attributes and the paid rule are literals where the
--    service binds them;
--  * the event time is now(): scripts/bench resets subscriptions.last_event_at to 2020 before
--    every webhook run, so each event is newer than the stored state and is applied (as in the
--    service run), never stale.
\set n random(1, :users)
\set event random(1, 4611686018427387903)
BEGIN;
INSERT INTO "stripe_events" ("id", "type", "stripe_created_at", "outcome") VALUES ('evt_pgbench_' || :event, 'customer.subscription.updated', now(), 'applied') ON CONFLICT DO NOTHING;
SELECT "accounts"."id" AS user_id FROM "accounts" WHERE ("accounts"."stripe_customer_id" = 'cus_' || :n) LIMIT 1 \gset
SELECT billing_store_subscription('sub_' || :n, 'cus_' || :n, :user_id, 'active', 'price_pro_monthly', 'prod_pro', now() + interval '30 days', false, NULL, NULL, NULL, now(), NULL, '{}'::jsonb, now(), 1209600, true);
COMMIT;
