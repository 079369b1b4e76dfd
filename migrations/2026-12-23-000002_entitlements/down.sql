DROP TABLE stripe_entitlements;
