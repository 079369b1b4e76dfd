-- pgbench ceiling for GET /billing/status, run by scripts/bench with -M prepared at the same
-- concurrency as the service. These are the statements the service sends for a known user whose
-- email is unchanged (the steady state) when the status is not in its cache (a miss, or
-- STATUS_CACHE_ENTRIES=0), each in its own implicit transaction as db::run sends them, as diesel
-- renders them (checked with log_statement=all): accounts::find_with_subscriptions
-- (src/db/accounts.rs, with each subscription's price and product) and entitlements::features_of
-- (src/db/entitlements.rs, the customer's features; since issue 20), query-builder statements,
-- which diesel prepares and caches like -M prepared. The ids are built in SQL where the service
-- binds the finished strings. A cache hit sends neither: this is what the cache is measured
-- against ("the same query at the same concurrency").
\set n random(1, :users)
SELECT "accounts"."id", "accounts"."email", "accounts"."name", "accounts"."stripe_customer_id", "accounts"."paid", "accounts"."created_at", "accounts"."updated_at", "subscriptions"."id", "subscriptions"."customer_id", "subscriptions"."user_id", "subscriptions"."status", "subscriptions"."price_id", "subscriptions"."product_id", "subscriptions"."current_period_end", "subscriptions"."cancel_at_period_end", "subscriptions"."last_event_at", "subscriptions"."cancel_at", "subscriptions"."pause_behavior", "subscriptions"."pause_resumes_at", "subscriptions"."past_due_since", "subscriptions"."synced_at", "stripe_prices"."id", "stripe_prices"."product_id", "stripe_prices"."nickname", "stripe_prices"."unit_amount", "stripe_prices"."currency", "stripe_prices"."recurring_interval", "stripe_prices"."recurring_interval_count", "stripe_prices"."deleted", "stripe_products"."id", "stripe_products"."name", "stripe_products"."deleted" FROM ((("accounts" LEFT OUTER JOIN "subscriptions" ON ("subscriptions"."user_id" = "accounts"."id")) LEFT OUTER JOIN "stripe_prices" ON ("stripe_prices"."id" = "subscriptions"."price_id")) LEFT OUTER JOIN "stripe_products" ON ("stripe_products"."id" = "subscriptions"."product_id")) WHERE ("accounts"."id" = 'user_' || :n);
SELECT "stripe_entitlements"."lookup_keys" FROM "stripe_entitlements" WHERE ("stripe_entitlements"."customer_id" = 'cus_' || :n) LIMIT 1;
