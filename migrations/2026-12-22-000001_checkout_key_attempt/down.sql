ALTER TABLE users DROP COLUMN checkout_key_attempt;
