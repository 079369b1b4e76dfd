-- The app's users as this service knows them. `id` is the JWT `sub`; the Stripe
-- customer id is stored the moment Stripe creates it, and is unique so one
-- customer can never be attached to two users.
CREATE TABLE users (
    id                 TEXT PRIMARY KEY,
    email              TEXT,
    stripe_customer_id TEXT UNIQUE,
    paid               BOOLEAN NOT NULL DEFAULT FALSE,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per Stripe subscription. `user_id` is NULL while the customer is not
-- linked to any user yet; it is filled in when the customer gets linked.
-- `last_event_at` is the Stripe `created` time of the newest event applied,
-- so an older (late, out-of-order) event never overwrites newer state.
CREATE TABLE subscriptions (
    id                   TEXT PRIMARY KEY,
    customer_id          TEXT NOT NULL,
    user_id              TEXT REFERENCES users (id) ON DELETE SET NULL,
    status               TEXT NOT NULL,
    price_id             TEXT,
    product_id           TEXT,
    current_period_end   TIMESTAMPTZ,
    cancel_at_period_end BOOLEAN NOT NULL DEFAULT FALSE,
    last_event_at        TIMESTAMPTZ NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_customer_id_idx ON subscriptions (customer_id);
CREATE INDEX subscriptions_user_id_idx ON subscriptions (user_id);

-- Every verified event, inserted in the same transaction as the state change it
-- causes: its primary key is what makes a redelivery a no-op.
CREATE TABLE stripe_events (
    id                TEXT PRIMARY KEY,
    type              TEXT NOT NULL,
    stripe_created_at TIMESTAMPTZ NOT NULL,
    received_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    outcome           TEXT NOT NULL
);
CREATE INDEX stripe_events_received_at_idx ON stripe_events (received_at);
