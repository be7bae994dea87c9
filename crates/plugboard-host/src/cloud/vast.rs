//! Vast.ai instances (`https://console.vast.ai/api/v0`): GPU containers
//! rented from marketplace offers, for `cloud_container`.
//!
//! Renting is two steps: search the offers (`POST /bundles/` with
//! filters: `gpu_name`, `num_gpus`, `reliability`, `rentable`, ordered by
//! `dph_total`), then accept one (`PUT /asks/{offer_id}/` with the image,
//! `disk`, `label` and `runtype`). The marker is the instance's `label`,
//! set in that same request. [`quote`](Provider::quote) is the cheapest
//! matching offer's `dph_total`; [`create`](Provider::create) rents the
//! cheapest matching offer at that moment and keeps its id and price in
//! the instance's `raw` (`offer_id`, `dph_total`). The price cap is checked
//! against the cheapest offer (so an offer above it gives "too expensive",
//! not "no capacity"). Its quirks, each handled here:
//!
//! * `GET /instances/{id}/` answers `{"instances": {…}}`: one object, not
//!   a list (the listing, `GET /instances/`, is a list);
//! * `actual_status` is `null` while the instance is being set up
//!   (provisioning), then `loading`, then `running`;
//! * storage bills from creation, GPU time from running:
//!   [`bills_from_create`](Provider::bills_from_create) is true;
//! * SSH is reached directly on `public_ipaddr` and the host port mapped
//!   to the container's 22 (`ports["22/tcp"][0].HostPort`, a string), or
//!   through Vast's proxy (`ssh_host`, `ssh_port`) when there is no direct
//!   mapping.
//!
//! A region other than `any` filters offers by `geolocation`. The lease
//! watchdog is passed as the instance's `onstart` script. The key is
//! `VAST_API_KEY`; the base URL `PLUGBOARD_VAST_API_URL`.

use async_trait::async_trait;
use plugboard_core::CloudProvider;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::http::RestApi;
use super::{ApiKey, Instance, InstanceRequest, InstanceState, Provider, ProviderError, Quote};

/// The provider name in manifests.
pub const NAME: &str = "vast_ai";
/// The environment variable (or secret) holding the API key.
pub const KEY_ENV: &str = "VAST_API_KEY";
/// The environment variable overriding the API's base URL.
pub const URL_ENV: &str = "PLUGBOARD_VAST_API_URL";
/// The public API.
pub const DEFAULT_URL: &str = "https://console.vast.ai/api/v0";
/// The region that means "any offer, wherever it is".
pub const ANY_REGION: &str = "any";

/// How many of the cheapest offers a create tries when one is taken
/// between the search and the rent.
const OFFERS_TRIED: usize = 3;

/// Vast.ai's API.
#[derive(Debug)]
pub struct Vast {
    api: RestApi,
}

/// An offer: its id and price.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Offer {
    /// The ask id to rent.
    pub id: u64,
    /// USD per hour, everything included (`dph_total`).
    pub dph_total: f64,
}

fn message_of(body: &Value) -> Option<String> {
    let err = body.get("error").and_then(Value::as_str);
    let msg = body.get("msg").or_else(|| body.get("message")).and_then(Value::as_str);
    match (err, msg) {
        (Some(e), Some(m)) => Some(format!("{e}: {m}")),
        (Some(s), None) | (None, Some(s)) => Some(s.to_owned()),
        (None, None) => None,
    }
}

/// Vast's `actual_status` in the seed's words (`None`: the JSON `null` of
/// an instance being set up), given whether it has an SSH address yet.
pub fn normalise(raw: Option<&str>, reachable: bool) -> InstanceState {
    match raw {
        None | Some("created" | "loading" | "scheduling" | "rebooting") => InstanceState::Provisioning,
        Some("running") if reachable => InstanceState::Running,
        Some("running") => InstanceState::Provisioning,
        Some("stopped" | "exited") => InstanceState::Stopped,
        Some("destroyed") => InstanceState::Terminated,
        Some(_) => InstanceState::Unknown,
    }
}

fn bad(what: &str, detail: impl Into<String>) -> ProviderError {
    ProviderError::BadAnswer {
        provider: NAME,
        what: what.to_owned(),
        detail: detail.into(),
    }
}

