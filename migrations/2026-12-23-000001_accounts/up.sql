-- Organisations: the billable entity becomes an account, a user (as before)
-- or an organisation. Every existing row stays where it is, with its key:
-- `users` is renamed `accounts` and its rows become user accounts (the
-- constant default below); an organisation's row is keyed `org:<org id>`.
-- `users` lives on as a view of the user accounts, with exactly its old
-- columns, so an app that reads `users.paid` (or an instance of the previous
-- version still running during a rolling deploy) keeps working; it is a
-- simple view, so Postgres also accepts writes through it.
--
-- Nothing here reads or rewrites the rows: a rename, columns with a constant
-- default or none (catalogue-only since Postgres 11), constraints added NOT
-- VALID (checked for every new or changed row, not scanned now), views and a
-- function. The rename takes an ACCESS EXCLUSIVE lock until the migration
-- commits, which is milliseconds whatever the size of the table (measured:
-- README, "Organisations and features"); `lock_timeout` keeps it from
-- queueing behind a long transaction with every query queued behind it (the
-- start-up then fails, saying so, and the next start tries again).
SET LOCAL lock_timeout = '3s';

-- An organisation's key is `org:<org id>`; a user whose id already begins
-- with `org:` (allowed before) would share it with that organisation. Such
-- a database is refused with the reason rather than migrated into a leak.
-- Checked before the rename, so the scan holds no exclusive lock.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM users WHERE id LIKE 'org:%') THEN
        RAISE EXCEPTION 'users with an id beginning with "org:" exist; organisations'' accounts are keyed org:<org id>, so rename those users (and their subscriptions.user_id) first';
    END IF;
END;
$$;

ALTER TABLE users RENAME TO accounts;
ALTER TABLE accounts
    ADD COLUMN kind TEXT NOT NULL DEFAULT 'user',
    -- The organisation's name, from the token's `org_name`.
    ADD COLUMN name TEXT;
ALTER TABLE accounts
    ADD CONSTRAINT accounts_kind_matches_id
    CHECK ((kind = 'organization' AND id LIKE 'org:%') OR (kind = 'user' AND id NOT LIKE 'org:%'))
    NOT VALID;

CREATE VIEW users AS
    SELECT id, email, stripe_customer_id, paid, created_at, updated_at, refreshed_at,
           customer_key_attempt, checkout_session_id, checkout_session_price,
           checkout_session_url
    FROM accounts
    WHERE kind = 'user';

-- The same for organisations, keyed by the app's organisation id.
CREATE VIEW organizations AS
    SELECT substr(id, 5) AS id, name, email, stripe_customer_id, paid, created_at, updated_at
    FROM accounts
    WHERE kind = 'organization';

-- `subscriptions.user_id` keeps its name (apps may read it) and now holds the
-- account's key, as its foreign key to `accounts` already says.
COMMENT ON COLUMN subscriptions.user_id IS
    'The account (accounts.id): a user id, or org:<org id> for an organisation.';

-- As before, over `accounts` (a PL/pgSQL body names tables by name when it
-- runs, so it would otherwise write through the `users` view and miss
-- organisations).
CREATE OR REPLACE FUNCTION billing_recompute_paid(
    p_user_id TEXT,
    p_now TIMESTAMPTZ,
    p_grace_secs BIGINT,
    p_paused_is_paid BOOLEAN
)
RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE accounts SET paid = p.paid, updated_at = now()
    FROM (SELECT EXISTS (SELECT 1 FROM subscriptions s
                         WHERE s.user_id = p_user_id
                           AND billing_grants_access(s.status, s.past_due_since, s.pause_behavior,
                                                     p_now, p_grace_secs, p_paused_is_paid)) AS paid) p
    WHERE accounts.id = p_user_id AND accounts.paid IS DISTINCT FROM p.paid;
    RETURN FOUND;
END;
$$;
