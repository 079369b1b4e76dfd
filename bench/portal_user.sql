-- Diagnostic for POST /billing/create-portal (not a ceiling): for a user who already has a Stripe
-- customer, an unchanged email and no deep link, the only SQL the service runs is users::find,
-- through users::upsert (src/db/users.rs, via billing::portal::portal_url), a prepared
-- statement. scripts/bench runs it at 1 connection with -M prepared to tell how much of
-- create-portal's added latency is Postgres.
\set n random(1, :users)
SELECT "users"."id", "users"."email", "users"."stripe_customer_id", "users"."paid", "users"."created_at", "users"."updated_at" FROM "users" WHERE ("users"."id" = 'user_' || :n) LIMIT 1;
