//! `pulp-auth-proxy`: a reverse proxy that adds Pulp's basic-auth
//! credentials to requests from image builds, so the credentials live only
//! in this process.
//!
//! A request goes through phases, each a module with plain functions, in
//! the order [`service`] shows: [`health`] (the proxy's own endpoints) ->
//! [`policy`] (refuse early) -> [`rewrite`] (strip client credentials and
//! hop-by-hop headers, then inject ours) -> [`cache`] when on, or
//! [`forward`] (send through [`upstream`]: pooled, verified TLS, timeouts;
//! refuse what [`framing`] cannot forward, [`scrub`] the credential out of
//! the answer; stream back through [`body`]) -> [`respond`] (the one place
//! outcomes become statuses). [`server`] runs the accept loop; `main` binds
//! (via [`listener`]) and hands it a listener.

#![warn(missing_docs)]

pub mod access;
pub mod body;
pub mod cache;
pub mod conn;
pub mod credentials;
pub mod error;
pub mod fetches;
pub mod forward;
pub mod framing;
pub mod health;
pub mod listener;
pub mod metrics;
pub mod policy;
pub mod redirect;
pub mod reload;
pub mod respond;
pub mod rewrite;
pub mod scrub;
pub mod server;
pub mod service;
pub mod state;
pub mod upstream;
pub mod watchdog;
