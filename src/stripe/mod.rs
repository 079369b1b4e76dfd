//! Everything that speaks Stripe: the API client wrapper ([`client`]), the
//! one HTTP transport every Stripe call goes through ([`transport`]), the
//! rate budget of its background reads ([`budget`]), the
//! webhook signature check ([`signature`]), the lenient webhook event types
//! ([`events`]) and the subscription status vocabulary ([`status`]). Nothing
//! here knows about users' access or HTTP answers.

pub mod budget;
pub mod client;
pub mod events;
pub mod signature;
pub mod status;
pub mod transport;
