//! End-to-end tests: the real `pulp-auth-proxy` binary against a real TLS
//! upstream on loopback. One test binary, one module per area.

mod config_errors;
mod forwarding;
mod tls;
