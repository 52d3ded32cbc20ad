//! End-to-end tests: the real `pulp-auth-proxy` binary against a real TLS
//! upstream on loopback. One test binary, one module per area. Every test
//! ends with a leak check of the responses and the proxy's trace-level log.

mod apt_build;
mod audit;
mod build;
mod cache;
mod config_errors;
mod failures;
mod fetches;
mod forwarding;
mod kolla;
mod listening;
mod net;
mod packages;
mod policy;
mod pulp;
mod responses;
mod service;
mod smuggling;
mod storage;
mod systemd;
mod tls;
