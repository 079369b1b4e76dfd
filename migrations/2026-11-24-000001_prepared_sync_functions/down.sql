DROP FUNCTION billing_store_subscription(TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, TIMESTAMPTZ, BOOLEAN,
                                         TIMESTAMPTZ, BOOLEAN, TEXT[]);
DROP FUNCTION billing_recompute_paid(TEXT, TEXT[]);