/// A number Vast sends as a number or as a string.
fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn port(v: Option<&Value>) -> Option<u16> {
    number(v)
        .filter(|p| p.fract() == 0.0 && *p > 0.0 && *p <= 65535.0)
        .map(|p| p as u16)
}

/// The SSH address: direct (`public_ipaddr` and the host port of
/// `22/tcp`), else the proxy (`ssh_host`, `ssh_port`).
fn ssh_of(o: &Map<String, Value>) -> Option<(String, u16)> {
    let s = |k: &str| {
        o.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let direct = s("public_ipaddr").and_then(|ip| {
        let p = o.get("ports")?.get("22/tcp")?.as_array()?.first()?.get("HostPort");
        Some((ip, port(p)?))
    });
    direct.or_else(|| Some((s("ssh_host")?, port(o.get("ssh_port"))?)))
}

/// Reads one instance object; `region` is where it was asked for.
fn instance(v: &Value, region: &str, what: &str) -> Result<Instance, ProviderError> {
    let o = v.as_object().ok_or_else(|| bad(what, "an instance is not an object"))?;
    let id = match o.get("id") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(bad(what, "an instance has no id")),
    };
    let status = o.get("actual_status").and_then(Value::as_str);
    let ssh = ssh_of(o);
    let state = normalise(status, ssh.is_some());
    let running = state == InstanceState::Running;
    let mut raw = Map::new();
    for k in [
        "actual_status",
        "intended_status",
        "cur_state",
        "status_msg",
        "dph_total",
        "public_ipaddr",
        "ssh_host",
        "ssh_port",
        "ports",
        "geolocation",
        "machine_id",
        "image_uuid",
        "disk_space",
        "reliability2",
    ] {
        if let Some(v) = o.get(k) {
            raw.insert(k.into(), v.clone());
        }
    }
    let gpu_type = o.get("gpu_name").and_then(Value::as_str).map(str::to_owned);
    Ok(Instance {
        id,
        region: region.to_owned(),
        state,
        raw_state: status.unwrap_or("null").to_owned(),
        public_ip: ssh.as_ref().filter(|_| running).map(|(h, _)| h.clone()),
        ssh_port: ssh.filter(|_| running).map(|(_, p)| p),
        instance_type: gpu_type.clone(),
        gpu_type,
        gpu_count: number(o.get("num_gpus"))
            .filter(|n| *n >= 0.0)
            .map(|n| n as u32)
            .unwrap_or(0),
        usd_per_hour: number(o.get("dph_total")).filter(|p| p.is_finite() && *p >= 0.0),
        marker: o.get("label").and_then(Value::as_str).and_then(super::marker_from_name),
        raw,
    })
}

/// Reads `GET /instances/{id}/`: `{"instances": {…}}` (an object), or
/// a one-element list, or `null` for an instance that is gone.
fn one_instance(body: &Value, region: &str, what: &str) -> Result<Option<Instance>, ProviderError> {
    let v = match body.get("instances") {
        Some(v @ Value::Object(_)) => v,
        Some(Value::Array(a)) => match a.first() {
            Some(v) => v,
            None => return Ok(None),
        },
        Some(Value::Null) => return Ok(None),
        Some(_) => return Err(bad(what, "`instances` is neither an object nor a list")),
        None if body.get("id").is_some() => body,
        None => return Err(bad(what, "no `instances`")),
    };
    instance(v, region, what).map(Some)
}

/// The offer search body for `request` in `region`.
fn offer_query(region: &str, request: &InstanceRequest) -> Value {
    let mut q = json!({
        "rentable": { "eq": true },
        "rented": { "eq": false },
        "num_gpus": { "eq": request.gpu_count.max(1) },
        "type": "on-demand",
        "order": [["dph_total", "asc"]],
        "limit": 20,
    });
    if let Some(g) = request.gpu_type.as_deref().or(Some(request.instance_type.as_str()))
        && !g.is_empty()
        && g != ANY_REGION
    {
        q["gpu_name"] = json!({ "eq": g });
    }
    if let Some(r) = request.min_reliability {
        q["reliability"] = json!({ "gte": r });
    }
    if let Some(d) = request.disk_gb {
        q["disk_space"] = json!({ "gte": d });
    }
    if region != ANY_REGION && !region.is_empty() {
        q["geolocation"] = json!({ "eq": region });
    }
    q
}

