//! Lambda Cloud (`https://cloud.lambda.ai/api/v1`): on-demand GPU
//! instances through its REST API.
//!
//! The marker is the instance's name (`plugboard-LEDGERID-ROW`), set in
//! the launch request itself. Lambda quotes prices and capacity per type
//! (`/instance-types`), answers errors as `{"error": {"code", "message",
//! "suggestion"}}`, limits launches (about one per 12 s, a 429) and lets
//! an instance boot for minutes (`booting` → `active`). The key is
//! `LAMBDA_API_KEY`; the base URL `PLUGBOARD_LAMBDA_API_URL`.

use async_trait::async_trait;
use plugboard_core::CloudProvider;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::http::RestApi;
use super::{ApiKey, Instance, InstanceRequest, InstanceState, Provider, ProviderError, Quote};

/// The provider name in manifests.
pub const NAME: &str = "lambda_labs";
/// The environment variable (or secret) holding the API key.
pub const KEY_ENV: &str = "LAMBDA_API_KEY";
/// The environment variable overriding the API's base URL.
pub const URL_ENV: &str = "PLUGBOARD_LAMBDA_API_URL";
/// The public API.
pub const DEFAULT_URL: &str = "https://cloud.lambda.ai/api/v1";

/// Lambda Cloud's API.
#[derive(Debug)]
pub struct Lambda {
    api: RestApi,
}

/// The error code Lambda answers when no capacity is left.
const NO_CAPACITY: &str = "instance-operations/launch/insufficient-capacity";
/// The error code for an id that does not exist.
const NOT_FOUND: &str = "global/object-does-not-exist";

fn message_of(body: &Value) -> Option<String> {
    let e = body.get("error")?;
    let code = e.get("code").and_then(Value::as_str).unwrap_or("error");
    let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
    let mut s = format!("{code}: {msg}");
    if let Some(sug) = e.get("suggestion").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        s.push_str(&format!(" ({sug})"));
    }
    Some(s)
}

/// Lambda's status words in the seed's.
pub fn normalise(raw: &str) -> InstanceState {
    match raw {
        "booting" => InstanceState::Provisioning,
        "active" | "unhealthy" => InstanceState::Running,
        "terminating" => InstanceState::Stopping,
        "terminated" | "preempted" => InstanceState::Terminated,
        _ => InstanceState::Unknown,
    }
}

fn bad(what: &str, detail: impl Into<String>) -> ProviderError {
    ProviderError::BadAnswer {
        provider: NAME,
        what: what.to_owned(),
        detail: detail.into(),
    }
}

