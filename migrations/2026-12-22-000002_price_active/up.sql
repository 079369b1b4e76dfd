-- Whether Stripe still sells the price (`active`): an archived price keeps its
-- name and amount for the subscriptions that bill it, but is no longer offered
-- for Checkout (BILLING_PLANS). A constant default: no table rewrite.
ALTER TABLE stripe_prices ADD COLUMN active BOOLEAN NOT NULL DEFAULT true;
