//! The seed's cloud-aware protocol for real: [`CloudInstance`] implements
//! [`plugboard_core::CloudAware`] on any [`Provider`], with the same
//! find-before-create, price cap, region failover and confirmed
//! termination as the cloud backend ([`super::provision`]).
//!
//! The protocol is synchronous (as in the seed), so a `CloudInstance` runs
//! its own small runtime and blocks the calling thread; async code uses
//! [`super::provision`] directly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use plugboard_core::{CapabilityError, CloudAware, Plugin, RemoteResource};
use serde_json::{Map, Value};

use super::provision;
use super::retry::RetryPolicy;
use super::{InstanceRequest, Provider};

/// What a provisioned instance is, beside its `RemoteResource`.
#[derive(Debug, Clone)]
struct Held {
    resource: RemoteResource,
    region: String,
    id: String,
    /// The price stored at launch (quote, else the instance's own).
    price: Option<f64>,
}

/// One instance managed through the seed's cloud-aware protocol.
pub struct CloudInstance {
    provider: Arc<dyn Provider>,
    regions: Vec<String>,
    request: InstanceRequest,
    marker: String,
    max_price: Option<f64>,
    ssh_port: u16,
    boot_limit: Duration,
    policy: RetryPolicy,
    runtime: tokio::runtime::Runtime,
    held: Mutex<Option<Held>>,
}

impl std::fmt::Debug for CloudInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudInstance")
            .field("provider", &self.provider.name())
            .field("regions", &self.regions)
            .field("marker", &self.marker)
            .finish_non_exhaustive()
    }
}

impl CloudInstance {
    /// An instance of `request` on `provider`, tried in `regions` in order,
    /// carrying `marker` (a ledger marker, so a crash leaves it findable).
    pub fn new(
        provider: Arc<dyn Provider>,
        regions: Vec<String>,
        request: InstanceRequest,
        marker: impl Into<String>,
    ) -> std::io::Result<CloudInstance> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(CloudInstance {
            provider,
            regions,
            request,
            marker: marker.into(),
            max_price: None,
            ssh_port: 22,
            boot_limit: Duration::from_secs(900),
            policy: RetryPolicy::default(),
            runtime,
            held: Mutex::new(None),
        })
    }

    /// Refuses to provision above `usd_per_hour`.
    pub fn max_price(mut self, usd_per_hour: f64) -> CloudInstance {
        self.max_price = Some(usd_per_hour);
        self
    }

    /// How long provisioning may wait for `running` (default 15 min).
    pub fn boot_limit(mut self, limit: Duration) -> CloudInstance {
        self.boot_limit = limit;
        self
    }

    /// The retry policy for provider calls.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> CloudInstance {
        self.policy = policy;
        self
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads `config` over the instance's defaults: `region` or `regions`,
/// `instance_type`, `image`, `ssh_key_name`.
fn apply(config: &Map<String, Value>, regions: &mut Vec<String>, request: &mut InstanceRequest) -> Result<(), String> {
    for (k, v) in config {
        let text = || {
            v.as_str()
                .map(str::to_owned)
                .ok_or(format!("config {k} must be a string"))
        };
        match k.as_str() {
            "region" => *regions = vec![text()?],
            "regions" => {
                *regions = v
                    .as_array()
                    .and_then(|a| a.iter().map(|r| r.as_str().map(str::to_owned)).collect())
                    .ok_or("config regions must be a list of strings")?
            }
            "instance_type" => request.instance_type = text()?,
            "image" => request.image = Some(text()?),
            "ssh_key_name" => request.ssh_key_name = Some(text()?),
            other => {
                return Err(format!(
                    "config {other:?} is not known (region, regions, instance_type, image, ssh_key_name)"
                ));
            }
        }
    }
    if regions.is_empty() {
        return Err("no region to provision in".into());
    }
    Ok(())
}

impl CloudAware for CloudInstance {
    fn remote_resource_info(&self) -> Option<RemoteResource> {
        self.held().as_ref().map(|h| h.resource.clone())
    }

