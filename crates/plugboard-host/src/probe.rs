//! Readiness probes: an HTTP GET over a Unix socket (the protocol's health
//! request), an HTTP GET to a URL, and a TCP connect. Each attempt is bounded
//! by a timeout; the supervisor retries until the plugin's ready timeout.

use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// The protocol's health path.
pub const HEALTH_PATH: &str = "/v1/health";

/// Why a probe attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Could not connect.
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// Where.
        target: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP request to {target} failed: {reason}")]
    Http {
        /// Where.
        target: String,
        /// What failed.
        reason: String,
    },
    /// The attempt took too long.
    #[error("no answer from {target} within {ms} ms")]
    Timeout {
        /// Where.
        target: String,
        /// The limit.
        ms: u128,
    },
    /// A URL the probe cannot use.
    #[error("ready.http_get URL {url:?} is not usable: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

async fn get_over<S>(io: S, target: &str, host: &str, path: &str, token: Option<&str>) -> Result<u16, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |reason: String| ProbeError::Http {
        target: target.to_owned(),
        reason,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| http(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::get(path).header(hyper::header::HOST, host);
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| http(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(|e| http(e.to_string()))?;
    let status = resp.status().as_u16();
    // Drain a bounded body so the connection closes cleanly.
    let _ = tokio::time::timeout(Duration::from_millis(200), resp.into_body().collect()).await;
    driver.abort();
    Ok(status)
}

/// GET `path` over the Unix socket at `socket`; returns the status code.
pub async fn http_get_unix(socket: &Path, path: &str, token: Option<&str>, limit: Duration) -> Result<u16, ProbeError> {
    let target = format!("unix:{}", socket.display());
    let attempt = async {
        let io = UnixStream::connect(socket)
            .await
            .map_err(|source| ProbeError::Connect {
                target: target.clone(),
                source,
            })?;
        get_over(io, &target, "localhost", path, token).await
    };
    tokio::time::timeout(limit, attempt).await.unwrap_or_else(|_| {
        Err(ProbeError::Timeout {
            target: target.clone(),
            ms: limit.as_millis(),
        })
    })
}

/// GET `path` at a worker's endpoint (Unix socket, TCP, or an `http://`
/// URL), sending `token` as bearer; returns the status code.
pub async fn http_get_endpoint(
    endpoint: &crate::endpoint::Endpoint,
    path: &str,
    token: Option<&str>,
    limit: Duration,
) -> Result<u16, ProbeError> {
    use crate::endpoint::Endpoint;
    match endpoint {
        Endpoint::Unix(p) => http_get_unix(p, path, token, limit).await,
        Endpoint::Tcp(addr) => http_get_tcp(&format!("tcp://{addr}"), addr, addr, path, token, limit).await,
        Endpoint::Url(u) => {
            let uri: Uri = u.parse().map_err(|_| ProbeError::BadUrl {
                url: u.clone(),
                reason: "it does not parse as a URL".into(),
            })?;
            if uri.scheme_str() == Some("https") {
                return https_get(u, path, token, limit).await;
            }
            let auth = uri.authority().ok_or_else(|| ProbeError::BadUrl {
                url: u.clone(),
                reason: "it has no host".into(),
            })?;
            let addr = format!("{}:{}", auth.host(), auth.port_u16().unwrap_or(80));
            http_get_tcp(&format!("tcp://{addr}"), &addr, auth.as_str(), path, token, limit).await
        }
    }
}

/// GET `path` over TCP to `addr` with `Host: host`; errors name `target`.
async fn http_get_tcp(
    target: &str,
    addr: &str,
    host: &str,
    path: &str,
    token: Option<&str>,
    limit: Duration,
) -> Result<u16, ProbeError> {
    let target = target.to_owned();
    let attempt = async {
        let io = TcpStream::connect(addr).await.map_err(|source| ProbeError::Connect {
            target: target.clone(),
            source,
        })?;
        get_over(io, &target, host, path, token).await
    };
    tokio::time::timeout(limit, attempt).await.unwrap_or_else(|_| {
        Err(ProbeError::Timeout {
            target: target.clone(),
            ms: limit.as_millis(),
        })
    })
}

/// GET an `http://` or `https://` URL; returns the status code.
pub async fn http_get_url(url: &str, limit: Duration) -> Result<u16, ProbeError> {
    let bad = |reason: &str| ProbeError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|_| bad("it does not parse as a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return https_get(url, "", None, limit).await,
        _ => return Err(bad("only http:// and https:// URLs are probed")),
    }
    let authority = uri.authority().ok_or_else(|| bad("it has no host"))?.clone();
    let addr = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    http_get_tcp(url, &addr, authority.as_str(), path, None, limit).await
}

/// Connects to `host:port`.
pub async fn tcp(addr: &str, limit: Duration) -> Result<(), ProbeError> {
    match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(ProbeError::Connect {
            target: addr.to_owned(),
            source,
        }),
        Err(_) => Err(ProbeError::Timeout {
            target: addr.to_owned(),
            ms: limit.as_millis(),
        }),
    }
}

/// GET over TLS (`url` + `path`); the system's and webpki's roots are
/// trusted, plus the PEM bundle named by `SSL_CERT_FILE` when set.
async fn https_get(url: &str, path: &str, token: Option<&str>, limit: Duration) -> Result<u16, ProbeError> {
    let full = format!("{}{}", url.trim_end_matches('/'), path);
    let http = |reason: String| ProbeError::Http {
        target: full.clone(),
        reason,
    };
    let client = crate::tls::client().map_err(|e| http(e.to_string()))?;
    let mut req = client.get(&full).timeout(limit);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(resp) => Ok(resp.status().as_u16()),
        Err(e) if e.is_timeout() => Err(ProbeError::Timeout {
            target: full.clone(),
            ms: limit.as_millis(),
        }),
        Err(e) => {
            let mut reason = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                reason.push_str(": ");
                reason.push_str(&s.to_string());
                src = s.source();
            }
            Err(http(reason))
        }
    }
}
