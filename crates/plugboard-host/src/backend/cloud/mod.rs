//! The cloud instance backend (cloud_vm, cloud_gpu, cloud_cpu, and
//! cloud_container on RunPod pods and Vast.ai instances): an instance
//! rented from a [`Provider`], a worker started on it over SSH (on the
//! port the provider mapped, for containers).
//!
//! Nothing outlives its owner:
//! * the ledger row exists before the create; the instance carries the
//!   marker from the create request on (a tag, its name); a launch cut off
//!   anywhere is found by that marker, and a retry adopts the instance
//!   instead of creating another;
//! * the handle is recorded the moment the instance exists
//!   ([`CreatedHook`](super::CreatedHook)), not after the worker is up;
//! * a stop terminates and returns only once the provider says
//!   `terminated` (or no longer knows the instance); an unknown state
//!   counts as billing;
//! * the sweep lists every instance carrying this ledger's marker in the
//!   regions its rows name;
//! * the instance runs a lease watchdog from boot ([`crate::cloud::lease`])
//!   that powers it off when the host stops renewing.
//!
//! The worker itself is started and watched exactly as a remote_ssh
//! worker (same launcher, same forward, same loss detection), against the
//! instance's address, with its host key taken on first contact into a
//! known_hosts file of its own.

mod plan;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::remote_ssh::{RemoteSpec, RemoteSshBackend};
use super::{Backend, BackendError, LaunchContext, Launched, Marked, Observation, Plan, Stopped, Target};
use crate::cloud::provision::{self, AcquireError};
use crate::cloud::retry::RetryPolicy;
use crate::cloud::{ApiKey, Instance, InstanceState, Provider, ProviderError, lambda, lease, marker_row, runpod, vast};
use crate::error::HostError;
use crate::ledger::{PriceSource, ResourceHandle, ResourceKind};
use crate::manifest::Manifest;
use crate::ssh::Destination;

use plan::{CloudSpec, plan_spec};
pub use plan::{PROVIDERS, instance_type_for_gpu};

/// How long a stop waits for the provider to confirm termination.
const TERMINATE_LIMIT: Duration = Duration::from_secs(600);

/// Finds a provider's key by name (`LAMBDA_API_KEY`…): the environment,
/// then the secret store.
pub type KeyLookup = Arc<dyn Fn(&str) -> Option<ApiKey> + Send + Sync>;

/// Keys from the environment, then from the secret store file `secrets`
/// (read each time a key is looked up, so `plugboard secret set` applies
/// without a restart).
pub fn key_lookup(secrets: Option<PathBuf>) -> KeyLookup {
    Arc::new(move |name: &str| {
        let store = secrets
            .as_ref()
            .and_then(|p| match crate::secrets::SecretStore::open(p) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the secret store");
                    None
                }
            });
        crate::secrets::lookup(name, store.as_ref()).map(|(key, _)| key)
    })
}

/// The providers the backend can reach, built on first use from their
/// keys (so a host with no cloud key starts fine and says what is missing
/// only when a cloud plugin starts).
pub struct Providers {
    keys: KeyLookup,
    built: Mutex<HashMap<String, Arc<dyn Provider>>>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.built().keys().cloned().collect();
        f.debug_struct("Providers")
            .field("built", &names)
            .finish_non_exhaustive()
    }
}

impl Providers {
    /// Providers whose keys come from `keys`.
    pub fn new(keys: KeyLookup) -> Providers {
        Providers {
            keys,
            built: Mutex::new(HashMap::new()),
        }
    }

    /// Providers whose keys come from the environment, then from the
    /// secret store at `secrets` (`plugboard secret set NAME`), read
    /// when a provider is first needed.
    pub fn from_env_and_store(secrets: Option<PathBuf>) -> Providers {
        Providers::new(key_lookup(secrets))
    }

    /// Uses `provider` for its name (tests, private endpoints).
    pub fn insert(&self, provider: Arc<dyn Provider>) {
        self.built().insert(provider.name().to_owned(), provider);
    }

