//! The external backend: a service plugboard does not own (a model server
//! someone else runs), used through the same handle as any plugin.
//!
//! Nothing is created, so nothing is ever ended: a stop only detaches, gc
//! and host death never touch it, and the ledger row says it is not owned.
//! The supervisor probes it while it is in use; a failed probe makes the
//! plugin `lost` (and a later good one `running` again).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::{Backend, BackendError, LaunchContext, Launched, Marked, Observation, Plan, Stopped, Target};
use crate::endpoint::Endpoint;
use crate::error::HostError;
use crate::ledger::{ResourceHandle, ResourceKind};
use crate::manifest::Manifest;

/// The external backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExternalBackend;

struct ExternalSpec {
    endpoint: Endpoint,
    token_env: Option<String>,
}

const KEYS: &str = "endpoint, token_env";

#[async_trait]
impl Backend for ExternalBackend {
    fn name(&self) -> &'static str {
        "external"
    }

    fn plan(&self, manifest: &Manifest, vars: &BTreeMap<String, String>) -> Result<Plan, HostError> {
        let bad = |key: &str, reason: String| HostError::BadLaunch {
            plugin: manifest.unique_id(),
            manifest: manifest.path.clone(),
            key: key.to_owned(),
            reason,
        };
        let l = &manifest.launch;
        if l.command.is_some() || !l.args.is_empty() || !l.env.is_empty() || l.cwd.is_some() || l.conda_env.is_some() {
            return Err(bad(
                "command",
                format!("an external service is not started by plugboard; its [launch] takes only {KEYS}"),
            ));
        }
        for key in l.extra.keys() {
            if !["endpoint", "token_env"].contains(&key.as_str()) {
                return Err(bad(key, format!("is not a launch key of external plugins ({KEYS})")));
            }
        }
        let text = l
            .extra
            .get("endpoint")
            .ok_or_else(|| HostError::MissingLaunch {
                plugin: manifest.unique_id(),
                field: "endpoint",
                mode: manifest.execution_mode,
                manifest: manifest.path.clone(),
            })?
            .as_str()
            .ok_or_else(|| bad("endpoint", "must be a string such as \"tcp://127.0.0.1:9000\"".into()))?;
        let text = crate::launch::expand(text, vars).map_err(|name| HostError::UndefinedVariable {
            plugin: manifest.unique_id(),
            name,
            manifest: manifest.path.clone(),
        })?;
        let endpoint: Endpoint = text
            .parse()
            .map_err(|e: crate::endpoint::EndpointError| bad("endpoint", e.to_string()))?;
        let token_env = match l.extra.get("token_env") {
            None => None,
            Some(v) => {
                let name = v
                    .as_str()
                    .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                    .ok_or_else(|| {
                        bad(
                            "token_env",
                            "must name an environment variable (letters, digits, _)".into(),
                        )
                    })?;
                Some(name.to_owned())
            }
        };
        Ok(Plan {
            kind: ResourceKind::Service,
            owned: false,
            price: manifest.price_estimate(),
            details: json!({ "endpoint": endpoint.to_string(), "token_env": token_env, "mode": manifest.execution_mode }),
            budget: crate::backend::BudgetHints::default(),
            spec: Box::new(ExternalSpec { endpoint, token_env }),
        })
    }

    async fn launch(&self, plan: &Plan, ctx: &LaunchContext) -> Result<Launched, HostError> {
        let spec = plan
            .spec
            .downcast_ref::<ExternalSpec>()
            .ok_or_else(|| HostError::Internal("external backend given another backend's plan".into()))?;
        let token =
            match &spec.token_env {
                None => None,
                Some(name) => Some(std::env::var(name).ok().filter(|t| !t.is_empty()).ok_or_else(|| {
                    HostError::MissingSecret {
                        plugin: ctx.plugin_id.clone(),
                        name: name.clone(),
                    }
                })?),
            };
        Ok(Launched {
            handle: ResourceHandle::Service {
                endpoint: spec.endpoint.to_string(),
            },
            endpoint: spec.endpoint.clone(),
            token,
            output: Vec::new(),
            notify: None,
            exit: None,
            keepalive: None,
            lost: None,
            price: None,
        })
    }

    async fn stop(&self, _target: &Target, _grace: Duration) -> Result<Stopped, BackendError> {
        // Not owned: detaching is all a stop does.
        Ok(Stopped::default())
    }

    async fn observe(&self, _target: &Target) -> Observation {
        Observation::Unknown
    }

    fn polls(&self) -> bool {
        true
    }

    async fn sweep(&self, _ledger_id: &str, _recorded: &[serde_json::Value]) -> Result<Vec<Marked>, BackendError> {
        Ok(Vec::new())
    }
}
