-- pgbench ceiling for POST /webhooks/stripe (customer.subscription.updated), run by scripts/bench
-- with -M prepared at the same concurrency as the service. These are the statements
-- billing::sync::apply_event sends for a subscription event whose customer is linked to a user,
-- in the same order and transaction, as diesel renders them (checked with log_statement=all):
-- src/db/events.rs claim, src/db/users.rs find_by_customer, src/db/subscriptions.rs
-- upsert_if_newer, src/db/users.rs recompute_paid. Differences, all negligible next to a round
-- trip:
--  * ids are built in SQL ('cus_' || :n) where the service binds the finished string;
--  * the event's type, outcome and the paid statuses are literals where the service binds them;
--  * the event time is now(): scripts/bench resets subscriptions.last_event_at to 2020 before
--    every webhook run, so each event is newer than the stored state and is applied (as in the
--    service run), never stale;
--  * all statements are prepared here, while diesel sends its two sql_query statements
--    (upsert_if_newer, recompute_paid) unnamed, parsed and planned every time: scripts/bench
--    measures that as a labelled "as sent" variant (-M extended), never as the ceiling.
\set n random(1, :users)
\set event random(1, 4611686018427387903)
\set authoritative false
BEGIN;
INSERT INTO "stripe_events" ("id", "type", "stripe_created_at", "outcome") VALUES ('evt_pgbench_' || :event, 'customer.subscription.updated', now(), 'applied') ON CONFLICT DO NOTHING;
SELECT "users"."id" AS user_id FROM "users" WHERE ("users"."stripe_customer_id" = 'cus_' || :n) LIMIT 1 \gset
INSERT INTO subscriptions AS s (id, customer_id, user_id, status, price_id, product_id, current_period_end, cancel_at_period_end, last_event_at) VALUES ('sub_' || :n, 'cus_' || :n, :user_id, 'active', 'price_pro_monthly', 'prod_pro', now() + interval '30 days', false, now()) ON CONFLICT (id) DO UPDATE SET customer_id = EXCLUDED.customer_id, user_id = COALESCE(EXCLUDED.user_id, s.user_id), status = EXCLUDED.status, price_id = EXCLUDED.price_id, product_id = EXCLUDED.product_id, current_period_end = EXCLUDED.current_period_end, cancel_at_period_end = EXCLUDED.cancel_at_period_end, last_event_at = GREATEST(s.last_event_at, EXCLUDED.last_event_at), updated_at = now() WHERE :authoritative OR s.last_event_at < EXCLUDED.last_event_at OR (s.last_event_at = EXCLUDED.last_event_at AND s.status NOT IN ('canceled', 'incomplete_expired')) RETURNING s.id;
UPDATE users SET paid = p.paid, updated_at = now() FROM (SELECT EXISTS (SELECT 1 FROM subscriptions WHERE user_id = :user_id AND status = ANY('{active,trialing,past_due}'::text[])) AS paid) p WHERE users.id = :user_id AND users.paid IS DISTINCT FROM p.paid;
COMMIT;
