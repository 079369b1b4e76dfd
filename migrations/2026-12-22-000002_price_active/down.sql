ALTER TABLE stripe_prices DROP COLUMN active;
