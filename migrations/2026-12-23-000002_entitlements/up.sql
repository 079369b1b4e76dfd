-- Stripe Entitlements (issue 20): each customer's active entitlements, as
-- their features' lookup keys, keyed by Stripe customer (whoever holds it: a
-- user or an organisation). One row per customer, the keys sorted and
-- distinct, so a status request reads them in one index lookup.
--
-- `requested` counts the re-reads asked for (a summary event, a subscription
-- event of the customer), each in the transaction that records its event;
-- `satisfied` is the `requested` a stored read had seen when it began. A row
-- with requested > satisfied holds a set Stripe may have changed since: the
-- catch-up reads it again (the partial index finds those), so a read that
-- failed while Stripe was down is repaired later, never lost. `synced_at` is
-- when the stored read began (null: never read).
CREATE TABLE stripe_entitlements (
    customer_id TEXT PRIMARY KEY,
    lookup_keys TEXT[] NOT NULL DEFAULT '{}',
    synced_at TIMESTAMPTZ,
    requested BIGINT NOT NULL DEFAULT 0,
    satisfied BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX stripe_entitlements_stale
    ON stripe_entitlements (customer_id)
    WHERE requested > satisfied;