/// The offers of a search answer (`{"offers": […]}`), cheapest first,
/// keeping only those that satisfy `request` (Vast's filters are applied
/// again here: a search answer is not trusted to have applied them).
fn offers(body: &Value, request: &InstanceRequest, what: &str) -> Result<Vec<Offer>, ProviderError> {
    let list = body
        .get("offers")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(what, "no `offers` list"))?;
    let want_gpu = request.gpu_type.as_deref();
    let mut out = Vec::new();
    for o in list {
        let (Some(id), Some(dph)) = (
            o.get("id").or_else(|| o.get("ask_contract_id")).and_then(Value::as_u64),
            number(o.get("dph_total")),
        ) else {
            continue;
        };
        if !dph.is_finite() || dph < 0.0 {
            continue;
        }
        if let Some(g) = want_gpu
            && o.get("gpu_name").and_then(Value::as_str).is_some_and(|n| n != g)
        {
            continue;
        }
        if number(o.get("num_gpus")).is_some_and(|n| n as u32 != request.gpu_count.max(1)) {
            continue;
        }
        if let Some(min) = request.min_reliability
            && number(o.get("reliability2").or_else(|| o.get("reliability"))).is_some_and(|r| r < min)
        {
            continue;
        }
        out.push(Offer { id, dph_total: dph });
    }
    out.sort_by(|a, b| a.dph_total.total_cmp(&b.dph_total));
    Ok(out)
}

impl Vast {
    /// A client for `base` with `key`.
    pub fn new(base: &str, key: ApiKey) -> Result<Vast, ProviderError> {
        Ok(Vast {
            api: RestApi::new(NAME, base, key)?,
        })
    }

    /// A client from the environment: `VAST_API_KEY` (or the given key),
    /// `PLUGBOARD_VAST_API_URL` or the public API.
    pub fn from_env(key: Option<ApiKey>) -> Result<Vast, ProviderError> {
        Ok(Vast {
            api: RestApi::configured(NAME, key, KEY_ENV, URL_ENV, DEFAULT_URL)?,
        })
    }

    /// The offers matching `request` in `region`, cheapest first.
    pub async fn search(&self, region: &str, request: &InstanceRequest) -> Result<Vec<Offer>, ProviderError> {
        let what = "searching offers";
        let body = self
            .api
            .call(
                what,
                Method::POST,
                "/bundles/",
                Some(&offer_query(region, request)),
                message_of,
                false,
            )
            .await?
            .unwrap_or(Value::Null);
        offers(&body, request, what)
    }

    async fn list_all(&self, region: &str) -> Result<Vec<Instance>, ProviderError> {
        let what = "listing instances";
        let body = self
            .api
            .call(what, Method::GET, "/instances/", None, message_of, false)
            .await?
            .unwrap_or(Value::Null);
        let list = body
            .get("instances")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(what, "no `instances` list"))?;
        list.iter().map(|v| instance(v, region, what)).collect()
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())
}

#[async_trait]
impl Provider for Vast {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cloud_provider(&self) -> CloudProvider {
        CloudProvider::VastAi
    }

    /// Disk bills from the create on, before the instance runs.
    fn bills_from_create(&self) -> bool {
        true
    }

    async fn quote(&self, region: &str, request: &InstanceRequest) -> Result<Option<Quote>, ProviderError> {
        Ok(Some(match self.search(region, request).await?.first() {
            Some(o) => Quote {
                usd_per_hour: o.dph_total,
                available: true,
            },
            None => Quote {
                usd_per_hour: 0.0,
                available: false,
            },
        }))
    }

