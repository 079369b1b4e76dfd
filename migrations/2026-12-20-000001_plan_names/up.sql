-- Plan names and prices (issue 17): what `GET /billing/status` says of a
-- subscription's plan, "Pro · $29.00 per month", kept from Stripe's
-- `price.*` and `product.*` events, and read from Stripe once for a
-- subscription whose price or product is not here yet. Subscriptions keep
-- naming their price and product by id (`subscriptions.price_id`,
-- `product_id`); these tables are looked up by those ids, so there is no
-- foreign key: a subscription may arrive before its price.

-- A price: what one period costs and how often. `unit_amount` is in the
-- currency's smallest unit (2900 is $29.00) and NULL for prices without one
-- (tiered, customer-chosen); `currency` is lower-case ISO 4217, NULL when
-- Stripe sent something else; `recurring_interval` (`day`, `week`, `month`,
-- `year`) and its count are NULL for a one-time price.
CREATE TABLE stripe_prices (
    id                       TEXT PRIMARY KEY,
    product_id               TEXT,
    nickname                 TEXT,
    unit_amount              BIGINT,
    currency                 TEXT,
    recurring_interval       TEXT,
    recurring_interval_count INTEGER,
    -- `price.deleted`: kept, with what it was, for the subscriptions that
    -- still bill it.
    deleted                  BOOLEAN NOT NULL DEFAULT FALSE,
    -- The Stripe time of the state stored (an event's `created`, or when a
    -- read from the API started): an older state never overwrites it.
    as_of                    TIMESTAMPTZ NOT NULL,
    updated_at               TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A product: its name, which is what people call the plan.
CREATE TABLE stripe_products (
    id         TEXT PRIMARY KEY,
    name       TEXT,
    deleted    BOOLEAN NOT NULL DEFAULT FALSE,
    as_of      TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
