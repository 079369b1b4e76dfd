//! The edge of the HTTP server: what happens to a connection around the routes. It owns the
//! access log line ([`access_log`]), the bound on how long a request body may take
//! ([`body_timeout`]), and the JSON bodies of the errors actix-http's dispatcher answers by
//! itself before any routing ([`raw_errors`]). `startup` wires them into the server.

pub(crate) mod access_log;
pub(crate) mod body_timeout;
pub mod raw_errors;
