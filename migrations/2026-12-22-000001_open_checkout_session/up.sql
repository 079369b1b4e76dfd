-- The user's Checkout Session that may still be open (POST
-- /billing/create-checkout), kept under the user's checkout lock:
-- - a second click for the same plan gets this session back: one session
--   however many clicks, tabs or instances;
-- - a click for another plan expires it at Stripe first, so two payable
--   sessions can never become two subscriptions;
-- - POST /billing/refresh applies on return only this session id, so a
--   made-up id costs no Stripe call.
-- Nullable columns without a default: no table rewrite, no long lock.
ALTER TABLE users
    ADD COLUMN checkout_session_id TEXT,
    ADD COLUMN checkout_session_price TEXT,
    ADD COLUMN checkout_session_url TEXT;
