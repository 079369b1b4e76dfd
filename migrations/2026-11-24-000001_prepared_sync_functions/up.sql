-- The two writes every subscription event makes, as PL/pgSQL functions.
--
-- Why functions: Diesel prepares and caches its query-builder statements, but
-- never an INSERT .. ON CONFLICT DO UPDATE or an UPDATE .. FROM written as raw
-- SQL, so Postgres parsed and planned both on every webhook (scripts/bench
-- measured that at about 40% of the ingest ceiling). PL/pgSQL caches the plans
-- of the statements inside a function for the life of the connection, and the
-- call itself is a query-builder SELECT that Diesel prepares once per
-- connection. Storing and recomputing in one call also saves a round trip.

-- Sets the user's paid flag from their subscriptions: paid when any has one of
-- `p_paid_statuses`. Writes only when the flag changes; returns whether it did.
CREATE FUNCTION billing_recompute_paid(p_user_id TEXT, p_paid_statuses TEXT[])
RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE users SET paid = p.paid, updated_at = now()
    FROM (SELECT EXISTS (SELECT 1 FROM subscriptions s
                         WHERE s.user_id = p_user_id
                           AND s.status = ANY (p_paid_statuses)) AS paid) p
    WHERE users.id = p_user_id AND users.paid IS DISTINCT FROM p.paid;
    RETURN FOUND;
END;
$$;

-- Stores a subscription's state as of the Stripe time `p_as_of` unless the row
-- already holds newer state, and returns whether it was stored. Newer means a
-- later Stripe time; within the same second (where `created` cannot order
-- events) a terminal status already stored is never undone. Authoritative
-- state (just fetched from the API) is stored whatever its time. When stored
-- and `p_user_id` is set, that user's paid flag is recomputed in the same call.
CREATE FUNCTION billing_store_subscription(
    p_id TEXT,
    p_customer_id TEXT,
    p_user_id TEXT,
    p_status TEXT,
    p_price_id TEXT,
    p_product_id TEXT,
    p_current_period_end TIMESTAMPTZ,
    p_cancel_at_period_end BOOLEAN,
    p_as_of TIMESTAMPTZ,
    p_authoritative BOOLEAN,
    p_paid_statuses TEXT[]
)
RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO subscriptions AS s (id, customer_id, user_id, status, price_id, product_id,
                                    current_period_end, cancel_at_period_end, last_event_at)
    VALUES (p_id, p_customer_id, p_user_id, p_status, p_price_id, p_product_id,
            p_current_period_end, p_cancel_at_period_end, p_as_of)
    ON CONFLICT (id) DO UPDATE SET
        customer_id = EXCLUDED.customer_id,
        user_id = COALESCE(EXCLUDED.user_id, s.user_id),
        status = EXCLUDED.status,
        price_id = EXCLUDED.price_id,
        product_id = EXCLUDED.product_id,
        current_period_end = EXCLUDED.current_period_end,
        cancel_at_period_end = EXCLUDED.cancel_at_period_end,
        last_event_at = GREATEST(s.last_event_at, EXCLUDED.last_event_at),
        updated_at = now()
    WHERE p_authoritative
       OR s.last_event_at < EXCLUDED.last_event_at
       OR (s.last_event_at = EXCLUDED.last_event_at
           AND s.status NOT IN ('canceled', 'incomplete_expired'));
    IF NOT FOUND THEN
        RETURN FALSE;
    END IF;
    IF p_user_id IS NOT NULL THEN
        PERFORM billing_recompute_paid(p_user_id, p_paid_statuses);
    END IF;
    RETURN TRUE;
END;
$$;
