-- When `POST /billing/refresh` last read the user's subscriptions from Stripe
-- (billing clock). A refresh claims the user's read with one conditional
-- UPDATE on this column, so that across every instance at most one read per
-- user happens in any 10 seconds. NULL: never refreshed.
ALTER TABLE users ADD COLUMN refreshed_at TIMESTAMPTZ;
