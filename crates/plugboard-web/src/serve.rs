//! Serving the API on the data dir's Unix socket and an optional TCP address.
//!
//! Each connection is HTTP/1.1 with a timer: a client must send a complete
//! request head within [`Timeouts::header_read`] of connecting or of its
//! previous answer (so neither a half-sent request line nor an idle
//! keep-alive connection is held forever), and a body within
//! [`Timeouts::body_read`]. On shutdown the listeners close, open
//! connections are asked to finish (event streams end), and whatever is still
//! open after [`Timeouts::shutdown_grace`] is dropped: no client can hold the
//! host up.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use plugboard_host::Host;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::api::{ApiState, OverTcp, Shutdown, app};

/// Connection time limits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// How long a connection may take to send a request head, from
    /// connecting or from its previous answer (an idle keep-alive connection
    /// is closed after this long too). Default 10 s.
    pub header_read: Duration,
    /// How long shutdown waits for open connections to finish before it
    /// drops them. Default 2 s.
    pub shutdown_grace: Duration,
    /// How long a request's body may take to arrive once its head has
    /// (408 after that). Default 30 s.
    pub body_read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(2),
            body_read: crate::api::BODY_READ_TIMEOUT,
        }
    }
}

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The Unix socket (created 0600; a stale socket is replaced, anything
    /// else at that path is refused).
    pub socket: PathBuf,
    /// An optional TCP address.
    pub bind: Option<SocketAddr>,
    /// Token required on TCP; mandatory when `bind` is not loopback.
    pub token: Option<String>,
    /// Connection time limits.
    pub timeouts: Timeouts,
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without a token.
    #[error("refusing to listen on {0} without a token: pass --token (or bind to 127.0.0.1)")]
    TokenRequired(SocketAddr),
    /// Something other than a socket is where the socket goes.
    #[error(
        "cannot create the host socket {}: {what} is at that path (not a socket); remove it, or use another data dir",
        path.display()
    )]
    NotASocket {
        /// The socket path.
        path: PathBuf,
        /// What is there: "a directory", "a regular file", …
        what: &'static str,
    },
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
    timeouts: Timeouts,
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

    /// Serves the API and dashboard until `shutdown` completes, then closes
    /// the listeners, lets open connections finish for at most the shutdown
    /// grace, and drops the rest.
    pub async fn serve(
        self,
        host: Arc<Host>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let (stop_tx, signal) = Shutdown::channel();
        let state = ApiState {
            host,
            token: self.token.clone(),
            shutdown: signal.clone(),
            body_read_timeout: self.timeouts.body_read,
        };
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let t = self.timeouts;
        let tcp_task = self.tcp.map(|listener| {
            let routes = app(state.clone()).layer(Extension(OverTcp));
            tokio::spawn(run(listener, routes, signal.clone(), t))
        });
        run(self.unix, app(state), signal, t).await;
        if let Some(task) = tcp_task {
            let _ = task.await;
        }
        let _ = std::fs::remove_file(&self.socket);
        Ok(())
    }
}

/// A listener that hands out connections.
trait Listen: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_io(&self) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
}

impl Listen for TcpListener {
    type Io = TcpStream;
    async fn accept_io(&self) -> std::io::Result<TcpStream> {
        let (s, _) = self.accept().await?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }
}

impl Listen for UnixListener {
    type Io = UnixStream;
    async fn accept_io(&self) -> std::io::Result<UnixStream> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// Errors of one connection attempt, after which accepting goes on at once.
fn per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted
    )
}

async fn run<L: Listen>(listener: L, routes: Router, signal: Shutdown, t: Timeouts) {
    let mut conns = tokio::task::JoinSet::new();
    let stop = signal.clone().wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept_io() => match accepted {
                Ok(io) => {
                    conns.spawn(connection(io, routes.clone(), signal.clone(), t));
                }
                Err(e) if per_connection(&e) => {}
                Err(e) => {
                    // Out of file descriptors and the like: wait, then go on.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(t.shutdown_grace, drain).await.is_err() {
        tracing::debug!(
            open = conns.len(),
            "dropping connections still open after the shutdown grace"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

async fn connection<I>(io: I, routes: Router, signal: Shutdown, t: Timeouts)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        tower::ServiceExt::oneshot(routes.clone(), req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(t.header_read);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let stop = signal.wait();
    tokio::pin!(stop);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = &mut stop => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn describe(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a named pipe"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "something else"
    }
}

/// Binds the Unix socket (0600; a stale socket replaced, anything else at
/// that path refused with what it is) and the optional TCP address; refuses
/// a non-loopback address without a token.
pub async fn bind(opts: ServeOptions) -> Result<Bound, ServeError> {
    use std::os::unix::fs::FileTypeExt;
    if let Some(addr) = opts.bind
        && !addr.ip().is_loopback()
        && opts.token.as_deref().is_none_or(str::is_empty)
    {
        return Err(ServeError::TokenRequired(addr));
    }
    match std::fs::symlink_metadata(&opts.socket) {
        Ok(m) if m.file_type().is_socket() => {
            let _ = std::fs::remove_file(&opts.socket);
        }
        Ok(m) => {
            return Err(ServeError::NotASocket {
                path: opts.socket,
                what: describe(m.file_type()),
            });
        }
        Err(_) => {}
    }
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
        timeouts: opts.timeouts,
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
