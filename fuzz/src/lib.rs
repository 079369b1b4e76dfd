//! The service's parser sources, compiled on their own for fuzzing.
//!
//! The modules below are the real files of the main crate (included by path, not copied), laid
//! out under the same module paths as in the main crate so that their `crate::…` imports (e.g.
//! `crate::billing::status::SubscriptionStatus` in `events.rs`) resolve unchanged. Only files
//! whose dependencies are listed in this crate's Cargo.toml may be added here.
//!
//! A `#[path]` on an inline module names the directory its child modules are read from, relative
//! to this file's directory (`fuzz/src/`): `../../src/billing` is the main crate's `src/billing`.
//! (A `#[path]` on each child inside a plain inline module would instead be resolved from
//! `fuzz/src/billing/`, which does not exist, so the `..` components could not be followed.)

#[path = "../../src/billing"]
pub mod billing {
    pub mod status;
}

#[path = "../../src/stripe"]
pub mod stripe {
    pub mod events;
    pub mod signature;
}
