//! Everything the tests share, in one place: the service under test with its own database
//! ([`app`]), rows arranged through builders instead of SQL ([`given`]), signed Stripe
//! deliveries ([`events`]), the fake Stripe's answers ([`fake_stripe`]), the in-process
//! emulator ([`emulator`]), extra service processes ([`instance`]), a TCP proxy in front of
//! Postgres that cuts or freezes ([`proxy`]) and raw HTTP/1 over TCP ([`raw`]). A test file
//! needs one import: `use crate::support::*;`.

pub mod app;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod events;
pub mod fake_stripe;
pub mod given;
pub mod instance;
pub mod proxy;
pub mod raw;
pub mod tls;

pub use app::*;
#[cfg(feature = "emulator")]
pub use emulator::*;
pub use events::*;
pub use fake_stripe::*;
pub use instance::*;
pub use proxy::*;
pub use raw::*;
pub use tls::*;
