-- The status cache (src/billing/status_cache.rs): every instance keeps the answers of
-- GET /billing/status in memory and listens on the channel `billing_status`. These triggers
-- notify it, inside the transaction that changes what an answer is made of, so a notification
-- exists exactly when the change is committed, whatever wrote it (a webhook, a refresh, the
-- catch-up, `sync`, a checkout, customer linking, an operator's SQL). The payload is the
-- account's key (accounts.id); `*` means "every account" (a price or product changed, and
-- every answer showing that plan with it).
-- An answer is made of: the account's email, name and customer (accounts), its subscriptions,
-- their prices and products, and its customer's features (stripe_entitlements.lookup_keys).
-- `paid` is not in it (the status judges the rule itself), so the sweep's and every other
-- recompute of that column notify nothing. Updates notify only when a column changed, so an
-- upsert that rewrites a row as it was costs nothing. Not covered: writes with
-- session_replication_role = replica (pg_restore, logical replication) or with the triggers
-- disabled; restart the instances after those.

CREATE FUNCTION billing_notify_account() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('billing_status', OLD.id);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('billing_status', NEW.id);  -- the same payload twice is sent once
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER billing_status_account_written
    AFTER INSERT OR DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION billing_notify_account();
CREATE TRIGGER billing_status_account_changed
    AFTER UPDATE ON accounts
    FOR EACH ROW
    WHEN ((OLD.id, OLD.email, OLD.name, OLD.stripe_customer_id, OLD.kind)
          IS DISTINCT FROM (NEW.id, NEW.email, NEW.name, NEW.stripe_customer_id, NEW.kind))
    EXECUTE FUNCTION billing_notify_account();

-- A subscription's account is subscriptions.user_id (the account key); an unlinked one
-- (NULL) is in no answer.
CREATE FUNCTION billing_notify_subscription() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.user_id IS NOT NULL THEN
        PERFORM pg_notify('billing_status', OLD.user_id);
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.user_id IS NOT NULL THEN
        PERFORM pg_notify('billing_status', NEW.user_id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER billing_status_subscription_written
    AFTER INSERT OR DELETE ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION billing_notify_subscription();
CREATE TRIGGER billing_status_subscription_changed
    AFTER UPDATE ON subscriptions
    FOR EACH ROW WHEN (OLD IS DISTINCT FROM NEW)
    EXECUTE FUNCTION billing_notify_subscription();

-- Features are stored by customer: the accounts holding it (at most one) are notified.
-- Recording that a read is owed (`requested`, `satisfied`) changes no answer. When no account
-- holds the customer as this transaction sees it, every answer goes (`*`): a link committing
-- concurrently could otherwise let a status read see the link with the old features after
-- this lookup, and keep them until the next change. Features change rarely, and rarer still
-- for a customer nobody holds.
CREATE FUNCTION billing_notify_entitlements() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('billing_status', a.id)
    FROM accounts a
    WHERE a.stripe_customer_id IN (OLD.customer_id, NEW.customer_id);
    IF NOT FOUND THEN
        PERFORM pg_notify('billing_status', '*');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER billing_status_entitlements_written
    AFTER INSERT OR DELETE ON stripe_entitlements
    FOR EACH ROW EXECUTE FUNCTION billing_notify_entitlements();
CREATE TRIGGER billing_status_entitlements_changed
    AFTER UPDATE ON stripe_entitlements
    FOR EACH ROW WHEN (OLD.lookup_keys IS DISTINCT FROM NEW.lookup_keys)
    EXECUTE FUNCTION billing_notify_entitlements();

-- A plan's name or price shows in every answer of every account on it: rare (price and product
-- events, the first read of a price), so every instance drops every answer.
CREATE FUNCTION billing_notify_everyone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('billing_status', '*');
    RETURN NULL;
END $$;

CREATE TRIGGER billing_status_price_written
    AFTER INSERT OR DELETE ON stripe_prices
    FOR EACH ROW EXECUTE FUNCTION billing_notify_everyone();
CREATE TRIGGER billing_status_price_changed
    AFTER UPDATE ON stripe_prices
    FOR EACH ROW
    WHEN ((OLD.id, OLD.product_id, OLD.nickname, OLD.unit_amount, OLD.currency,
           OLD.recurring_interval, OLD.recurring_interval_count, OLD.deleted, OLD.active)
          IS DISTINCT FROM
          (NEW.id, NEW.product_id, NEW.nickname, NEW.unit_amount, NEW.currency,
           NEW.recurring_interval, NEW.recurring_interval_count, NEW.deleted, NEW.active))
    EXECUTE FUNCTION billing_notify_everyone();
CREATE TRIGGER billing_status_product_written
    AFTER INSERT OR DELETE ON stripe_products
    FOR EACH ROW EXECUTE FUNCTION billing_notify_everyone();
CREATE TRIGGER billing_status_product_changed
    AFTER UPDATE ON stripe_products
    FOR EACH ROW
    WHEN ((OLD.id, OLD.name, OLD.deleted) IS DISTINCT FROM (NEW.id, NEW.name, NEW.deleted))
    EXECUTE FUNCTION billing_notify_everyone();

-- TRUNCATE fires no row trigger: every answer goes.

CREATE TRIGGER billing_status_accounts_truncated AFTER TRUNCATE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION billing_notify_everyone();
CREATE TRIGGER billing_status_subscriptions_truncated AFTER TRUNCATE ON subscriptions
    FOR EACH STATEMENT EXECUTE FUNCTION billing_notify_everyone();
CREATE TRIGGER billing_status_entitlements_truncated AFTER TRUNCATE ON stripe_entitlements
    FOR EACH STATEMENT EXECUTE FUNCTION billing_notify_everyone();
CREATE TRIGGER billing_status_prices_truncated AFTER TRUNCATE ON stripe_prices
    FOR EACH STATEMENT EXECUTE FUNCTION billing_notify_everyone();
CREATE TRIGGER billing_status_products_truncated AFTER TRUNCATE ON stripe_products
    FOR EACH STATEMENT EXECUTE FUNCTION billing_notify_everyone();
