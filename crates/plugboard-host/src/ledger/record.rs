//! The ledger's row types: hosts, resources and the typed values stored in
//! them (kind, status, handle, price source).
//!
//! Statuses and kinds are enums, not free strings, so a typo cannot create a
//! state nobody handles; the handle is typed JSON per kind so every backend
//! stores what identifies its resource (a pid alone is not an identity).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cost::BillingInterval;

/// What kind of thing a resource row stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    /// A local process tree (subprocess, conda_env).
    Process,
    /// A container on an engine.
    Container,
    /// A cloud instance.
    Instance,
    /// A process on another machine.
    RemoteProcess,
    /// A job on a cluster.
    ClusterJob,
    /// A service plugboard does not own (external mode).
    Service,
    /// Anything a test backend creates.
    Test,
}

/// Where a resource is in its life, as the ledger records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceStatus {
    /// Written down before creation; the resource may or may not exist yet.
    Starting,
    /// Created and being prepared by its provider (cloud instances, pods).
    Provisioning,
    /// Ready and in use.
    Running,
    /// Stopped answering but not known to be gone (never restarted).
    Lost,
    /// Being stopped.
    Stopping,
    /// Stopped on request (ended).
    Stopped,
    /// Exited by itself with success (ended).
    Exited,
    /// Exited with a failure or a signal (ended).
    Crashed,
    /// Could not be started; nothing of it is left (ended).
    Failed,
    /// Ended by gc because its host was gone (ended).
    Reaped,
    /// A service plugboard does not own, no longer used (ended).
    Detached,
}

impl ResourceStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [ResourceStatus; 11] = [
        ResourceStatus::Starting,
        ResourceStatus::Provisioning,
        ResourceStatus::Running,
        ResourceStatus::Lost,
        ResourceStatus::Stopping,
        ResourceStatus::Stopped,
        ResourceStatus::Exited,
        ResourceStatus::Crashed,
        ResourceStatus::Failed,
        ResourceStatus::Reaped,
        ResourceStatus::Detached,
    ];

    /// The lowercase name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceStatus::Starting => "starting",
            ResourceStatus::Provisioning => "provisioning",
            ResourceStatus::Running => "running",
            ResourceStatus::Lost => "lost",
            ResourceStatus::Stopping => "stopping",
            ResourceStatus::Stopped => "stopped",
            ResourceStatus::Exited => "exited",
            ResourceStatus::Crashed => "crashed",
            ResourceStatus::Failed => "failed",
            ResourceStatus::Reaped => "reaped",
            ResourceStatus::Detached => "detached",
        }
    }

    /// True for the statuses a row ends with.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ResourceStatus::Stopped
                | ResourceStatus::Exited
                | ResourceStatus::Crashed
                | ResourceStatus::Failed
                | ResourceStatus::Reaped
                | ResourceStatus::Detached
        )
    }
}

impl fmt::Display for ResourceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResourceStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ResourceStatus::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown resource status {s:?}"))
    }
}

impl ResourceKind {
    /// Every kind.
    pub const ALL: [ResourceKind; 7] = [
        ResourceKind::Process,
        ResourceKind::Container,
        ResourceKind::Instance,
        ResourceKind::RemoteProcess,
        ResourceKind::ClusterJob,
        ResourceKind::Service,
        ResourceKind::Test,
    ];

    /// The lowercase name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Process => "process",
            ResourceKind::Container => "container",
            ResourceKind::Instance => "instance",
            ResourceKind::RemoteProcess => "remote_process",
            ResourceKind::ClusterJob => "cluster_job",
            ResourceKind::Service => "service",
            ResourceKind::Test => "test",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResourceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ResourceKind::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown resource kind {s:?}"))
    }
}

/// What identifies a created resource, per kind (stored as typed JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResourceHandle {
    /// A local process tree: its root's pid and start time (clock ticks
    /// since boot), and the cgroup holding it where one was made.
    Process {
        /// Root pid.
        pid: u32,
        /// Root start time; with the pid, an identity a reused pid cannot fake.
        start_time: u64,
        /// The cgroup directories holding the tree, if any.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        cgroups: Vec<String>,
    },
    /// A container on an engine.
    Container {
        /// The engine's container id.
        id: String,
    },
    /// A cloud instance.
    Instance {
        /// The provider (`aws`, `lambda_labs`…).
        provider: String,
        /// Its region.
        region: String,
        /// The provider's instance id.
        id: String,
    },
    /// A process on another machine.
    RemoteProcess {
        /// The host it runs on.
        host: String,
        /// The SSH port it is reached at, when not the default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        /// The SSH login, when one was given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        /// Its pid there.
        pid: u32,
        /// Its process group there (0 when unknown).
        #[serde(default)]
        pgid: u32,
        /// Its start time there.
        start_time: u64,
        /// That machine's boot id.
        boot_id: String,
    },
    /// A job on a cluster.
    ClusterJob {
        /// The cluster.
        cluster: String,
        /// The job id.
        id: String,
    },
    /// A service plugboard does not own: only its address.
    Service {
        /// Where it answers.
        endpoint: String,
    },
    /// What a test backend created.
    Test {
        /// The test resource's id.
        id: String,
    },
    /// A handle from a v1 ledger that was stored as a bare string.
    Opaque {
        /// The string.
        id: String,
    },
}

