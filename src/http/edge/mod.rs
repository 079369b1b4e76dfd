//! The edge of the HTTP server: what happens to a connection around the routes. It owns the
//! JSON bodies of the errors actix-http's dispatcher answers by itself before any routing
//! ([`raw_errors`]). `startup` wires it into the server.

pub mod raw_errors;
