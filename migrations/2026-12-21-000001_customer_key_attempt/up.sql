-- Which attempt at creating the user's Stripe customer the next click makes.
-- The customer request's Idempotency-Key ends in it: the retries of one
-- attempt, and a click after an answer that never came, send the same key
-- (so Stripe hands back the customer it may have created), while an attempt
-- after a server error Stripe saved (and would replay for 24 hours under
-- that key, docs.stripe.com/api/idempotent_requests) moves it on by one.
-- A constant default: no table rewrite, no long lock.
ALTER TABLE users ADD COLUMN customer_key_attempt INTEGER NOT NULL DEFAULT 0;