impl ResourceHandle {
    /// The root pid, for process handles.
    pub fn pid(&self) -> Option<u32> {
        match self {
            ResourceHandle::Process { pid, .. } => Some(*pid),
            _ => None,
        }
    }

    /// A short human form: `pid 42`, `container 3f2a…`, `i-0abc (aws us-east-1)`.
    pub fn short(&self) -> String {
        match self {
            ResourceHandle::Process { pid, .. } => format!("pid {pid}"),
            ResourceHandle::Container { id } => format!("container {}", id.get(..12).unwrap_or(id)),
            ResourceHandle::Instance { provider, region, id } => format!("{id} ({provider} {region})"),
            ResourceHandle::RemoteProcess { host, pid, .. } => format!("pid {pid} on {host}"),
            ResourceHandle::ClusterJob { cluster, id } => format!("job {id} on {cluster}"),
            ResourceHandle::Service { endpoint } => format!("service {endpoint}"),
            ResourceHandle::Test { id } => format!("test {id}"),
            ResourceHandle::Opaque { id } => id.clone(),
        }
    }
}

/// Where a resource's price per hour came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceSource {
    /// The manifest's `resources.estimated_cost_per_hour`.
    Manifest,
    /// The provider's quote at launch.
    Provider,
}

impl PriceSource {
    /// The lowercase name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            PriceSource::Manifest => "manifest",
            PriceSource::Provider => "provider",
        }
    }
}

impl FromStr for PriceSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "manifest" => Ok(PriceSource::Manifest),
            "provider" => Ok(PriceSource::Provider),
            _ => Err(format!("unknown price source {s:?}")),
        }
    }
}

/// A host process that owns resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Row id.
    pub id: i64,
    /// Its pid.
    pub pid: u32,
    /// Its start time (clock ticks since boot).
    pub start_time: u64,
    /// The boot it ran in.
    pub boot_id: String,
    /// When it registered (ms since epoch).
    pub started_at: i64,
    /// When it ended or was found gone (ms since epoch).
    pub ended_at: Option<i64>,
}

impl HostRecord {
    /// True when this host process still runs (same boot, same pid and start time).
    pub fn is_alive(&self) -> bool {
        self.ended_at.is_none()
            && self.boot_id == super::boot_id()
            && plugboard_core::process::is_same_live_process(self.pid, Some(self.start_time))
    }
}

/// One resource: a process tree, a container, an instance, a service…
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRecord {
    /// Row id.
    pub id: i64,
    /// What it is.
    pub kind: ResourceKind,
    /// The backend that created it (`process`, `external`, `docker`…).
    pub backend: String,
    /// The plugin's unique id.
    pub plugin_id: String,
    /// The owning host's row id.
    pub host_id: i64,
    /// Where it is in its life.
    pub status: ResourceStatus,
    /// False for services plugboard does not own: never stopped, never reaped.
    pub owned: bool,
    /// What identifies it once created (`None` between intent and creation).
    pub handle: Option<ResourceHandle>,
    /// Where its worker answers (`unix:/…`, `tcp://…`, `http://…`).
    pub endpoint: Option<String>,
    /// The marker the resource carries (`{ledger id}:{row id}`).
    pub marker: String,
    /// Created (ms since epoch).
    pub created_at: i64,
    /// Last change (ms since epoch).
    pub updated_at: i64,
    /// Ended (ms since epoch); `None` while live.
    pub ended_at: Option<i64>,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Price per hour in USD, stored at launch.
    pub cost_per_hour: Option<f64>,
    /// Where that price came from.
    pub price_source: Option<PriceSource>,
    /// When billing started (ms since epoch); `None` if it never did.
    pub billing_started_at: Option<i64>,
    /// The last reason recorded for it (why gc could not end it, why it is lost…).
    pub note: Option<String>,
    /// Backend-specific details (log path, command…), never secrets.
    pub details: Value,
    /// When it must be ended at the latest (ms since epoch), if a budget,
    /// `max_duration_s` or an idle timeout set one.
    pub deadline_at: Option<i64>,
    /// Why that deadline.
    pub deadline_reason: Option<String>,
    /// Its billable intervals, each at the price in force when it opened.
    pub billing: Vec<BillingInterval>,
    /// Per-call charges recorded against it (USD).
    pub charges_usd: f64,
}

