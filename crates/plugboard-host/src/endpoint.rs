//! Where a worker answers: a Unix socket, a TCP address, or an HTTP(S) URL.
//!
//! One type for every mode, so readiness, the call handle and the ledger
//! speak of endpoints the same way whatever created them. The text forms
//! are `unix:/path`, `tcp://host:port`, `http://host:port/base` and
//! `https://host:port/base`; the ledger stores them as text.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::client::Target;

/// A worker's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket.
    Unix(PathBuf),
    /// `host:port`, plain TCP.
    Tcp(String),
    /// An HTTP or HTTPS URL (a plain server's base URL).
    Url(String),
}

/// Why an endpoint string is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("endpoint {text:?} is not usable: {reason} (use unix:/path, tcp://host:port, http://… or https://…)")]
pub struct EndpointError {
    /// The text given.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

impl Endpoint {
    /// The protocol client's target for this endpoint, when the protocol
    /// can be spoken over it (Unix sockets, TCP and `http://` URLs).
    pub fn protocol_target(&self) -> Result<Target, EndpointError> {
        match self {
            Endpoint::Unix(p) => Ok(Target::Unix(p.clone())),
            Endpoint::Tcp(a) => Ok(Target::Tcp(a.clone())),
            Endpoint::Url(u) => {
                let uri: hyper::Uri = u.parse().map_err(|_| self.err("it does not parse as a URL"))?;
                if uri.scheme_str() != Some("http") {
                    return Err(self.err(
                        "the worker protocol is spoken over unix:, tcp:// or http:// endpoints; an https:// endpoint can be probed for readiness but not called",
                    ));
                }
                let auth = uri.authority().ok_or_else(|| self.err("it has no host"))?;
                Ok(Target::Tcp(format!(
                    "{}:{}",
                    auth.host(),
                    auth.port_u16().unwrap_or(80)
                )))
            }
        }
    }

    fn err(&self, reason: &str) -> EndpointError {
        EndpointError {
            text: self.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::Url(u) => f.write_str(u),
        }
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, EndpointError> {
        let bad = |reason: &str| EndpointError {
            text: s.to_owned(),
            reason: reason.into(),
        };
        if let Some(path) = s.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if !path.starts_with('/') {
                return Err(bad("a unix: endpoint needs an absolute socket path"));
            }
            if path.len() >= 104 {
                return Err(bad("the socket path is longer than a Unix socket allows"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            let (host, port) = addr
                .rsplit_once(':')
                .ok_or_else(|| bad("a tcp:// endpoint needs host:port"))?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad("a tcp:// endpoint needs a host and a port from 1 to 65535"));
            }
            return Ok(Endpoint::Tcp(addr.to_owned()));
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            let uri: hyper::Uri = s.parse().map_err(|_| bad("it does not parse as a URL"))?;
            if uri.host().is_none_or(str::is_empty) {
                return Err(bad("the URL has no host"));
            }
            return Ok(Endpoint::Url(s.trim_end_matches('/').to_owned()));
        }
        Err(bad("unknown scheme"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_and_prints_back() {
        for s in [
            "unix:/run/x.sock",
            "tcp://127.0.0.1:9000",
            "http://localhost:8000",
            "https://a.example/v1",
        ] {
            let e: Endpoint = s.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(e.to_string(), s);
        }
        assert_eq!(
            "unix:///run/x.sock".parse::<Endpoint>().ok(),
            Some(Endpoint::Unix("/run/x.sock".into()))
        );
    }

    #[test]
    fn bad_endpoints_say_what_is_wrong() {
        for (s, want) in [
            ("unix:rel.sock", "absolute"),
            ("tcp://nohost", "host:port"),
            ("tcp://h:99999", "port"),
            ("ftp://x", "unknown scheme"),
            ("http://", "URL"),
        ] {
            let e = s.parse::<Endpoint>().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn protocol_targets() {
        let t = |s: &str| s.parse::<Endpoint>().ok().map(|e| e.protocol_target());
        assert_eq!(t("http://127.0.0.1:81"), Some(Ok(Target::Tcp("127.0.0.1:81".into()))));
        assert!(matches!(t("https://127.0.0.1:81"), Some(Err(_))));
    }
}
