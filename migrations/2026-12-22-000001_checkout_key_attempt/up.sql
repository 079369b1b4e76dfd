-- Which attempt at creating a Checkout Session the user's next click makes.
-- The session request's Idempotency-Key ends in it, as the customer's does
-- (customer_key_attempt): double clicks send the same key and get one
-- session, while an attempt after a server error Stripe saved (replayed for
-- 24 hours under that key, docs.stripe.com/api/idempotent_requests) moves it
-- on by one. A constant default: no table rewrite, no long lock.
ALTER TABLE users ADD COLUMN checkout_key_attempt INTEGER NOT NULL DEFAULT 0;
