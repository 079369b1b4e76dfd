//! Everything that speaks Stripe: the API client wrapper ([`client`]), the
//! webhook signature check ([`signature`]) and the lenient webhook event types
//! ([`events`]).

pub mod client;
pub mod events;
pub mod signature;
