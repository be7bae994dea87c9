//! A client of the host API over its Unix socket (what the CLI uses).

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No host listens on the socket.
    #[error("no plugboard host is running for data dir {} (start one with `plugboard serve`)", data_dir.display())]
    NoHost {
        /// The data dir whose socket was tried.
        data_dir: PathBuf,
    },
    /// The host answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Error code.
        code: String,
        /// Message.
        message: String,
        /// The whole error object (violations…).
        body: Value,
    },
    /// The exchange failed.
    #[error("talking to the host failed: {0}")]
    Transport(String),
}

/// A host API client.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
    data_dir: PathBuf,
}

impl ApiClient {
    /// A client for the host whose data dir is `data_dir` (socket `host.sock`).
    pub fn for_data_dir(data_dir: &Path) -> Self {
        ApiClient {
            socket: data_dir.join("host.sock"),
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// Sends a request and returns the raw response (for streams).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response<Incoming>, ClientError> {
        let io = UnixStream::connect(&self.socket).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => ClientError::NoHost {
                data_dir: self.data_dir.clone(),
            },
            _ => ClientError::Transport(format!("cannot connect to {}: {e}", self.socket.display())),
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap_or_default())
            .unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "plugboard")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let err = &body["error"];
        Err(ClientError::Api {
            status,
            code: err["code"].as_str().unwrap_or("error").to_owned(),
            message: err["message"]
                .as_str()
                .map_or_else(|| format!("the host answered HTTP {status}"), str::to_owned),
            body: err.clone(),
        })
    }

    /// A request whose answer is one JSON document.
    pub async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let resp = self.send(method, path, body).await?;
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Transport(format!("invalid JSON from the host: {e}")))
    }
}