/// Reads one instance object.
fn instance(v: &Value, what: &str) -> Result<Instance, ProviderError> {
    let o = v.as_object().ok_or_else(|| bad(what, "an instance is not an object"))?;
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
    let id = s("id").ok_or_else(|| bad(what, "an instance has no id"))?;
    let raw_state = s("status").unwrap_or_else(|| "unknown".into());
    let itype = o.get("instance_type");
    let region = o
        .get("region")
        .and_then(|r| r.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let gpus = itype
        .and_then(|t| t.get("specs"))
        .and_then(|s| s.get("gpus"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let price = itype
        .and_then(|t| t.get("price_cents_per_hour"))
        .and_then(Value::as_f64)
        .map(|c| c / 100.0);
    let mut raw = Map::new();
    for k in ["status", "hostname", "ip", "private_ip", "ssh_key_names", "is_reserved"] {
        if let Some(v) = o.get(k) {
            raw.insert(k.into(), v.clone());
        }
    }
    Ok(Instance {
        id,
        region,
        state: normalise(&raw_state),
        raw_state,
        public_ip: s("ip").filter(|ip| !ip.is_empty()),
        ssh_port: None,
        instance_type: itype
            .and_then(|t| t.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        gpu_type: itype
            .and_then(|t| t.get("gpu_description"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        gpu_count: u32::try_from(gpus).unwrap_or(u32::MAX),
        usd_per_hour: price,
        marker: s("name").and_then(|n| super::marker_from_name(&n)),
        raw,
    })
}

impl Lambda {
    /// A client for `base` with `key`.
    pub fn new(base: &str, key: ApiKey) -> Result<Lambda, ProviderError> {
        Ok(Lambda {
            api: RestApi::new(NAME, base, key)?,
        })
    }

    /// A client from the environment: `LAMBDA_API_KEY` (or the given key),
    /// `PLUGBOARD_LAMBDA_API_URL` or the public API.
    pub fn from_env(key: Option<ApiKey>) -> Result<Lambda, ProviderError> {
        Ok(Lambda {
            api: RestApi::configured(NAME, key, KEY_ENV, URL_ENV, DEFAULT_URL)?,
        })
    }

    async fn list_all(&self) -> Result<Vec<Instance>, ProviderError> {
        let what = "listing instances";
        let body = self
            .api
            .call(what, Method::GET, "/instances", None, message_of, false)
            .await?
            .unwrap_or(Value::Null);
        let data = body
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(what, "no `data` list"))?;
        data.iter().map(|v| instance(v, what)).collect()
    }
}

#[async_trait]
impl Provider for Lambda {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cloud_provider(&self) -> CloudProvider {
        CloudProvider::LambdaLabs
    }

    async fn quote(&self, region: &str, request: &InstanceRequest) -> Result<Option<Quote>, ProviderError> {
        let what = "listing instance types";
        let body = self
            .api
            .call(what, Method::GET, "/instance-types", None, message_of, false)
            .await?
            .unwrap_or(Value::Null);
        let types = body
            .get("data")
            .and_then(Value::as_object)
            .ok_or_else(|| bad(what, "no `data` object"))?;
        let Some(t) = types.get(&request.instance_type) else {
            let mut known: Vec<&str> = types.keys().map(String::as_str).collect();
            known.sort_unstable();
            return Err(ProviderError::Refused {
                provider: NAME,
                what: "the instance type".into(),
                message: format!(
                    "Lambda has no instance type {:?} (it has: {})",
                    request.instance_type,
                    known.join(", ")
                ),
            });
        };
        let cents = t
            .get("instance_type")
            .and_then(|i| i.get("price_cents_per_hour"))
            .and_then(Value::as_f64)
            .ok_or_else(|| bad(what, format!("{} has no price_cents_per_hour", request.instance_type)))?;
        let available = t
            .get("regions_with_capacity_available")
            .and_then(Value::as_array)
            .is_some_and(|rs| rs.iter().any(|r| r.get("name").and_then(Value::as_str) == Some(region)));
        Ok(Some(Quote {
            usd_per_hour: cents / 100.0,
            available,
        }))
    }

    async fn create(&self, region: &str, request: &InstanceRequest, marker: &str) -> Result<Instance, ProviderError> {
        let what = "launching an instance";
        let mut body = json!({
            "region_name": region,
            "instance_type_name": request.instance_type,
            "ssh_key_names": request.ssh_key_name.iter().collect::<Vec<_>>(),
            "quantity": 1,
            "name": super::marker_name(marker),
        });
        if let Some(u) = &request.user_data {
            body["user_data"] = json!(u);
        }
        if let Some(img) = &request.image {
            body["image"] = json!({ "family": img });
        }
        let answer = self
            .api
            .call(
                what,
                Method::POST,
                "/instance-operations/launch",
                Some(&body),
                message_of,
                false,
            )
            .await
            .map_err(|e| match e {
                ProviderError::Refused { message, .. } if message.contains(NO_CAPACITY) => ProviderError::Capacity {
                    provider: NAME,
                    region: region.to_owned(),
                    message,
                },
                e => e,
            })?
            .unwrap_or(Value::Null);
        let id = answer
            .pointer("/data/instance_ids/0")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(what, "no data.instance_ids[0]"))?;
        // The launch answer holds only the id: read the rest.
        match self.get(region, id).await {
            Ok(Some(i)) => Ok(i),
            // Created but not yet listed: what is known.
            Ok(None) | Err(_) => Ok(Instance {
                id: id.to_owned(),
                region: region.to_owned(),
                state: InstanceState::Provisioning,
                raw_state: "booting".into(),
                public_ip: None,
                ssh_port: None,
                instance_type: Some(request.instance_type.clone()),
                gpu_type: None,
                gpu_count: 0,
                usd_per_hour: None,
                marker: Some(marker.to_owned()),
                raw: Map::new(),
            }),
        }
    }

    async fn get(&self, _region: &str, id: &str) -> Result<Option<Instance>, ProviderError> {
        let what = "reading an instance";
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(bad(what, format!("{id:?} is not an instance id")));
        }
        let body = match self
            .api
            .call(what, Method::GET, &format!("/instances/{id}"), None, message_of, true)
            .await
        {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(ProviderError::Refused { message, .. }) if message.contains(NOT_FOUND) => return Ok(None),
            Err(e) => return Err(e),
        };
        let data = body.get("data").ok_or_else(|| bad(what, "no `data`"))?;
        Ok(Some(instance(data, what)?))
    }

    async fn list_marked(&self, region: &str, prefix: &str) -> Result<Vec<Instance>, ProviderError> {
        Ok(self
            .list_all()
            .await?
            .into_iter()
            .filter(|i| i.region == region || region.is_empty())
            .filter(|i| i.state != InstanceState::Terminated)
            .filter(|i| i.marker.as_deref().is_some_and(|m| super::marker_prefix(m) == prefix))
            .collect())
    }

    async fn terminate(&self, _region: &str, id: &str) -> Result<(), ProviderError> {
        let what = "terminating an instance";
        let body = json!({ "instance_ids": [id] });
        match self
            .api
            .call(
                what,
                Method::POST,
                "/instance-operations/terminate",
                Some(&body),
                message_of,
                true,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(ProviderError::Refused { message, .. }) if message.contains(NOT_FOUND) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_normalised_and_unknown_ones_kept_billing() {
        assert_eq!(normalise("booting"), InstanceState::Provisioning);
        assert_eq!(normalise("active"), InstanceState::Running);
        assert_eq!(normalise("unhealthy"), InstanceState::Running);
        assert_eq!(normalise("terminating"), InstanceState::Stopping);
        assert_eq!(normalise("terminated"), InstanceState::Terminated);
        assert_eq!(normalise("warming-up"), InstanceState::Unknown);
        assert!(normalise("warming-up").may_bill());
    }

    #[test]
    fn an_instance_is_read_from_lambdas_shape() {
        let v = json!({
            "id": "0920582c7ff041399e34823a0be62549",
            "name": "plugboard-0123456789abcdef0123456789abcdef-7",
            "ip": "198.51.100.2",
            "status": "active",
            "region": { "name": "us-east-1", "description": "Virginia, USA" },
            "instance_type": {
                "name": "gpu_8x_a100",
                "gpu_description": "A100 (40 GB SXM4)",
                "price_cents_per_hour": 1032,
                "specs": { "vcpus": 124, "memory_gib": 1800, "storage_gib": 6000, "gpus": 8 }
            },
            "jupyter_token": "not-kept"
        });
        let i = instance(&v, "test").expect("reads");
        assert_eq!(i.state, InstanceState::Running);
        assert_eq!(i.region, "us-east-1");
        assert_eq!(i.gpu_count, 8);
        assert_eq!(i.usd_per_hour, Some(10.32));
        assert_eq!(i.marker.as_deref(), Some("0123456789abcdef0123456789abcdef:7"));
        assert!(!i.raw.contains_key("jupyter_token"));
        assert!(instance(&json!({"status": "active"}), "test").is_err());
        assert!(instance(&json!([1]), "test").is_err());
    }

    #[test]
    fn error_envelopes_give_code_message_and_suggestion() {
        let m = message_of(
            &json!({"error": {"code": "global/quota-exceeded", "message": "Quota exceeded", "suggestion": "Contact support"}}),
        );
        assert_eq!(
            m.as_deref(),
            Some("global/quota-exceeded: Quota exceeded (Contact support)")
        );
        assert_eq!(message_of(&json!({"data": 1})), None);
    }
}
