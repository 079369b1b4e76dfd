ALTER TABLE subscriptions DROP COLUMN drift_checked_at;
DROP TABLE stripe_catchup;
