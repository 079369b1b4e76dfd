-- pgbench ceiling for GET /billing/status, run by scripts/bench with -M prepared at the same
-- concurrency as the service. These are the two statements routes/status.rs sends for a known
-- user whose email is unchanged (the steady state), each in its own implicit transaction as
-- db::run sends them, as diesel renders them (checked with log_statement=all): users::find via
-- users::upsert (src/db/users.rs; the upsert CTE only runs for a new user or a changed email),
-- then subscriptions::of_user (src/db/subscriptions.rs). Both are diesel query-builder
-- statements, which diesel prepares and caches, like -M prepared. Ids are built in SQL where the
-- service binds finished strings.
\set n random(1, :users)
SELECT "users"."id", "users"."email", "users"."stripe_customer_id", "users"."paid", "users"."created_at", "users"."updated_at" FROM "users" WHERE ("users"."id" = 'user_' || :n) LIMIT 1;
SELECT "subscriptions"."id", "subscriptions"."customer_id", "subscriptions"."user_id", "subscriptions"."status", "subscriptions"."price_id", "subscriptions"."product_id", "subscriptions"."current_period_end", "subscriptions"."cancel_at_period_end", "subscriptions"."last_event_at" FROM "subscriptions" WHERE ("subscriptions"."user_id" = 'user_' || :n);