    fn built(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<dyn Provider>>> {
        self.built.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The provider called `name`, built now if needed.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Provider>, ProviderError> {
        if let Some(p) = self.built().get(name) {
            return Ok(Arc::clone(p));
        }
        let p: Arc<dyn Provider> = match name {
            lambda::NAME => Arc::new(lambda::Lambda::from_env((self.keys)(lambda::KEY_ENV))?),
            runpod::NAME => Arc::new(runpod::RunPod::from_env((self.keys)(runpod::KEY_ENV))?),
            vast::NAME => Arc::new(vast::Vast::from_env((self.keys)(vast::KEY_ENV))?),
            #[cfg(feature = "ec2")]
            crate::cloud::ec2::NAME => Arc::new(crate::cloud::ec2::Ec2::from_env_or_keys(|n| (self.keys)(n))?),
            other => {
                return Err(ProviderError::NoCredentials {
                    provider: "cloud",
                    hint: format!("no provider {other:?} is built into this plugboard"),
                });
            }
        };
        self.built().insert(name.to_owned(), Arc::clone(&p));
        Ok(p)
    }
}

/// Where an instance is: provider, region, id.
type Place = (String, String, String);

/// An instance this host created (or adopted) and supervises.
struct Held {
    provider: Arc<dyn Provider>,
    region: String,
    id: String,
    dest: Destination,
    remote_socket: Option<String>,
    last: Mutex<Option<Instance>>,
    renew: tokio::task::JoinHandle<()>,
    /// The connection to the instance, held while it is supervised.
    _master: Arc<crate::ssh::Master>,
}

/// The cloud instance backend.
pub struct CloudBackend {
    providers: Arc<Providers>,
    ssh: RemoteSshBackend,
    policy: RetryPolicy,
    held: Mutex<HashMap<String, Arc<Held>>>,
    /// What the last sweep found, by marker: where a stop with no handle
    /// and no details (a sweep's find) terminates.
    swept: Mutex<HashMap<String, Vec<Place>>>,
}

impl std::fmt::Debug for CloudBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudBackend")
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

impl CloudBackend {
    /// A backend over `providers`.
    pub fn new(providers: Arc<Providers>) -> CloudBackend {
        CloudBackend {
            providers,
            ssh: RemoteSshBackend::new(),
            policy: RetryPolicy::default(),
            held: Mutex::new(HashMap::new()),
            swept: Mutex::new(HashMap::new()),
        }
    }

    /// The same backend with another retry policy for provider calls.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> CloudBackend {
        self.policy = policy;
        self
    }

    /// The providers it uses.
    pub fn providers(&self) -> &Arc<Providers> {
        &self.providers
    }

    fn held(&self, marker: &str) -> Option<Arc<Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).get(marker).cloned()
    }

    fn take_held(&self, marker: &str) -> Option<Arc<Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).remove(marker)
    }
}

fn launch_err(plugin: &str, provider: &str, e: impl std::fmt::Display) -> HostError {
    HostError::Cloud {
        plugin: plugin.to_owned(),
        provider: provider.to_owned(),
        reason: e.to_string(),
    }
}

/// The worker's target for the SSH launcher: its marker and destination.
fn worker_target(marker: &str, dest: &Destination, remote_socket: Option<&str>) -> Target {
    let mut details = dest.to_details();
    if let (Value::Object(d), Some(s)) = (&mut details, remote_socket) {
        d.insert("remote_socket".into(), json!(s));
    }
    Target {
        resource_id: None,
        marker: marker.to_owned(),
        handle: None,
        details,
        marker_found: None,
    }
}

