//! HTTP-level tests of the real service against a real Postgres and a fake
//! Stripe on loopback. One binary; each test has its own database.

mod auth;
mod browser;
mod emulated_billing;
mod emulator;
mod faults;
mod flows;
mod health;
mod hostile;
mod operations;
mod ordering;
mod page;
mod paid;
mod portal;
mod scale;
mod startup;
mod support;
mod webhooks;
