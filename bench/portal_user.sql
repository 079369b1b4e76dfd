-- Diagnostic for POST /billing/create-portal (not a ceiling): for a user who already has a Stripe
-- customer, an unchanged email and no deep link, the only SQL the service runs is accounts::find,
-- through accounts::upsert (src/db/accounts.rs, via billing::portal::portal_url), a prepared
-- statement. scripts/bench runs it at 1 connection with -M prepared to tell how much of
-- create-portal's added latency is Postgres.
\set n random(1, :users)
SELECT "accounts"."id", "accounts"."email", "accounts"."name", "accounts"."stripe_customer_id", "accounts"."paid", "accounts"."created_at", "accounts"."updated_at" FROM "accounts" WHERE ("accounts"."id" = 'user_' || :n) LIMIT 1;
