//! plugboard worker protocol v1: the messages a host and a worker exchange,
//! and the [`Executor`] trait that both an in-process plugin and a worker
//! SDK implement, so that one handle calls any plugin wherever it runs.
//!
//! The wire is HTTP/1.1 + JSON over a Unix socket (local workers) or TCP
//! with a bearer token (remote ones). `docs/protocol.md` is the contract and
//! `docs/openapi.json` its machine-readable form. The protocol has a version
//! of its own, independent of plugboard's release version, and every message
//! tolerates unknown fields, so adding a field never breaks a peer.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod executor;
pub mod messages;

pub use executor::{CallContext, ExecError, Executor, Typed, TypedExecutor};
pub use messages::*;
