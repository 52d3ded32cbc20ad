//! `ci-builder`: sets up the trusted bridge the proxy listens on, drives
//! Kolla image builds through `pulp-auth-proxy`, and audits the images.

#![warn(missing_docs)]

pub mod audit;
pub mod build;
pub mod cli;
pub mod error;
pub mod fetches;
pub mod kayobe;
pub mod kolla;
pub mod net;
pub mod tags;
