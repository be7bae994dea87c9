//! RunPod pods (`https://rest.runpod.io/v1`): GPU containers through its
//! REST API, for `cloud_container`.
//!
//! The marker is the pod's name (`plugboard-LEDGERID-ROW`), set in the
//! create request itself (`POST /pods`); `GET /pods?name=…` finds it
//! again. RunPod rents by GPU type (`gpuTypeIds`, `gpuCount`,
//! `cloudType` SECURE or COMMUNITY) and publishes the pod's SSH on a port
//! of its choosing: `portMappings` maps the container's 22 to it, beside
//! `publicIp`. Its quirks, each handled here:
//!
//! * `costPerHr` comes as a string (`"0.74"`) or as a number;
//! * `publicIp` is empty and `portMappings` empty or missing until the pod
//!   is up: such a pod is not running yet and has no address, whatever
//!   its `desiredStatus` says;
//! * `DELETE /pods/{id}` answers an empty body;
//! * a deleted pod answers 404: it is gone.
//!
//! RunPod publishes no price through this API before a create, so
//! [`quote`](Provider::quote) answers `None` and the price is the pod's
//! `costPerHr`. There is no first-boot script for a pod: the lease
//! watchdog does not run there, and `plugboard gc` (which finds pods by
//! name) is what ends a pod whose host died. The key is `RUNPOD_API_KEY`;
//! the base URL `PLUGBOARD_RUNPOD_API_URL`.

use async_trait::async_trait;
use plugboard_core::CloudProvider;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::http::RestApi;
use super::{ApiKey, Instance, InstanceRequest, InstanceState, Provider, ProviderError, Quote};

/// The provider name in manifests.
pub const NAME: &str = "runpod";
/// The environment variable (or secret) holding the API key.
pub const KEY_ENV: &str = "RUNPOD_API_KEY";
/// The environment variable overriding the API's base URL.
pub const URL_ENV: &str = "PLUGBOARD_RUNPOD_API_URL";
/// The public API.
pub const DEFAULT_URL: &str = "https://rest.runpod.io/v1";

/// The region that means "wherever RunPod has the GPU".
pub const ANY_REGION: &str = "any";

/// RunPod's pod API.
#[derive(Debug)]
pub struct RunPod {
    api: RestApi,
}

/// What RunPod says when no machine has the GPU now.
const NO_CAPACITY: [&str; 2] = ["no longer any instances available", "no instances available"];

fn message_of(body: &Value) -> Option<String> {
    match body.get("error") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(e) => e
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| Some(e.to_string())),
        None => body.get("message").and_then(Value::as_str).map(str::to_owned),
    }
}

