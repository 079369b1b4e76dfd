//! Billing domain rules: subscription statuses and the paid rule ([`status`]),
//! who gets which Stripe customer and portal session ([`portal`]), applying
//! Stripe's subscription state to Postgres ([`sync`]) and what a user's
//! billing status is ([`summary`]).

pub mod portal;
pub mod resync;
pub mod status;
pub mod summary;
pub mod sync;
