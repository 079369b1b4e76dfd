-- Back to users only: organisations' accounts are deleted (their
-- subscriptions stay, linked to nobody, as the foreign key says).
SET LOCAL lock_timeout = '10s';

CREATE OR REPLACE FUNCTION billing_recompute_paid(
    p_user_id TEXT,
    p_now TIMESTAMPTZ,
    p_grace_secs BIGINT,
    p_paused_is_paid BOOLEAN
)
RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE users SET paid = p.paid, updated_at = now()
    FROM (SELECT EXISTS (SELECT 1 FROM subscriptions s
                         WHERE s.user_id = p_user_id
                           AND billing_grants_access(s.status, s.past_due_since, s.pause_behavior,
                                                     p_now, p_grace_secs, p_paused_is_paid)) AS paid) p
    WHERE users.id = p_user_id AND users.paid IS DISTINCT FROM p.paid;
    RETURN FOUND;
END;
$$;

COMMENT ON COLUMN subscriptions.user_id IS NULL;
DROP VIEW organizations;
DROP VIEW users;
DELETE FROM accounts WHERE kind = 'organization';
ALTER TABLE accounts DROP CONSTRAINT accounts_kind_matches_id;
ALTER TABLE accounts DROP COLUMN kind, DROP COLUMN name;
ALTER TABLE accounts RENAME TO users;
