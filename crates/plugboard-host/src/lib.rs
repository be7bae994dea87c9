//! plugboard-host: the runtime that owns running plugins.
//!
//! * [`manifest`]: `plugin.toml` files, discovered without starting anything;
//! * [`supervisor`]: subprocess and conda workers started until ready,
//!   stopped as whole trees, watched and restarted;
//! * [`ledger`]: every resource written down (SQLite, WAL) before it exists;
//! * [`reaper`]: `gc` of resources whose host is gone, by identity and marker;
//! * [`tree`], [`logs`], [`probe`], [`launch`], [`paths`]: the pieces those use.
//!
//! The guarantee it is built around: stopping, crashing or restarting the
//! host never leaves a plugin's process running.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod client;
pub mod error;
pub mod handle;
pub mod host;
pub mod launch;
pub mod ledger;
pub mod logs;
pub mod manifest;
pub mod paths;
pub mod probe;
pub mod reaper;
pub mod supervisor;
pub mod tree;

pub use error::HostError;
pub use handle::{CallError, CallStream, PluginHandle};
pub use host::{Host, HostConfig, PluginInfo, registry_for};
pub use ledger::{Ledger, LedgerError, MARKER_ENV, ResourceRecord};
pub use manifest::{Catalog, Manifest, ManifestError, ManifestManager, Ready};
pub use paths::DataDir;
pub use reaper::{GcOptions, GcReport, gc};
pub use supervisor::{RunState, Supervisor, SupervisorConfig, WorkerStatus};
