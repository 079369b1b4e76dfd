DROP INDEX subscriptions_live_by_period_end;
ALTER TABLE subscriptions DROP COLUMN drift_checked_at;
DROP TABLE stripe_catchup;
