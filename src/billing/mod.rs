//! Billing domain rules: subscription statuses and the paid rule ([`status`]),
//! and who gets which Stripe customer and portal session ([`portal`]).

pub mod portal;
pub mod status;
