ALTER TABLE users
    DROP COLUMN checkout_session_id,
    DROP COLUMN checkout_session_price,
    DROP COLUMN checkout_session_url;