/// The regions a row's details name.
fn regions_of(details: &Value) -> Vec<String> {
    details
        .get("regions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[async_trait]
impl Backend for CloudBackend {
    fn name(&self) -> &'static str {
        "cloud"
    }

    fn plan(&self, manifest: &Manifest, vars: &BTreeMap<String, String>) -> Result<Plan, HostError> {
        let spec = plan_spec(manifest, vars)?;
        let mut details = spec.details();
        if let Value::Object(d) = &mut details {
            d.insert("mode".into(), json!(manifest.execution_mode));
        }
        Ok(Plan {
            kind: ResourceKind::Instance,
            owned: true,
            price: plan::manifest_price(manifest),
            details,
            budget: crate::backend::BudgetHints {
                worst_rate: spec.max_price,
                charges_per_call: false,
            },
            spec: Box::new(spec),
        })
    }

    async fn launch(&self, plan: &Plan, ctx: &LaunchContext) -> Result<Launched, HostError> {
        let spec = plan
            .spec
            .downcast_ref::<CloudSpec>()
            .ok_or_else(|| HostError::Internal("cloud backend given another backend's plan".into()))?;
        let plugin = ctx.plugin_id.as_str();
        let provider = self
            .providers
            .get(&spec.provider)
            .map_err(|e| launch_err(plugin, &spec.provider, e))?;
        let mut request = spec.request.clone();
        request.user_data = Some(lease::boot_script(&ctx.marker, spec.lease, spec.max_lifetime));
        let got = provision::acquire(
            &*provider,
            &spec.regions,
            &request,
            &ctx.marker,
            spec.max_price,
            &self.policy,
        )
        .await
        .map_err(|e| launch_err(plugin, &spec.provider, e))?;
        let handle = ResourceHandle::Instance {
            provider: spec.provider.clone(),
            region: got.instance.region.clone(),
            id: got.instance.id.clone(),
        };
        if let Some(hook) = &ctx.created {
            hook.report(&handle, provider.bills_from_create());
        }
        tracing::info!(plugin, provider = provider.name(), region = %got.instance.region, id = %got.instance.id, adopted = got.adopted, "instance created; waiting for it to run");
        let running = provision::wait_running(
            &*provider,
            &got.instance.region,
            &got.instance.id,
            spec.boot_limit,
            &self.policy,
        )
        .await
        .map_err(|e| match e {
            AcquireError::Provider(p) => launch_err(plugin, &spec.provider, p),
            e => launch_err(plugin, &spec.provider, e),
        })?;
        let ip = running
            .public_ip
            .clone()
            .ok_or_else(|| launch_err(plugin, &spec.provider, "the running instance has no address"))?;
        let mut dest = Destination::new(ip);
        dest.user = Some(spec.ssh_user.clone());
        // Container providers publish SSH on a port of their choosing.
        dest.port = Some(running.ssh_port.unwrap_or(spec.ssh_port));
        dest.identity_file = Some(spec.identity_file.clone());
        dest.known_hosts = Some(known_hosts_for(&ctx.listen));
        dest.accept_new_host_key = true;
        dest.connect_timeout = spec.connect_timeout;
        dest.alive_interval = spec.alive_interval;
        // A fresh instance's sshd comes up after the provider says
        // running: retry the connection until the boot limit.
        let master = wait_ssh(&self.ssh, &dest, spec.boot_limit)
            .await
            .map_err(|e| HostError::Remote {
                plugin: plugin.to_owned(),
                destination: dest.display(),
                reason: e,
            })?;
        let renew = {
            let marker = ctx.marker.clone();
            let every = lease::renew_interval(spec.lease);
            let conns = Arc::clone(self.ssh.connections());
            let dest = dest.clone();
            tokio::spawn(async move {
                loop {
                    let r = async {
                        let m = conns.get(&dest).await?;
                        m.run_ok(
                            "renewing the lease",
                            &lease::renew_script(&marker),
                            None,
                            Duration::from_secs(15),
                        )
                        .await
                    }
                    .await;
                    if let Err(e) = r {
                        tracing::warn!(marker = %marker, error = %e, "cannot renew the instance's lease");
                    }
                    tokio::time::sleep(every).await;
                }
            })
        };
        let remote = RemoteSpec {
            dest: dest.clone(),
            argv: spec.worker.argv.clone(),
            env: spec.worker.env.clone(),
            workdir: spec.worker.workdir.clone(),
            uploads: spec.worker.uploads.clone(),
            remote_socket: spec.worker.remote_socket.clone(),
        };
        let inner_plan = Plan {
            kind: ResourceKind::RemoteProcess,
            owned: true,
            price: None,
            details: dest.to_details(),
            budget: crate::backend::BudgetHints::default(),
            spec: Box::new(remote),
        };
        let held = Arc::new(Held {
            provider: Arc::clone(&provider),
            region: running.region.clone(),
            id: running.id.clone(),
            dest: dest.clone(),
            remote_socket: spec.worker.remote_socket.clone(),
            last: Mutex::new(Some(running.clone())),
            renew,
            _master: master,
        });
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ctx.marker.clone(), Arc::clone(&held));
        let mut launched = match self.ssh.launch(&inner_plan, ctx).await {
            Ok(l) => l,
            Err(e) => return Err(e),
        };
        launched.handle = handle;
        launched.price = got
            .quoted_usd_per_hour
            .or(running.usd_per_hour)
            .map(|p| (p, PriceSource::Provider));
        Ok(launched)
    }

    async fn stop(&self, target: &Target, grace: Duration) -> Result<Stopped, BackendError> {
        let not_gone = |reason: String| BackendError::NotGone {
            what: format!("cloud instance {}", target.marker),
            reason,
        };
        let held = self.take_held(&target.marker);
        if let Some(h) = &held {
            h.renew.abort();
            // The worker first, gracefully, while the instance still runs.
            let wt = worker_target(&target.marker, &h.dest, h.remote_socket.as_deref());
            if let Err(e) = self.ssh.stop(&wt, grace).await {
                tracing::info!(marker = %target.marker, error = %e, "the worker could not be stopped over SSH; terminating the instance ends it");
            }
        }
        // Which instances: the handle's, else whatever carries the marker.
        let mut found: Vec<Place> = Vec::new();
        match &target.handle {
            Some(ResourceHandle::Instance { provider, region, id }) => {
                found.push((provider.clone(), region.clone(), id.clone()))
            }
            _ => {
                if let Some(p) = target.details.get("provider").and_then(Value::as_str) {
                    if target.marker_found != Some(false) {
                        let provider = self.providers.get(p).map_err(|e| not_gone(e.to_string()))?;
                        for region in regions_of(&target.details) {
                            let marked = provision::find_marked(&*provider, &region, &target.marker, &self.policy)
                                .await
                                .map_err(|e| not_gone(e.to_string()))?;
                            found.extend(marked.into_iter().map(|i| (p.to_owned(), i.region, i.id)));
                        }
                    }
                } else if let Some(s) = self.swept.lock().unwrap_or_else(|e| e.into_inner()).get(&target.marker) {
                    found.extend(s.iter().cloned());
                } else if target.details.is_null() && target.handle.is_none() {
                    return Err(not_gone(
                        "no provider or region is recorded for it and no sweep found it; run `plugboard gc` to sweep"
                            .into(),
                    ));
                }
            }
        }
        let mut ended = Vec::new();
        for (pname, region, id) in &found {
            let provider = self.providers.get(pname).map_err(|e| not_gone(e.to_string()))?;
            provision::terminate_confirmed(&*provider, region, id, TERMINATE_LIMIT, &self.policy)
                .await
                .map_err(|e| not_gone(e.to_string()))?;
            ended.push(format!("{id} ({pname} {region})"));
        }
        self.swept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&target.marker);
        Ok(Stopped {
            ended,
            forced: Vec::new(),
            identity_reused: None,
        })
    }

    async fn observe(&self, target: &Target) -> Observation {
        let Some(ResourceHandle::Instance { provider, region, id }) = &target.handle else {
            return Observation::Unknown;
        };
        let p = match self.providers.get(provider) {
            Ok(p) => p,
            Err(e) => return Observation::Lost(e.to_string()),
        };
        let got =
            match crate::cloud::retry::with_retries(&self.policy, "reading an instance", || p.get(region, id)).await {
                Ok(g) => g,
                Err(e) => return Observation::Lost(format!("cannot read the instance: {e}")),
            };
        let held = self.held(&target.marker);
        if let (Some(h), Some(i)) = (&held, &got) {
            *h.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(i.clone());
        }
        match got {
            None => Observation::Exited(super::ExitInfo {
                code: None,
                signal: None,
            }),
            Some(i) if matches!(i.state, InstanceState::Terminated | InstanceState::Stopped) => {
                Observation::Exited(super::ExitInfo {
                    code: None,
                    signal: None,
                })
            }
            Some(i) if i.state != InstanceState::Running => {
                Observation::Lost(format!("the instance is {} ({})", i.state, i.raw_state))
            }
            Some(_) => match held {
                Some(h) => {
                    self.ssh
                        .observe(&worker_target(&target.marker, &h.dest, h.remote_socket.as_deref()))
                        .await
                }
                None => Observation::Unknown,
            },
        }
    }

    fn provisions(&self) -> bool {
        true
    }

    fn polls(&self) -> bool {
        true
    }

    async fn sweep(&self, ledger_id: &str, recorded: &[Value]) -> Result<Vec<Marked>, BackendError> {
        let mut places: Vec<(String, String)> = Vec::new();
        for d in recorded {
            if let Some(p) = d.get("provider").and_then(Value::as_str) {
                for r in regions_of(d) {
                    places.push((p.to_owned(), r));
                }
            }
        }
        places.sort();
        places.dedup();
        let mut found: BTreeMap<i64, Vec<Place>> = BTreeMap::new();
        let mut failures = Vec::new();
        for (pname, region) in &places {
            let listed = match self.providers.get(pname) {
                Ok(p) => {
                    crate::cloud::retry::with_retries(&self.policy, "listing marked instances", || {
                        p.list_marked(region, ledger_id)
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            match listed {
                Ok(list) => {
                    for i in list {
                        if let Some(row) = i.marker.as_deref().and_then(|m| marker_row(m, ledger_id)) {
                            found
                                .entry(row)
                                .or_default()
                                .push((pname.clone(), i.region.clone(), i.id.clone()));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(provider = %pname, region = %region, error = %e, "cannot sweep a region; its marked instances wait for the next gc");
                    failures.push(format!("{pname} {region}: {e}"));
                }
            }
        }
        if !places.is_empty() && failures.len() == places.len() {
            return Err(BackendError::Unavailable {
                backend: "cloud",
                reason: failures.join("; "),
            });
        }
        let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
        Ok(found
            .into_iter()
            .map(|(row, list)| {
                let description = list
                    .iter()
                    .map(|(p, r, id)| format!("instance {id} ({p} {r})"))
                    .collect::<Vec<_>>()
                    .join(", ");
                swept.insert(format!("{ledger_id}:{row}"), list);
                Marked {
                    resource_id: row,
                    description,
                }
            })
            .collect())
    }

    fn inspect(&self, target: &Target) -> Value {
        let Some(h) = self.held(&target.marker) else {
            return Value::Null;
        };
        let last = h.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let price = target.details.get("max_price_per_hour").cloned();
        match last {
            Some(i) => {
                let r = provision::remote_resource(&*h.provider, &i, h.dest.port.unwrap_or(22), i.usd_per_hour);
                json!({ "remote_resource": r, "ssh": h.dest.display(), "max_price_per_hour": price })
            }
            None => json!({ "instance_id": h.id, "region": h.region }),
        }
    }
}

/// The known_hosts file of the instance behind `listen` (beside its socket
/// in the run dir): one per resource, so a reused address never meets an
/// old key.
fn known_hosts_for(listen: &std::path::Path) -> PathBuf {
    listen.with_extension("known_hosts")
}

/// Connects to a fresh instance, retrying while its sshd comes up.
async fn wait_ssh(
    ssh: &RemoteSshBackend,
    dest: &Destination,
    limit: Duration,
) -> Result<Arc<crate::ssh::Master>, String> {
    let end = tokio::time::Instant::now() + limit;
    let mut every = Duration::from_millis(250);
    loop {
        match ssh.connections().get(dest).await {
            Ok(m) => return Ok(m),
            Err(e) => {
                if tokio::time::Instant::now() + every > end {
                    return Err(format!("not reachable over SSH within {} s: {e}", limit.as_secs()));
                }
                tracing::debug!(destination = %dest.display(), error = %e, "the instance's sshd is not up yet");
            }
        }
        tokio::time::sleep(every).await;
        every = (every * 2).min(Duration::from_secs(5));
    }
}
