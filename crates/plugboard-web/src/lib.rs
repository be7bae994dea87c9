//! plugboard-web: the host's HTTP face. The JSON API ([`api`]) that the CLI
//! uses, its [`client`], the browser [`dashboard`], and [`serve`], which
//! puts them on a 0600 Unix socket in the data dir and, optionally, on a TCP
//! address (loopback by default; anything wider needs a token).

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod api;
pub mod client;
pub mod csrf;
pub mod dashboard;
mod serve;

pub use client::{ApiClient, ClientError};
pub use serve::{Bound, ServeError, ServeOptions, Timeouts, bind, serve};