/// RunPod's `desiredStatus` in the seed's words, given whether the pod
/// has an address yet (a `RUNNING` pod without one is still starting).
pub fn normalise(raw: &str, reachable: bool) -> InstanceState {
    match raw {
        "RUNNING" if reachable => InstanceState::Running,
        "RUNNING" | "CREATED" | "PROVISIONING" | "STARTING" | "RESTARTING" => InstanceState::Provisioning,
        "EXITED" | "STOPPED" => InstanceState::Stopped,
        "TERMINATED" => InstanceState::Terminated,
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

/// A price that RunPod sends as a number or as a string of one.
fn price(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|p: &f64| p.is_finite() && *p >= 0.0)
}

/// The public port the container's SSH (22) is mapped to, if any:
/// `portMappings` is `{"22": 10341}` once the pod is up, `{}`, `null` or
/// absent before.
fn ssh_port_of(o: &Map<String, Value>) -> Option<u16> {
    let p = o.get("portMappings")?.as_object()?.get("22")?;
    match p {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|p| *p > 0)
}

/// Reads one pod object.
fn instance(v: &Value, what: &str) -> Result<Instance, ProviderError> {
    let o = v.as_object().ok_or_else(|| bad(what, "a pod is not an object"))?;
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
    let id = s("id")
        .filter(|i| !i.is_empty())
        .ok_or_else(|| bad(what, "a pod has no id"))?;
    let raw_state = s("desiredStatus").unwrap_or_else(|| "UNKNOWN".into());
    let public_ip = s("publicIp").filter(|ip| !ip.trim().is_empty());
    let ssh_port = ssh_port_of(o);
    let reachable = public_ip.is_some() && ssh_port.is_some();
    let gpu = o.get("gpu");
    let machine = o.get("machine");
    let gpu_type = gpu
        .and_then(|g| g.get("id").or_else(|| g.get("displayName")))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            machine
                .and_then(|m| m.get("gpuTypeId"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    let gpu_count = gpu
        .and_then(|g| g.get("count"))
        .or_else(|| o.get("gpuCount"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let region = machine
        .and_then(|m| m.get("dataCenterId"))
        .or_else(|| o.get("dataCenterId"))
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .unwrap_or(ANY_REGION)
        .to_owned();
    let mut raw = Map::new();
    for k in [
        "desiredStatus",
        "costPerHr",
        "publicIp",
        "portMappings",
        "image",
        "imageName",
        "lastStatusChange",
        "containerDiskInGb",
    ] {
        if let Some(v) = o.get(k) {
            raw.insert(k.into(), v.clone());
        }
    }
    Ok(Instance {
        id,
        region,
        state: normalise(&raw_state, reachable),
        raw_state,
        // No address until both the IP and the SSH mapping are there.
        public_ip: if reachable { public_ip } else { None },
        ssh_port: if reachable { ssh_port } else { None },
        instance_type: gpu_type.clone(),
        gpu_type,
        gpu_count: u32::try_from(gpu_count).unwrap_or(u32::MAX),
        usd_per_hour: price(o.get("costPerHr")),
        marker: s("name").and_then(|n| super::marker_from_name(&n)),
        raw,
    })
}

/// Reads a list of pods (`[…]`, or `{"pods": […]}`/`{"data": […]}`).
fn pods(body: &Value, what: &str) -> Result<Vec<Instance>, ProviderError> {
    let list = body
        .as_array()
        .or_else(|| body.get("pods").and_then(Value::as_array))
        .or_else(|| body.get("data").and_then(Value::as_array))
        .ok_or_else(|| bad(what, "not a list of pods"))?;
    list.iter().map(|v| instance(v, what)).collect()
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl RunPod {
    /// A client for `base` with `key`.
    pub fn new(base: &str, key: ApiKey) -> Result<RunPod, ProviderError> {
        Ok(RunPod {
            api: RestApi::new(NAME, base, key)?,
        })
    }

    /// A client from the environment: `RUNPOD_API_KEY` (or the given key),
    /// `PLUGBOARD_RUNPOD_API_URL` or the public API.
    pub fn from_env(key: Option<ApiKey>) -> Result<RunPod, ProviderError> {
        Ok(RunPod {
            api: RestApi::configured(NAME, key, KEY_ENV, URL_ENV, DEFAULT_URL)?,
        })
    }

    async fn list(&self, query: &str) -> Result<Vec<Instance>, ProviderError> {
        let what = "listing pods";
        let body = self
            .api
            .call(what, Method::GET, &format!("/pods{query}"), None, message_of, false)
            .await?
            .unwrap_or(Value::Null);
        pods(&body, what)
    }
}

fn in_region(i: &Instance, region: &str) -> bool {
    region == ANY_REGION || region.is_empty() || i.region == region
}

#[async_trait]
impl Provider for RunPod {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cloud_provider(&self) -> CloudProvider {
        CloudProvider::Runpod
    }

    async fn quote(&self, _region: &str, _request: &InstanceRequest) -> Result<Option<Quote>, ProviderError> {
        // The pod API prices a pod only once it exists (`costPerHr`).
        Ok(None)
    }

    async fn create(&self, region: &str, request: &InstanceRequest, marker: &str) -> Result<Instance, ProviderError> {
        let what = "creating a pod";
        let image = request.image.as_deref().ok_or_else(|| ProviderError::Refused {
            provider: NAME,
            what: what.into(),
            message: "a pod needs an image (launch.image)".into(),
        })?;
        let gpu = request.gpu_type.as_deref().unwrap_or(&request.instance_type);
        let mut body = json!({
            "name": super::marker_name(marker),
            "imageName": image,
            "gpuTypeIds": [gpu],
            "gpuCount": request.gpu_count.max(1),
            "cloudType": request.cloud_type.as_deref().unwrap_or("SECURE"),
            "ports": ["22/tcp"],
            "supportPublicIp": true,
            "env": { "PLUGBOARD_MARKER": marker },
        });
        if let Some(d) = request.disk_gb {
            body["containerDiskInGb"] = json!(d);
        }
        if region != ANY_REGION && !region.is_empty() {
            body["dataCenterIds"] = json!([region]);
        }
        let capacity = |message: &str| NO_CAPACITY.iter().any(|n| message.to_ascii_lowercase().contains(n));
        let answer = self
            .api
            .call(what, Method::POST, "/pods", Some(&body), message_of, false)
            .await
            .map_err(|e| match e {
                ProviderError::Refused { message, .. } | ProviderError::Transient { message, .. }
                    if capacity(&message) =>
                {
                    ProviderError::Capacity {
                        provider: NAME,
                        region: region.to_owned(),
                        message,
                    }
                }
                e => e,
            })?
            .unwrap_or(Value::Null);
        let mut pod = instance(&answer, what)?;
        if pod.marker.is_none() {
            pod.marker = Some(marker.to_owned());
        }
        Ok(pod)
    }

    async fn get(&self, _region: &str, id: &str) -> Result<Option<Instance>, ProviderError> {
        let what = "reading a pod";
        if !valid_id(id) {
            return Err(bad(what, format!("{id:?} is not a pod id")));
        }
        match self
            .api
            .call(what, Method::GET, &format!("/pods/{id}"), None, message_of, true)
            .await?
        {
            // A deleted pod is not found: gone.
            None => Ok(None),
            Some(Value::Null) => Ok(None),
            Some(body) => Ok(Some(instance(&body, what)?)),
        }
    }

    async fn find(&self, region: &str, marker: &str) -> Result<Vec<Instance>, ProviderError> {
        let name = super::marker_name(marker);
        Ok(self
            .list(&format!("?name={name}"))
            .await?
            .into_iter()
            .filter(|i| in_region(i, region))
            .filter(|i| i.state != InstanceState::Terminated)
            .filter(|i| i.marker.as_deref() == Some(marker))
            .collect())
    }

    async fn list_marked(&self, region: &str, prefix: &str) -> Result<Vec<Instance>, ProviderError> {
        Ok(self
            .list("")
            .await?
            .into_iter()
            .filter(|i| in_region(i, region))
            .filter(|i| i.state != InstanceState::Terminated)
            .filter(|i| i.marker.as_deref().is_some_and(|m| super::marker_prefix(m) == prefix))
            .collect())
    }

    async fn terminate(&self, _region: &str, id: &str) -> Result<(), ProviderError> {
        let what = "deleting a pod";
        if !valid_id(id) {
            return Err(bad(what, format!("{id:?} is not a pod id")));
        }
        // An empty body (or 404: already gone) both mean done.
        self.api
            .call(what, Method::DELETE, &format!("/pods/{id}"), None, message_of, true)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(cost: Value, ip: &str, ports: Value) -> Value {
        json!({
            "id": "xedezhzb9la3ye",
            "name": "plugboard-0123456789abcdef0123456789abcdef-7",
            "desiredStatus": "RUNNING",
            "costPerHr": cost,
            "publicIp": ip,
            "portMappings": ports,
            "gpu": { "id": "NVIDIA RTX A4000", "count": 1, "displayName": "RTX A4000" },
            "machine": { "dataCenterId": "EU-RO-1", "gpuTypeId": "NVIDIA RTX A4000" },
            "image": "runpod/base:0.6",
            "env": { "SECRET": "not-kept" }
        })
    }

    #[test]
    fn cost_per_hr_is_read_as_a_string_or_a_number() {
        let i = instance(&pod(json!("0.74"), "203.0.113.9", json!({"22": 10341})), "t").expect("reads");
        assert_eq!(i.usd_per_hour, Some(0.74));
        let i = instance(&pod(json!(0.25), "203.0.113.9", json!({"22": 10341})), "t").expect("reads");
        assert_eq!(i.usd_per_hour, Some(0.25));
        let i = instance(&pod(json!("n/a"), "203.0.113.9", json!({"22": 10341})), "t").expect("reads");
        assert_eq!(i.usd_per_hour, None);
    }

    #[test]
    fn a_running_pod_is_read_with_its_mapped_ssh_port() {
        let i = instance(
            &pod(json!("0.74"), "203.0.113.9", json!({"22": 10341, "8888": 10342})),
            "t",
        )
        .expect("reads");
        assert_eq!(i.state, InstanceState::Running);
        assert_eq!(i.public_ip.as_deref(), Some("203.0.113.9"));
        assert_eq!(i.ssh_port, Some(10341));
        assert_eq!(i.region, "EU-RO-1");
        assert_eq!(i.gpu_type.as_deref(), Some("NVIDIA RTX A4000"));
        assert_eq!(i.gpu_count, 1);
        assert_eq!(i.marker.as_deref(), Some("0123456789abcdef0123456789abcdef:7"));
        assert!(!i.raw.contains_key("env"), "the pod's env is never kept");
        assert!(instance(&json!({"name": "x"}), "t").is_err());
        assert!(instance(&json!("pod"), "t").is_err());
    }

    #[test]
    fn an_empty_public_ip_or_port_mapping_is_not_running_yet() {
        for (ip, ports) in [
            ("", json!({"22": 10341})),
            ("203.0.113.9", json!({})),
            ("203.0.113.9", Value::Null),
            ("", json!({})),
        ] {
            let i = instance(&pod(json!("0.74"), ip, ports.clone()), "t").expect("reads");
            assert_eq!(i.state, InstanceState::Provisioning, "{ip:?} {ports}");
            assert_eq!(i.public_ip, None);
            assert_eq!(i.ssh_port, None);
        }
        let mut v = pod(json!("0.74"), "", json!({}));
        if let Some(o) = v.as_object_mut() {
            o.remove("portMappings");
        }
        assert_eq!(instance(&v, "t").expect("reads").state, InstanceState::Provisioning);
    }

    #[test]
    fn statuses_are_normalised() {
        assert_eq!(normalise("EXITED", false), InstanceState::Stopped);
        assert_eq!(normalise("TERMINATED", false), InstanceState::Terminated);
        assert_eq!(normalise("RUNNING", true), InstanceState::Running);
        assert_eq!(normalise("MIGRATING", true), InstanceState::Unknown);
        assert!(normalise("MIGRATING", true).may_bill());
    }

    #[test]
    fn errors_and_lists_in_runpods_shapes() {
        assert_eq!(message_of(&json!({"error": "bad gpu"})).as_deref(), Some("bad gpu"));
        assert_eq!(
            message_of(&json!({"error": {"message": "nope"}})).as_deref(),
            Some("nope")
        );
        assert_eq!(message_of(&json!({"id": "x"})), None);
        let one = pod(json!("0.74"), "", json!({}));
        assert_eq!(pods(&json!([one.clone()]), "t").expect("a list").len(), 1);
        assert_eq!(pods(&json!({"pods": [one]}), "t").expect("wrapped").len(), 1);
        assert!(pods(&json!({"x": 1}), "t").is_err());
    }
}
