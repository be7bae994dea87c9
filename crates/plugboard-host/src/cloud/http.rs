//! The HTTP side shared by REST providers (Lambda Cloud now, RunPod and
//! Vast.ai next): one client with timeouts and rustls, a bearer key that is
//! never logged, and one classification of answers into
//! [`ProviderError`]s (429 with `Retry-After`, 5xx and transport failures
//! retryable; other 4xx refused with the provider's own message).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::ApiKey;
use super::ProviderError;

/// How long one request may take, connecting included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A REST API reached with a bearer key.
pub struct RestApi {
    provider: &'static str,
    base: String,
    key: ApiKey,
    client: reqwest::Client,
}

impl std::fmt::Debug for RestApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestApi")
            .field("provider", &self.provider)
            .field("base", &self.base)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// What the provider's error body says: extracted by each provider from
/// its own envelope.
pub type MessageOf = fn(&Value) -> Option<String>;

impl RestApi {
    /// A client for `base` (no trailing slash needed) with `key`.
    pub fn new(provider: &'static str, base: &str, key: ApiKey) -> Result<RestApi, ProviderError> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("plugboard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Transient {
                provider,
                what: "building an HTTP client".into(),
                message: e.to_string(),
            })?;
        Ok(RestApi {
            provider,
            base: base.trim_end_matches('/').to_owned(),
            key,
            client,
        })
    }

    /// A client configured the way every REST provider is: `key` (or the
    /// environment variable `key_env`), the base URL from `url_env` when
    /// set (else `default_url`); a missing key says where to put one.
    pub fn configured(
        provider: &'static str,
        key: Option<ApiKey>,
        key_env: &str,
        url_env: &str,
        default_url: &str,
    ) -> Result<RestApi, ProviderError> {
        let key = key
            .or_else(|| std::env::var(key_env).ok().filter(|k| !k.is_empty()).map(ApiKey::new))
            .ok_or_else(|| ProviderError::NoCredentials {
                provider,
                hint: format!("set {key_env} in the environment or with `plugboard secret set {key_env}`"),
            })?;
        let base = std::env::var(url_env)
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| default_url.to_owned());
        RestApi::new(provider, &base, key)
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `method path` with an optional JSON body and reads the JSON
    /// answer; `Ok(None)` for 404 when `not_found_is_none`.
    pub async fn call(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        message_of: MessageOf,
        not_found_is_none: bool,
    ) -> Result<Option<Value>, ProviderError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.client.request(method, &url).bearer_auth(self.key.expose());
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let provider = self.provider;
        let transient = |message: String| ProviderError::Transient {
            provider,
            what: what.to_owned(),
            message,
        };
        // reqwest's errors carry the URL, never the headers: safe to show.
        let resp = req.send().await.map_err(|e| transient(without_url(&e)))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.map_err(|e| transient(without_url(&e)))?;
        let json: Option<Value> = if text.trim().is_empty() {
            Some(Value::Null)
        } else {
            serde_json::from_str(&text).ok()
        };
        let message = || {
            json.as_ref()
                .and_then(message_of)
                .unwrap_or_else(|| format!("HTTP {status}: {}", snippet(&text)))
        };
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(ProviderError::RateLimited {
                provider,
                retry_after,
                message: message(),
            });
        }
        if status == StatusCode::NOT_FOUND && not_found_is_none {
            return Ok(None);
        }
        if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
            return Err(transient(format!("HTTP {status}: {}", message())));
        }
        if !status.is_success() {
            return Err(ProviderError::Refused {
                provider,
                what: what.to_owned(),
                message: format!("HTTP {}: {}", status.as_u16(), message()),
            });
        }
        json.map(Some).ok_or_else(|| ProviderError::BadAnswer {
            provider,
            what: what.to_owned(),
            detail: format!("not JSON: {}", snippet(&text)),
        })
    }
}

/// A transport error in words with its causes (the URL holds no secret:
/// the key travels in a header).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// At most 300 characters of a body, for messages.
pub fn snippet(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snippet_is_short_and_cut_on_a_char_boundary() {
        assert_eq!(snippet("  ok \n"), "ok");
        let long = "é".repeat(400);
        let s = snippet(&long);
        assert_eq!(s.chars().count(), 301);
    }
}
