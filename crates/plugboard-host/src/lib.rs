//! plugboard-host: the runtime that owns running plugins.
//!
//! * [`manifest`]: `plugin.toml` files, discovered without starting anything;
//! * [`backend`]: one module per execution mode behind one trait (the
//!   resource: create, observe, stop, sweep);
//! * [`supervisor`]: the worker: intent, readiness, the manifest check,
//!   config, restarts, logs, the call handle — for every mode;
//! * [`ledger`]: every resource written down (SQLite, WAL) before it exists;
//! * [`gc`](mod@gc): a plan of what to end and why, carried out through backends;
//! * [`secrets`]: provider keys, from the environment or a 0600 file in the
//!   data dir, never printed;
//! * [`ssh`]: the SSH launcher (connections, commands and forwards to
//!   other machines) used by remote and cloud backends;
//! * [`tree`], [`cgroup`], [`zombies`], [`logs`], [`probe`], [`endpoint`],
//!   [`launch`], [`paths`]: the pieces those use.
//!
//! The guarantee it is built around: stopping, crashing or restarting the
//! host never leaves a plugin's process running.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod backend;
pub mod budget;
pub mod cgroup;
pub mod client;
pub mod cloud;
pub mod cost;
pub mod endpoint;
pub mod error;
pub mod gc;
pub mod handle;
pub mod host;
pub mod launch;
pub mod ledger;
pub mod logs;
pub mod manifest;
pub mod paths;
pub mod probe;
pub mod secrets;
pub mod ssh;
pub mod supervisor;
mod tls;
pub mod tree;
pub mod zombies;

pub use backend::{Backend, Backends};
pub use endpoint::Endpoint;
pub use error::HostError;
pub use gc::{GcOptions, GcPlan, GcReport, gc};
pub use handle::{CallError, CallStream, PluginHandle};
pub use host::{Host, HostConfig, PluginInfo, registry_for};
pub use ledger::{Ledger, LedgerError, MARKER_ENV, ResourceHandle, ResourceKind, ResourceRecord, ResourceStatus};
pub use manifest::{Catalog, Manifest, ManifestError, ManifestManager, Ready};
pub use paths::DataDir;
pub use supervisor::{RunState, Supervisor, SupervisorConfig, WorkerStatus};
