-- Self-healing (catch-up from the Events API and the drift check).

-- Where the next catch-up starts listing: claimed by the first run (so a
-- first run that fails part-way is resumed from the same point, not from the
-- newest event it managed to store, which is newer than those it missed:
-- Stripe lists newest first), and moved forward only by a run that listed
-- every page. One row.
CREATE TABLE stripe_catchup (
    id          BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    next_since  TIMESTAMPTZ NOT NULL,
    -- The last completed run: when it ended and how many events it applied.
    finished_at TIMESTAMPTZ,
    applied     INTEGER
);

-- When the drift check last re-read the subscription, so one whose renewal
-- Stripe has not made yet is re-read once an hour, not on every run.
-- Nullable without a default: adding it rewrites nothing.
ALTER TABLE subscriptions ADD COLUMN drift_checked_at TIMESTAMPTZ;
