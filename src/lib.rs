//! Stripe Customer Portal service: portal sessions for signed-in users, signed
//! webhook sync of subscriptions into Postgres, and the Billing Settings page.

pub mod auth;
pub mod billing;
pub mod clock;
pub mod config;
pub mod db;
#[cfg(feature = "emulator")]
mod emulator;
pub mod error;
pub mod metrics;
pub mod request_id;
pub mod routes;
pub mod startup;
pub mod stripe;
