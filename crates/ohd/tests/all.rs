//! Integration tests: the real `ohd` binary on a real port, driven over loopback by the clients
//! ohd's users use. One test binary, one module per behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod suite;
