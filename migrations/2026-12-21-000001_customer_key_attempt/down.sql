ALTER TABLE users DROP COLUMN customer_key_attempt;
