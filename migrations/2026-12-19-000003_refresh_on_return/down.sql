ALTER TABLE users DROP COLUMN refreshed_at;
