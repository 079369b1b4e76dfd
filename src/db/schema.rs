// @generated automatically by Diesel CLI.

diesel::table! {
    accounts (id) {
        id -> Text,
        email -> Nullable<Text>,
        stripe_customer_id -> Nullable<Text>,
        paid -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        refreshed_at -> Nullable<Timestamptz>,
        customer_key_attempt -> Int4,
        checkout_session_id -> Nullable<Text>,
        checkout_session_price -> Nullable<Text>,
        checkout_session_url -> Nullable<Text>,
        kind -> Text,
        name -> Nullable<Text>,
    }
}

diesel::table! {
    stripe_catchup (id) {
        id -> Bool,
        next_since -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
        applied -> Nullable<Int4>,
    }
}

diesel::table! {
    stripe_entitlements (customer_id) {
        customer_id -> Text,
        lookup_keys -> Array<Text>,
        synced_at -> Nullable<Timestamptz>,
        requested -> Int8,
        satisfied -> Int8,
    }
}

diesel::table! {
    stripe_events (id) {
        id -> Text,
        #[sql_name = "type"]
        type_ -> Text,
        stripe_created_at -> Timestamptz,
        received_at -> Timestamptz,
        outcome -> Text,
    }
}

diesel::table! {
    stripe_prices (id) {
        id -> Text,
        product_id -> Nullable<Text>,
        nickname -> Nullable<Text>,
        unit_amount -> Nullable<Int8>,
        currency -> Nullable<Text>,
        recurring_interval -> Nullable<Text>,
        recurring_interval_count -> Nullable<Int4>,
        deleted -> Bool,
        as_of -> Timestamptz,
        updated_at -> Timestamptz,
        active -> Bool,
    }
}

diesel::table! {
    stripe_products (id) {
        id -> Text,
        name -> Nullable<Text>,
        deleted -> Bool,
        as_of -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    subscriptions (id) {
        id -> Text,
        customer_id -> Text,
        user_id -> Nullable<Text>,
        status -> Text,
        price_id -> Nullable<Text>,
        product_id -> Nullable<Text>,
        current_period_end -> Nullable<Timestamptz>,
        cancel_at_period_end -> Bool,
        last_event_at -> Timestamptz,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        cancel_at -> Nullable<Timestamptz>,
        pause_behavior -> Nullable<Text>,
        pause_resumes_at -> Nullable<Timestamptz>,
        past_due_since -> Nullable<Timestamptz>,
        source -> Text,
        previous_attributes -> Nullable<Jsonb>,
        synced_at -> Timestamptz,
        drift_checked_at -> Nullable<Timestamptz>,
        tie_by_previous -> Bool,
    }
}

diesel::joinable!(subscriptions -> accounts (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    stripe_catchup,
    stripe_entitlements,
    stripe_events,
    stripe_prices,
    stripe_products,
    subscriptions,
);
