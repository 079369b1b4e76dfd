//! HTTP-level tests of the real service against a real Postgres and a fake
//! Stripe on loopback. One binary; each test has its own database.

mod auth;
mod availability;
mod browser;
mod checkout;
mod edge;
mod entitlements;
// These drive the local Stripe emulator, which only the `emulator` feature builds.
#[cfg(feature = "emulator")]
mod emulated_billing;
#[cfg(feature = "emulator")]
mod emulator;
#[cfg(feature = "emulator")]
mod emulator_checkout;
#[cfg(feature = "emulator")]
mod emulator_restart;
mod faults;
mod flows;
mod healing;
mod health;
mod hostile;
mod metrics_labels;
mod migration;
mod operations;
mod ordering;
mod organisations;
mod page;
mod paid;
mod plans;
mod portal;
mod refresh;
mod scale;
mod startup;
mod status_cache;
mod stripe_client;
mod support;
mod webhooks;
mod without_emulator;
