-- The drift check's scan (billing/drift.rs): subscriptions that may keep
-- someone paid, by period end. Measured on 1,000,000 subscriptions: the
-- check's query takes 5-11 ms with it and 200-240 ms without; building it
-- took 0.8 s (writes to the table wait that long, once).
CREATE INDEX IF NOT EXISTS subscriptions_live_by_period_end
    ON subscriptions (current_period_end)
    WHERE status IN ('active', 'trialing', 'past_due');
