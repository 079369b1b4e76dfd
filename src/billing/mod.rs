//! Billing domain rules: subscription statuses and the paid rule ([`status`]),
//! who gets which Stripe customer and portal session ([`portal`]), applying
//! Stripe's subscription state to Postgres ([`sync`]), reading it back from
//! the API without going backwards ([`refetch`]), repairing every customer
//! ([`resync`]), ending grace periods on time ([`sweep`]) and what a user's
//! billing status is ([`summary`]).

pub mod portal;
pub mod refetch;
pub mod resync;
pub mod status;
pub mod summary;
pub mod sweep;
pub mod sync;
