-- Same-second ties that previous_attributes settle are settled only while a
-- second holds two events. "B came right after A" (B's state with B's
-- previous_attributes laid over it is A's state) is also true of a B that came
-- later, when A's state came back in between: trialing, then paused, active
-- and trialing again in one second, delivered paused, then the last trialing,
-- took that trialing for the first one (the stored paused came right after a
-- trialing) and kept paused, then stored active, Stripe's second-to-last state.
-- Such a mistake needs three events of one second, and previous_attributes
-- alone cannot tell it from the right order; so once they have ordered two
-- events of a second, a third of that second that lifecycle order cannot
-- settle is re-read from Stripe. Two changes in one second still cost no read.

-- The stored state was ordered against another event of its second (that is,
-- last_event_at) by previous_attributes alone: right if that second holds
-- only these two events. The next event of the second that needs ordering
-- is re-read from Stripe. Cleared by a later second and by a fetch.
ALTER TABLE subscriptions ADD COLUMN tie_by_previous BOOLEAN NOT NULL DEFAULT FALSE;

-- Stores a subscription's state unless the row already holds newer state, and
-- says what it did: 'applied', 'stale' (older, or the same as stored), or
-- 'undecidable' (two events of the same second that neither lifecycle order
-- nor previous_attributes can order; nothing is written and the caller
-- re-reads the subscription from Stripe).
--
-- Event state (p_fetched_at NULL) is as of the event's `created` second:
--   a later second wins, an earlier one is stale; in the same second the
--   later lifecycle stage wins, then the event whose previous_attributes
--   describe the other's state; a same-second event against fetched state is
--   undecidable (the fetch may have read before or after it), and so is one
--   against state that previous_attributes already ordered against another
--   event of its second (`tie_by_previous`, see the column).
-- Fetched state (p_fetched_at = when the fetch started, billing clock) is as
--   of that second. It is stored unless the row holds an event of that second
--   or later that was written after the fetch started: such an event may be
--   newer than what the fetch read. Callers serialize fetch-and-store per
--   customer with an advisory lock, so two fetches never cross.
--
-- When stored for a user (`p_user_id`, else the row's), that user's paid flag is recomputed in
-- the same call; so is the paid flag of the user it was stored for before, when it changes hands
-- (`metadata.user_id` naming someone else, or its customer now held by another user).
CREATE OR REPLACE FUNCTION billing_store_subscription(
    p_id TEXT,
    p_customer_id TEXT,
    p_user_id TEXT,
    p_status TEXT,
    p_price_id TEXT,
    p_product_id TEXT,
    p_current_period_end TIMESTAMPTZ,
    p_cancel_at_period_end BOOLEAN,
    p_cancel_at TIMESTAMPTZ,
    p_pause_behavior TEXT,
    p_pause_resumes_at TIMESTAMPTZ,
    p_as_of TIMESTAMPTZ,
    p_fetched_at TIMESTAMPTZ,
    p_previous JSONB,
    p_now TIMESTAMPTZ,
    p_grace_secs BIGINT,
    p_paused_is_paid BOOLEAN
)
RETURNS TEXT
LANGUAGE plpgsql AS $$
DECLARE
    s subscriptions%ROWTYPE;
    stored_state JSONB;
    new_state JSONB;
    new_follows BOOLEAN;
    old_follows BOOLEAN;
    decided BOOLEAN := FALSE;
    by_previous BOOLEAN := FALSE;
    stored_user TEXT;
BEGIN
    LOOP
        -- One UPDATE serves both ways in: first, for an event of a later
        -- second than the stored state (the common case, with no read before
        -- it; SET expressions read the row's values before the update), and
        -- again once the rules below have decided to apply.
        IF decided OR p_fetched_at IS NULL THEN
            UPDATE subscriptions SET
                customer_id = p_customer_id,
                user_id = COALESCE(p_user_id, user_id),
                status = p_status,
                price_id = p_price_id,
                product_id = p_product_id,
                current_period_end = p_current_period_end,
                cancel_at_period_end = p_cancel_at_period_end,
                cancel_at = p_cancel_at,
                pause_behavior = p_pause_behavior,
                pause_resumes_at = p_pause_resumes_at,
                past_due_since = CASE
                    WHEN p_status <> 'past_due' THEN NULL
                    WHEN status = 'past_due' THEN COALESCE(past_due_since, p_as_of)
                    ELSE p_as_of
                END,
                source = CASE WHEN p_fetched_at IS NULL THEN 'event' ELSE 'fetch' END,
                previous_attributes = p_previous,
                -- A new second (or a fetch) starts over; within one, once set it stays.
                tie_by_previous = CASE
                    WHEN p_fetched_at IS NOT NULL OR last_event_at < p_as_of THEN FALSE
                    ELSE tie_by_previous OR by_previous
                END,
                last_event_at = GREATEST(last_event_at, p_as_of),
                synced_at = p_now,
                updated_at = now()
            -- A change of hands takes the other way in: the previous holder is
            -- read (and the row locked) below, so their flag can be recomputed.
            WHERE id = p_id
              AND (decided OR (last_event_at < p_as_of
                               AND (p_user_id IS NULL OR user_id IS NULL OR user_id = p_user_id)))
            RETURNING user_id INTO stored_user;
            IF FOUND THEN
                IF stored_user IS NOT NULL THEN
                    PERFORM billing_recompute_paid(stored_user, p_now, p_grace_secs,
                                                   p_paused_is_paid);
                END IF;
                -- `decided` means `s` is the row as locked before this update.
                IF decided AND s.user_id IS NOT NULL AND s.user_id IS DISTINCT FROM stored_user THEN
                    PERFORM billing_recompute_paid(s.user_id, p_now, p_grace_secs,
                                                   p_paused_is_paid);
                END IF;
                RETURN 'applied';
            END IF;
        END IF;

        SELECT * INTO s FROM subscriptions WHERE id = p_id FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO subscriptions (id, customer_id, user_id, status, price_id, product_id,
                                       current_period_end, cancel_at_period_end, cancel_at,
                                       pause_behavior, pause_resumes_at, past_due_since, source,
                                       previous_attributes, last_event_at, synced_at)
            VALUES (p_id, p_customer_id, p_user_id, p_status, p_price_id, p_product_id,
                    p_current_period_end, p_cancel_at_period_end, p_cancel_at,
                    p_pause_behavior, p_pause_resumes_at,
                    CASE WHEN p_status = 'past_due' THEN p_as_of END,
                    CASE WHEN p_fetched_at IS NULL THEN 'event' ELSE 'fetch' END,
                    p_previous, p_as_of, p_now)
            ON CONFLICT (id) DO NOTHING;
            -- Same-second events of a new subscription often arrive together:
            -- the losing insert waits for the winner's commit, then the next
            -- round (a new snapshot) sees its row and orders against it.
            IF FOUND THEN
                IF p_user_id IS NOT NULL THEN
                    PERFORM billing_recompute_paid(p_user_id, p_now, p_grace_secs,
                                                   p_paused_is_paid);
                END IF;
                RETURN 'applied';
            END IF;
            CONTINUE;
        END IF;

        IF p_fetched_at IS NOT NULL THEN
            IF s.last_event_at > p_as_of
               OR (s.last_event_at = p_as_of AND s.source = 'event' AND s.synced_at > p_fetched_at) THEN
                RETURN 'stale';
            END IF;
        ELSIF p_as_of < s.last_event_at THEN
            RETURN 'stale';
        ELSIF p_as_of = s.last_event_at THEN
            -- Stripe's lifecycle only moves forward, so within one second the
            -- later stage is the later state, whoever wrote the other.
            IF billing_lifecycle_rank(p_status) < billing_lifecycle_rank(s.status) THEN
                RETURN 'stale';
            END IF;
            IF billing_lifecycle_rank(p_status) = billing_lifecycle_rank(s.status) THEN
                IF s.source = 'fetch' THEN
                    RETURN 'undecidable';
                END IF;
                stored_state := billing_state_json(s.status, s.price_id, s.current_period_end,
                    s.cancel_at_period_end, s.cancel_at, s.pause_behavior, s.pause_resumes_at);
                new_state := billing_state_json(p_status, p_price_id, p_current_period_end,
                    p_cancel_at_period_end, p_cancel_at, p_pause_behavior, p_pause_resumes_at);
                -- The same change reported twice (e.g. `.paused` and `.updated`).
                IF new_state = stored_state
                   AND COALESCE(p_previous, '{}') = COALESCE(s.previous_attributes, '{}') THEN
                    RETURN 'stale';
                END IF;
                -- previous_attributes already ordered two events of this
                -- second: with a third, an equal state may be another moment.
                IF s.tie_by_previous THEN
                    RETURN 'undecidable';
                END IF;
                -- "B directly follows A": B's state with B's previous_attributes
                -- laid over it is exactly A. Mere containment is not enough: with
                -- three or more changes in one second a field can change back, and
                -- an equal state is not proof of an equal moment (A, B, A again).
                -- An event without previous_attributes (`created`, `deleted`)
                -- says nothing about what came before it.
                new_follows := COALESCE(p_previous, '{}') <> '{}'
                               AND new_state || p_previous = stored_state;
                old_follows := COALESCE(s.previous_attributes, '{}') <> '{}'
                               AND stored_state || s.previous_attributes = new_state;
                IF old_follows AND NOT new_follows THEN
                    UPDATE subscriptions SET tie_by_previous = TRUE WHERE id = p_id;
                    RETURN 'stale';
                ELSIF NOT (new_follows AND NOT old_follows) THEN
                    RETURN 'undecidable';
                END IF;
                by_previous := TRUE;
            END IF;
        END IF;
        decided := TRUE;
    END LOOP;
END;
$$;
