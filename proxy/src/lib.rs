//! `pulp-auth-proxy`: a reverse proxy that adds Pulp's basic-auth
//! credentials to requests from image builds, so the credentials live only
//! in this process.
//!
//! A request goes through phases, each a module with plain functions:
//! [`policy`] (refuse early) -> [`rewrite`] (strip client credentials and
//! hop-by-hop headers, then inject ours) -> [`upstream`] (pooled, verified
//! TLS, timeouts) -> [`respond`] (the one place failures become statuses),
//! or the upstream's body streamed back through [`body`]. With `[cache]`,
//! [`cache`] answers from disk or stores what streams back. [`server`] runs
//! the accept loop; `main` binds (via [`listener`]) and hands it a listener.

#![warn(missing_docs)]

pub mod access;
pub mod body;
pub mod cache;
pub mod conn;
pub mod credentials;
pub mod error;
pub mod health;
pub mod listener;
pub mod metrics;
pub mod policy;
pub mod respond;
pub mod rewrite;
pub mod server;
pub mod service;
pub mod upstream;
