-- pgbench ceiling for GET /billing/status, run by scripts/bench with -M prepared at the same
-- concurrency as the service. This is the one statement routes/status.rs sends for a known user
-- whose email is unchanged (the steady state), in its own implicit transaction as db::run sends
-- it, as diesel renders it (checked with log_statement=all): users::find_with_subscriptions
-- (src/db/users.rs), a query-builder statement, which diesel prepares and caches like
-- -M prepared. The id is built in SQL where the service binds the finished string.
\set n random(1, :users)
SELECT "users"."id", "users"."email", "users"."stripe_customer_id", "users"."paid", "users"."created_at", "users"."updated_at", "subscriptions"."id", "subscriptions"."customer_id", "subscriptions"."user_id", "subscriptions"."status", "subscriptions"."price_id", "subscriptions"."product_id", "subscriptions"."current_period_end", "subscriptions"."cancel_at_period_end", "subscriptions"."last_event_at", "subscriptions"."cancel_at", "subscriptions"."pause_behavior", "subscriptions"."pause_resumes_at", "subscriptions"."past_due_since", "subscriptions"."synced_at" FROM ("users" LEFT OUTER JOIN "subscriptions" ON ("subscriptions"."user_id" = "users"."id")) WHERE ("users"."id" = 'user_' || :n);