    fn provision(&self, config: &Map<String, Value>) -> Result<RemoteResource, CapabilityError> {
        let mut regions = self.regions.clone();
        let mut request = self.request.clone();
        apply(config, &mut regions, &mut request)?;
        let p = &*self.provider;
        let got = self.runtime.block_on(provision::acquire(
            p,
            &regions,
            &request,
            &self.marker,
            self.max_price,
            &self.policy,
        ))?;
        let price = got.quoted_usd_per_hour;
        // Held from the moment it exists, so that terminate() reaches it
        // whatever happens next.
        *self.held() = Some(Held {
            resource: provision::remote_resource(p, &got.instance, self.ssh_port, price),
            region: got.instance.region.clone(),
            id: got.instance.id.clone(),
            price,
        });
        let waited = self.runtime.block_on(provision::wait_running(
            p,
            &got.instance.region,
            &got.instance.id,
            self.boot_limit,
            &self.policy,
        ));
        let instance = match waited {
            Ok(i) => i,
            Err(e) => {
                // It never came up: end it now rather than leave it billing.
                return Err(match self.terminate() {
                    Ok(_) => format!("{e}; the instance was terminated").into(),
                    Err(t) => format!("{e}; terminating it failed too ({t}): call terminate() again").into(),
                });
            }
        };
        let resource = provision::remote_resource(p, &instance, self.ssh_port, price);
        *self.held() = Some(Held {
            resource: resource.clone(),
            region: instance.region.clone(),
            id: instance.id.clone(),
            price,
        });
        Ok(resource)
    }

    fn check_status(&self) -> Result<String, CapabilityError> {
        let Some((region, id)) = self.held().as_ref().map(|h| (h.region.clone(), h.id.clone())) else {
            return Ok("not_provisioned".into());
        };
        let got = self
            .runtime
            .block_on(super::retry::with_retries(&self.policy, "reading an instance", || {
                self.provider.get(&region, &id)
            }))?;
        let (state, raw) = match &got {
            Some(i) => (i.state.as_str().to_owned(), i.raw_state.clone()),
            None => ("terminated".to_owned(), "not found".to_owned()),
        };
        if let Some(h) = self.held().as_mut() {
            h.resource.status = state.clone();
            h.resource.metadata.insert("raw_status".into(), Value::from(raw));
            if let Some(ip) = got.as_ref().and_then(|i| i.public_ip.clone()) {
                h.resource.ssh_host = Some(ip);
            }
        }
        Ok(state)
    }

    fn terminate(&self) -> Result<bool, CapabilityError> {
        let Some((region, id)) = self.held().as_ref().map(|h| (h.region.clone(), h.id.clone())) else {
            return Ok(false);
        };
        self.runtime.block_on(provision::terminate_confirmed(
            &*self.provider,
            &region,
            &id,
            self.boot_limit,
            &self.policy,
        ))?;
        if let Some(h) = self.held().as_mut() {
            h.resource.status = "terminated".into();
        }
        Ok(true)
    }

    fn estimate_cost(&self, hours: f64) -> f64 {
        self.held()
            .as_ref()
            .and_then(|h| h.price.or(h.resource.estimated_cost_per_hour))
            .map(|p| p * hours.max(0.0))
            .unwrap_or(0.0)
    }
}

impl Plugin for CloudInstance {
    fn cloud(&self) -> Option<&dyn CloudAware> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_overrides_are_checked() {
        let mut regions = vec!["a".to_string()];
        let mut req = InstanceRequest {
            instance_type: "t".into(),
            image: None,
            ssh_key_name: None,
            user_data: None,
            tags: vec![],
            ..Default::default()
        };
        let mut c = Map::new();
        c.insert("regions".into(), serde_json::json!(["x", "y"]));
        c.insert("instance_type".into(), serde_json::json!("gpu_1x_a10"));
        apply(&c, &mut regions, &mut req).expect("applies");
        assert_eq!(regions, vec!["x", "y"]);
        assert_eq!(req.instance_type, "gpu_1x_a10");
        c.insert("colour".into(), serde_json::json!("red"));
        assert!(apply(&c, &mut regions, &mut req).is_err_and(|e| e.contains("colour")));
        let mut c = Map::new();
        c.insert("region".into(), serde_json::json!(3));
        assert!(apply(&c, &mut regions, &mut req).is_err_and(|e| e.contains("region")));
    }
}
