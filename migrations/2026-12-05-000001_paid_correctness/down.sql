DROP FUNCTION billing_store_subscription(TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, TIMESTAMPTZ, BOOLEAN,
    TIMESTAMPTZ, TEXT, TIMESTAMPTZ, TIMESTAMPTZ, TIMESTAMPTZ, JSONB, TIMESTAMPTZ, BIGINT, BOOLEAN);
DROP FUNCTION billing_lifecycle_rank(TEXT);
DROP FUNCTION billing_state_json(TEXT, TEXT, TIMESTAMPTZ, BOOLEAN, TIMESTAMPTZ, TEXT, TIMESTAMPTZ);
DROP FUNCTION billing_recompute_paid(TEXT, TIMESTAMPTZ, BIGINT, BOOLEAN);
DROP FUNCTION billing_grants_access(TEXT, TIMESTAMPTZ, TEXT, TIMESTAMPTZ, BIGINT, BOOLEAN);
DROP INDEX subscriptions_past_due_idx;
ALTER TABLE subscriptions
    DROP COLUMN cancel_at, DROP COLUMN pause_behavior, DROP COLUMN pause_resumes_at,
    DROP COLUMN past_due_since, DROP COLUMN source, DROP COLUMN previous_attributes,
    DROP COLUMN synced_at;
-- The previous migration's functions, as it created them.
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
