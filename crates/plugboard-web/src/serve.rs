//! Serving the API on the data dir's Unix socket and an optional TCP address.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Extension;
use plugboard_host::Host;
use tokio::net::{TcpListener, UnixListener};

use crate::api::{ApiState, OverTcp, app};

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The Unix socket (created 0600; a stale one is replaced).
    pub socket: PathBuf,
    /// An optional TCP address.
    pub bind: Option<SocketAddr>,
    /// Token required on TCP; mandatory when `bind` is not loopback.
    pub token: Option<String>,
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without a token.
    #[error("refusing to listen on {0} without a token: pass --token (or bind to 127.0.0.1)")]
    TokenRequired(SocketAddr),
    /// An address could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("the API server failed")]
    Run(#[source] std::io::Error),
}

/// Serves the API until `shutdown` completes.
pub async fn serve(
    host: Arc<Host>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if let Some(addr) = opts.bind
        && !addr.ip().is_loopback()
        && opts.token.as_deref().is_none_or(str::is_empty)
    {
        return Err(ServeError::TokenRequired(addr));
    }
    let state = ApiState {
        host,
        token: opts.token.clone().filter(|t| !t.is_empty()),
    };
    let _ = std::fs::remove_file(&opts.socket);
    let unix = UnixListener::bind(&opts.socket).map_err(|source| ServeError::Bind {
        address: opts.socket.display().to_string(),
        source,
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&opts.socket, std::fs::Permissions::from_mode(0o600));
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let tcp_task = match opts.bind {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind {
                address: addr.to_string(),
                source,
            })?;
            let app = app(state.clone()).layer(Extension(OverTcp));
            let rx = stop_rx.clone();
            Some(tokio::spawn(async move {
                axum::serve(listener, app).with_graceful_shutdown(wait(rx)).await
            }))
        }
        None => None,
    };
    let result = axum::serve(unix, app(state))
        .with_graceful_shutdown(wait(stop_rx))
        .await;
    if let Some(t) = tcp_task {
        let _ = t.await;
    }
    let _ = std::fs::remove_file(&opts.socket);
    result.map_err(ServeError::Run)
}
