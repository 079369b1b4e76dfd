DROP INDEX IF EXISTS subscriptions_live_by_period_end;
