-- pgbench ceiling for POST /webhooks/stripe (customer.subscription.updated), run by scripts/bench
-- with -M prepared at the same concurrency as the service. These are the statements
-- billing::sync::apply_event sends for a subscription event whose customer is linked to a user,
-- in the same order and transaction (checked with log_statement=all; all are prepared by diesel,
-- like -M prepared): src/db/events.rs claim_with_holder (the event's claim and its customer's
-- holder in one statement), src/db/subscriptions.rs store (the billing_store_subscription function
-- from migrations/2026-12-05-000001_paid_correctness, which also recomputes the user's paid flag),
-- src/db/entitlements.rs mark_stale (the customer is owed a read of its features). The
-- status_notify triggers run in both, as in the service. Differences, all negligible next to a
-- round trip:
--  * ids are built in SQL ('cus_' || :n) where the service binds the finished string;
--  * the event's type, outcome, previous_attributes and the paid rule are literals where the
--    service binds them;
--  * the event time is now(): scripts/bench resets subscriptions.last_event_at to 2020 before
--    every webhook run, so each event is newer than the stored state and is applied (as in the
--    service run), never stale.
\set n random(1, :users)
\set event random(1, 4611686018427387903)
BEGIN;
WITH claimed AS (INSERT INTO stripe_events (id, type, stripe_created_at, outcome) VALUES ('evt_pgbench_' || :event, 'customer.subscription.updated', now(), 'applied') ON CONFLICT DO NOTHING RETURNING 1) SELECT EXISTS (SELECT 1 FROM claimed) AS claimed, (SELECT id FROM accounts WHERE stripe_customer_id = 'cus_' || :n LIMIT 1) AS user_id \gset
SELECT billing_store_subscription('sub_' || :n, 'cus_' || :n, :user_id, 'active', 'price_pro_monthly', 'prod_pro', now() + interval '30 days', false, NULL, NULL, NULL, now(), NULL, '{}'::jsonb, now(), 1209600, true);
INSERT INTO "stripe_entitlements" ("customer_id", "requested") VALUES ('cus_' || :n, 1) ON CONFLICT ("customer_id") DO UPDATE SET "requested" = ("stripe_entitlements"."requested" + 1) RETURNING "stripe_entitlements"."requested";
COMMIT;
