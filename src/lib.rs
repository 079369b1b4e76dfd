//! Stripe Customer Portal service: portal sessions for signed-in users, signed
//! webhook sync of subscriptions into Postgres, and the Billing Settings page.
//!
//! Layers, each importing only the ones below it (`docs/architecture.md`):
//! - [`startup`] and `main`: the composition root;
//! - [`http`]: routes, handlers, authentication, error answers, OpenAPI;
//! - [`billing`]: the use cases;
//! - [`db`], [`stripe`]: infrastructure;
//! - [`ids`], [`clock`], [`config`], [`metrics`], [`memory`]: shared by all;
//! - `emulator` (cargo feature, on by default): a stand-in for Stripe for
//!   development, beside the service.

pub mod billing;
pub mod clock;
pub mod config;
pub mod context;
pub mod db;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod http;
pub mod ids;
pub mod memory;
pub mod metrics;
pub mod startup;
pub mod stripe;