impl ResourceRecord {
    /// True while the resource has not ended.
    pub fn is_live(&self) -> bool {
        self.ended_at.is_none()
    }

    /// The root pid, for process resources.
    pub fn pid(&self) -> Option<u32> {
        self.handle.as_ref().and_then(ResourceHandle::pid)
    }

    /// USD accrued up to `now_ms`: its billable intervals at their own
    /// prices, plus its per-call charges.
    pub fn accrued_usd(&self, now_ms: i64) -> f64 {
        crate::cost::accrued(&self.billing, i64::MIN, now_ms) + self.charges_usd.max(0.0)
    }

    /// USD per hour it bills at now (0 when billing is not running).
    pub fn burn_rate(&self) -> f64 {
        if self.is_live() {
            crate::cost::rate(&self.billing)
        } else {
            0.0
        }
    }
}

/// A new resource to write down before creating it.
#[derive(Debug, Clone)]
pub struct Intent<'a> {
    /// What it will be.
    pub kind: ResourceKind,
    /// The backend creating it.
    pub backend: &'a str,
    /// The plugin's unique id.
    pub plugin_id: &'a str,
    /// False for services plugboard does not own.
    pub owned: bool,
    /// Price per hour in USD, if known.
    pub cost_per_hour: Option<f64>,
    /// Where that price came from.
    pub price_source: Option<PriceSource>,
    /// Details to store (never secrets).
    pub details: Value,
}

impl<'a> Intent<'a> {
    /// An owned resource of `kind` by `backend` for `plugin_id`, no price, no details.
    pub fn new(kind: ResourceKind, backend: &'a str, plugin_id: &'a str) -> Self {
        Intent {
            kind,
            backend,
            plugin_id,
            owned: true,
            cost_per_hour: None,
            price_source: None,
            details: Value::Object(Default::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_final_ones_are_exactly_the_ending_ones() {
        for s in ResourceStatus::ALL {
            assert_eq!(s.as_str().parse::<ResourceStatus>(), Ok(s));
            assert_eq!(serde_json::to_value(s).ok(), Some(Value::String(s.as_str().into())));
        }
        let finals: Vec<_> = ResourceStatus::ALL.into_iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals.len(), 6);
        assert!(!ResourceStatus::Lost.is_final());
        assert!("Running".parse::<ResourceStatus>().is_err());
    }

    #[test]
    fn handles_are_tagged_json() {
        let h = ResourceHandle::Process {
            pid: 7,
            start_time: 9,
            cgroups: vec![],
        };
        let v = serde_json::to_value(&h).unwrap_or_default();
        assert_eq!(v, serde_json::json!({"kind": "process", "pid": 7, "start_time": 9}));
        let back: ResourceHandle = serde_json::from_value(v).unwrap_or(ResourceHandle::Opaque { id: String::new() });
        assert_eq!(back, h);
    }

    #[test]
    fn accrual_starts_with_billing_and_never_goes_negative() {
        let mut r = ResourceRecord {
            id: 1,
            kind: ResourceKind::Process,
            backend: "process".into(),
            plugin_id: "a_b".into(),
            host_id: 1,
            status: ResourceStatus::Running,
            owned: true,
            handle: None,
            endpoint: None,
            marker: "x:1".into(),
            created_at: 0,
            updated_at: 0,
            ended_at: None,
            exit_code: None,
            signal: None,
            cost_per_hour: Some(2.0),
            price_source: Some(PriceSource::Manifest),
            billing_started_at: None,
            note: None,
            details: Value::Null,
            deadline_at: None,
            deadline_reason: None,
            billing: Vec::new(),
            charges_usd: 0.0,
        };
        assert_eq!(r.accrued_usd(3_600_000), 0.0);
        r.billing.push(BillingInterval {
            price_per_hour: 2.0,
            start_ms: 1_800_000,
            end_ms: None,
        });
        assert!((r.accrued_usd(3_600_000) - 1.0).abs() < 1e-9);
        assert_eq!(r.burn_rate(), 2.0);
        assert_eq!(r.accrued_usd(0), 0.0);
        r.charges_usd = 0.25;
        assert!((r.accrued_usd(3_600_000) - 1.25).abs() < 1e-9);
    }
}