    async fn create(&self, region: &str, request: &InstanceRequest, marker: &str) -> Result<Instance, ProviderError> {
        let what = "renting an offer";
        let image = request.image.as_deref().ok_or_else(|| ProviderError::Refused {
            provider: NAME,
            what: what.into(),
            message: "an instance needs an image (launch.image)".into(),
        })?;
        let found = self.search(region, request).await?;
        if found.is_empty() {
            return Err(ProviderError::Capacity {
                provider: NAME,
                region: region.to_owned(),
                message: format!(
                    "no rentable offer of {} × {}",
                    request.gpu_count.max(1),
                    request.gpu_type.as_deref().unwrap_or(&request.instance_type)
                ),
            });
        }
        let mut body = json!({
            "client_id": "me",
            "image": image,
            "disk": request.disk_gb.unwrap_or(16),
            "label": super::marker_name(marker),
            "runtype": "ssh_direct ssh_proxy",
            "env": { "PLUGBOARD_MARKER": marker },
        });
        if let Some(u) = &request.user_data {
            body["onstart"] = json!(u);
        }
        let mut last = None;
        for offer in found.iter().take(OFFERS_TRIED) {
            if let Some(max) = request.max_price
                && offer.dph_total > max
            {
                break;
            }
            let answer = match self
                .api
                .call(
                    what,
                    Method::PUT,
                    &format!("/asks/{}/", offer.id),
                    Some(&body),
                    message_of,
                    false,
                )
                .await
            {
                Ok(a) => a.unwrap_or(Value::Null),
                // Taken between the search and the rent: the next one.
                Err(e @ ProviderError::Refused { .. }) => {
                    tracing::info!(offer = offer.id, error = %e, "the offer is gone; trying the next cheapest");
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if answer.get("success").and_then(Value::as_bool) == Some(false) {
                last = Some(ProviderError::Refused {
                    provider: NAME,
                    what: what.into(),
                    message: message_of(&answer).unwrap_or_else(|| "success: false".into()),
                });
                continue;
            }
            let id = match answer.get("new_contract") {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) if valid_id(s) => s.clone(),
                _ => return Err(bad(what, "no `new_contract` id")),
            };
            let mut raw = Map::new();
            raw.insert("offer_id".into(), json!(offer.id));
            raw.insert("dph_total".into(), json!(offer.dph_total));
            raw.insert("actual_status".into(), Value::Null);
            return Ok(Instance {
                id,
                region: region.to_owned(),
                state: InstanceState::Provisioning,
                raw_state: "null".into(),
                public_ip: None,
                ssh_port: None,
                instance_type: Some(request.instance_type.clone()),
                gpu_type: request.gpu_type.clone(),
                gpu_count: request.gpu_count.max(1),
                usd_per_hour: Some(offer.dph_total),
                marker: Some(marker.to_owned()),
                raw,
            });
        }
        Err(last.unwrap_or_else(|| ProviderError::Capacity {
            provider: NAME,
            region: region.to_owned(),
            message: "no offer under max_price_per_hour".into(),
        }))
    }

    async fn get(&self, region: &str, id: &str) -> Result<Option<Instance>, ProviderError> {
        let what = "reading an instance";
        if !valid_id(id) {
            return Err(bad(what, format!("{id:?} is not an instance id")));
        }
        match self
            .api
            .call(what, Method::GET, &format!("/instances/{id}/"), None, message_of, true)
            .await?
        {
            None | Some(Value::Null) => Ok(None),
            Some(body) => one_instance(&body, region, what),
        }
    }

    async fn list_marked(&self, region: &str, prefix: &str) -> Result<Vec<Instance>, ProviderError> {
        Ok(self
            .list_all(region)
            .await?
            .into_iter()
            .filter(|i| i.state != InstanceState::Terminated)
            .filter(|i| i.marker.as_deref().is_some_and(|m| super::marker_prefix(m) == prefix))
            .collect())
    }

    async fn terminate(&self, _region: &str, id: &str) -> Result<(), ProviderError> {
        let what = "destroying an instance";
        if !valid_id(id) {
            return Err(bad(what, format!("{id:?} is not an instance id")));
        }
        self.api
            .call(
                what,
                Method::DELETE,
                &format!("/instances/{id}/"),
                None,
                message_of,
                true,
            )
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(status: Value) -> Value {
        json!({
            "id": 4242,
            "label": "plugboard-0123456789abcdef0123456789abcdef-3",
            "actual_status": status,
            "intended_status": "running",
            "public_ipaddr": "198.51.100.7",
            "ports": { "22/tcp": [{ "HostIp": "0.0.0.0", "HostPort": "41022" }] },
            "ssh_host": "ssh5.vast.ai",
            "ssh_port": 14242,
            "dph_total": 0.3125,
            "gpu_name": "RTX 4090",
            "num_gpus": 1,
            "onstart": "not kept",
            "jupyter_token": "not kept"
        })
    }

    #[test]
    fn a_shown_instance_is_an_object_not_a_list() {
        let i = one_instance(&json!({ "instances": inst(json!("running")) }), "any", "t")
            .expect("reads")
            .expect("one");
        assert_eq!(i.id, "4242");
        assert_eq!(i.state, InstanceState::Running);
        assert_eq!(i.public_ip.as_deref(), Some("198.51.100.7"));
        assert_eq!(i.ssh_port, Some(41022), "the direct mapping of 22/tcp");
        assert_eq!(i.usd_per_hour, Some(0.3125));
        assert_eq!(i.marker.as_deref(), Some("0123456789abcdef0123456789abcdef:3"));
        assert!(!i.raw.contains_key("jupyter_token") && !i.raw.contains_key("onstart"));
        // A list of one reads too; null is gone.
        assert!(
            one_instance(&json!({ "instances": [inst(json!("running"))] }), "any", "t")
                .expect("reads")
                .is_some()
        );
        assert_eq!(
            one_instance(&json!({ "instances": null }), "any", "t").expect("reads"),
            None
        );
        assert!(one_instance(&json!({ "instances": 3 }), "any", "t").is_err());
    }

    #[test]
    fn actual_status_null_is_provisioning_without_an_address() {
        let i = instance(&inst(Value::Null), "any", "t").expect("reads");
        assert_eq!(i.state, InstanceState::Provisioning);
        assert_eq!(i.raw_state, "null");
        assert_eq!((i.public_ip, i.ssh_port), (None, None));
        assert_eq!(
            instance(&inst(json!("loading")), "any", "t").expect("reads").state,
            InstanceState::Provisioning
        );
        assert_eq!(normalise(Some("exited"), false), InstanceState::Stopped);
        assert_eq!(normalise(Some("offline"), true), InstanceState::Unknown);
    }

    #[test]
    fn the_proxy_is_used_without_a_direct_mapping() {
        let mut v = inst(json!("running"));
        if let Some(o) = v.as_object_mut() {
            o.remove("ports");
        }
        let i = instance(&v, "any", "t").expect("reads");
        assert_eq!(i.public_ip.as_deref(), Some("ssh5.vast.ai"));
        assert_eq!(i.ssh_port, Some(14242));
        if let Some(o) = v.as_object_mut() {
            o.remove("ssh_host");
        }
        let i = instance(&v, "any", "t").expect("reads");
        assert_eq!(
            i.state,
            InstanceState::Provisioning,
            "running with no address is not up"
        );
    }

    #[test]
    fn offers_are_filtered_and_ordered_by_price() {
        let req = InstanceRequest {
            instance_type: "RTX 4090".into(),
            gpu_type: Some("RTX 4090".into()),
            gpu_count: 1,
            min_reliability: Some(0.95),
            ..Default::default()
        };
        let body = json!({ "offers": [
            { "id": 1, "dph_total": 0.50, "gpu_name": "RTX 4090", "num_gpus": 1, "reliability2": 0.99 },
            { "id": 2, "dph_total": 0.20, "gpu_name": "RTX 4090", "num_gpus": 1, "reliability2": 0.80 },
            { "id": 3, "dph_total": "0.30", "gpu_name": "RTX 4090", "num_gpus": 1, "reliability2": 0.97 },
            { "id": 4, "dph_total": 0.10, "gpu_name": "RTX 3090", "num_gpus": 1, "reliability2": 0.99 },
            { "id": 5, "dph_total": 0.05, "gpu_name": "RTX 4090", "num_gpus": 2, "reliability2": 0.99 },
            { "dph_total": 0.01 }
        ]});
        let got = offers(&body, &req, "t").expect("reads");
        assert_eq!(got.iter().map(|o| o.id).collect::<Vec<_>>(), vec![3, 1]);
        assert!(offers(&json!({}), &req, "t").is_err());
        let q = offer_query("any", &req);
        assert_eq!(q["gpu_name"]["eq"], "RTX 4090");
        assert_eq!(q["reliability"]["gte"], 0.95);
        assert_eq!(q["order"][0][0], "dph_total");
        assert!(q.get("geolocation").is_none());
        assert_eq!(offer_query("SE", &req)["geolocation"]["eq"], "SE");
    }

    #[test]
    fn error_bodies_give_error_and_msg() {
        assert_eq!(
            message_of(&json!({"success": false, "error": "no_such_ask", "msg": "Instance type no longer available"}))
                .as_deref(),
            Some("no_such_ask: Instance type no longer available")
        );
        assert_eq!(message_of(&json!({"success": true})), None);
    }
}
