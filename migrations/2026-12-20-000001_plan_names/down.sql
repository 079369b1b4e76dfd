DROP TABLE stripe_products;
DROP TABLE stripe_prices;
