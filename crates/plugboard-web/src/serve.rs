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

/// Listeners bound and ready: addresses are known (and reachable) before
/// anything is announced.
#[derive(Debug)]
pub struct Bound {
    unix: UnixListener,
    socket: PathBuf,
    tcp: Option<TcpListener>,
    token: Option<String>,
}

impl Bound {
    /// The TCP address actually bound (port 0 resolved).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|t| t.local_addr().ok())
    }

    /// The Unix socket.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Serves the API and dashboard until `shutdown` completes.
    pub async fn serve(
        self,
        host: Arc<Host>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let state = ApiState {
            host,
            token: self.token.clone(),
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let tcp_task = self.tcp.map(|listener| {
            let routes = app(state.clone()).layer(Extension(OverTcp));
            let rx = stop_rx.clone();
            tokio::spawn(async move { axum::serve(listener, routes).with_graceful_shutdown(wait(rx)).await })
        });
        let result = axum::serve(self.unix, app(state))
            .with_graceful_shutdown(wait(stop_rx))
            .await;
        if let Some(t) = tcp_task {
            let _ = t.await;
        }
        let _ = std::fs::remove_file(&self.socket);
        result.map_err(ServeError::Run)
    }
}

/// Binds the Unix socket (0600, a stale one replaced) and the optional TCP
/// address; refuses a non-loopback address without a token.
pub async fn bind(opts: ServeOptions) -> Result<Bound, ServeError> {
    if let Some(addr) = opts.bind
        && !addr.ip().is_loopback()
        && opts.token.as_deref().is_none_or(str::is_empty)
    {
        return Err(ServeError::TokenRequired(addr));
    }
    let _ = std::fs::remove_file(&opts.socket);
    let unix = UnixListener::bind(&opts.socket).map_err(|source| ServeError::Bind {
        address: opts.socket.display().to_string(),
        source,
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&opts.socket, std::fs::Permissions::from_mode(0o600));
    }
    let tcp = match opts.bind {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| ServeError::Bind {
            address: addr.to_string(),
            source,
        })?),
        None => None,
    };
    Ok(Bound {
        unix,
        socket: opts.socket,
        tcp,
        token: opts.token.filter(|t| !t.is_empty()),
    })
}

/// Binds and serves until `shutdown` completes.
pub async fn serve(
    host: Arc<Host>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    bind(opts).await?.serve(host, shutdown).await
}
