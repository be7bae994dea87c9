//! Cloud providers: one small client per provider behind one trait, so the
//! cloud backend ([`crate::backend::cloud`]) holds every rule that keeps an
//! instance from leaking (intent first, the marker on the instance, find
//! before create, confirmed termination, the sweep, the lease) once, for
//! all of them.
//!
//! A [`Provider`] only translates: it creates, reads, lists and terminates
//! instances and says what the provider answered, normalised to the seed's
//! status strings ([`InstanceState`]) with the raw one kept. Its errors say
//! whether a retry may help ([`ProviderError::retry_after`]) and whether
//! another region may have capacity ([`ProviderError::Capacity`]); the
//! decisions on those live in [`retry`], as pure functions.

pub mod capability;
#[cfg(feature = "ec2")]
pub mod ec2;
pub mod http;
pub mod lambda;
pub mod lease;
pub mod provision;
pub mod retry;
pub mod runpod;
pub mod vast;

use std::time::Duration;

use async_trait::async_trait;
use plugboard_core::CloudProvider;
use serde::Serialize;
use serde_json::{Map, Value};

/// A provider's API key: a [`Secret`](crate::secrets::Secret), shown as
/// `***` by `Debug` and `Display`, read only through `expose` where a
/// request is signed.
pub type ApiKey = crate::secrets::Secret;

/// The seed's status strings for an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Being created or booting.
    Provisioning,
    /// Running (and billed).
    Running,
    /// Shutting down.
    Stopping,
    /// Stopped (storage may still bill).
    Stopped,
    /// Gone for good.
    Terminated,
    /// A state plugboard does not know: counted as billing.
    Unknown,
}

impl InstanceState {
    /// The seed's string (`provisioning`, `running`…).
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Provisioning => "provisioning",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::Terminated => "terminated",
            InstanceState::Unknown => "unknown",
        }
    }

    /// True unless the instance is confirmed gone: an unknown state counts
    /// as billing.
    pub fn may_bill(self) -> bool {
        self != InstanceState::Terminated
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to create: read from the manifest's `[launch]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InstanceRequest {
    /// The provider's instance type (`g5.xlarge`, `gpu_1x_a100`).
    pub instance_type: String,
    /// The image (an AMI on EC2); `None` for the provider's default.
    pub image: Option<String>,
    /// The provider's SSH key name to install (EC2 key pair, Lambda SSH key).
    pub ssh_key_name: Option<String>,
    /// A script run as root at first boot (cloud-init user data).
    pub user_data: Option<String>,
    /// Tags to add beside the marker.
    pub tags: Vec<(String, String)>,
    /// The GPU model, for providers that rent by GPU (RunPod's GPU type
    /// id, Vast.ai's `gpu_name`).
    pub gpu_type: Option<String>,
    /// How many GPUs (0: the provider's default, one).
    pub gpu_count: u32,
    /// Disk in GB, for container providers (RunPod's container disk,
    /// Vast.ai's `disk`).
    pub disk_gb: Option<u32>,
    /// RunPod's cloud: `SECURE` or `COMMUNITY`.
    pub cloud_type: Option<String>,
    /// The least host reliability (0 to 1) of a Vast.ai offer.
    pub min_reliability: Option<f64>,
    /// The most USD per hour an offer may ask (Vast.ai's offer search).
    pub max_price: Option<f64>,
}

/// A price quoted by the provider for an instance type in a region.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quote {
    /// USD per hour.
    pub usd_per_hour: f64,
    /// False when the provider says there is no capacity there now.
    pub available: bool,
}

/// An instance as the provider describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The provider's id.
    pub id: String,
    /// Where it runs.
    pub region: String,
    /// The normalised state.
    pub state: InstanceState,
    /// The provider's own state string.
    pub raw_state: String,
    /// The address to reach it over SSH, once it has one.
    pub public_ip: Option<String>,
    /// The port its SSH is published on, when the provider maps it
    /// (container providers); `None` for the manifest's `ssh_port`.
    pub ssh_port: Option<u16>,
    /// The instance type.
    pub instance_type: Option<String>,
    /// GPU model, when the provider says.
    pub gpu_type: Option<String>,
    /// Number of GPUs.
    pub gpu_count: u32,
    /// USD per hour, when the provider quotes it with the instance.
    pub usd_per_hour: Option<f64>,
    /// The plugboard marker it carries (tag, name), if any.
    pub marker: Option<String>,
    /// The provider's raw fields (never credentials).
    pub raw: Map<String, Value>,
}

/// Errors of a provider's API, classified for retries and failover.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// No credentials were found.
    #[error("{provider}: no credentials: {hint}")]
    NoCredentials {
        /// The provider.
        provider: &'static str,
        /// Where they are looked for.
        hint: String,
    },
    /// No capacity for this type in this region: another region may have it.
    #[error("{provider} has no capacity in {region}: {message}")]
    Capacity {
        /// The provider.
        provider: &'static str,
        /// The region.
        region: String,
        /// The provider's message.
        message: String,
    },
    /// Too many requests (HTTP 429 or the provider's throttling code).
    #[error("{provider} is rate limiting requests: {message}")]
    RateLimited {
        /// The provider.
        provider: &'static str,
        /// How long it asked to wait, when it said.
        retry_after: Option<Duration>,
        /// The provider's message.
        message: String,
    },
    /// The provider failed (HTTP 5xx, a timeout, a dropped connection):
    /// a retry may succeed.
    #[error("{provider} failed ({what}): {message}")]
    Transient {
        /// The provider.
        provider: &'static str,
        /// What was asked.
        what: String,
        /// The status or transport error.
        message: String,
    },
    /// The provider refused the request (HTTP 4xx): its own message.
    #[error("{provider} refused {what}: {message}")]
    Refused {
        /// The provider.
        provider: &'static str,
        /// What was asked.
        what: String,
        /// The provider's code and message.
        message: String,
    },
    /// The provider answered something plugboard cannot read.
    #[error("{provider} answered {what} with something unexpected: {detail}")]
    BadAnswer {
        /// The provider.
        provider: &'static str,
        /// What was asked.
        what: String,
        /// What was wrong with the answer.
        detail: String,
    },
}

impl ProviderError {
    /// True when waiting and asking again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. } | ProviderError::Transient { .. }
        )
    }

    /// How long the provider asked to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// One cloud provider's API.
///
/// # Contract
///
/// * Every call is one request (or one logical request) to the provider;
///   retries are the caller's ([`retry::with_retries`]).
/// * [`create`](Provider::create) puts `marker` on the instance in the
///   provider's own form (a tag, the instance name) *in the same request*
///   that creates it, so no instance exists without it.
/// * [`find`](Provider::find) and [`list_marked`](Provider::list_marked)
///   include instances still being created and leave out terminated ones.
/// * [`get`](Provider::get) answers `Ok(None)` when the provider says the
///   instance does not exist (terminated long ago counts as gone).
/// * [`terminate`](Provider::terminate) only asks; the caller confirms with
///   [`get`](Provider::get). Terminating what is gone succeeds.
/// * Nothing returned or logged contains a credential.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The name used in manifests and the ledger (`aws`, `lambda`).
    fn name(&self) -> &'static str;

    /// The seed's provider value.
    fn cloud_provider(&self) -> CloudProvider;

    /// True when the provider bills from creation (storage, booting)
    /// rather than from running.
    fn bills_from_create(&self) -> bool {
        false
    }

    /// The provider's price and capacity for `request` in `region`, when it
    /// publishes one through this API (`Ok(None)` otherwise).
    async fn quote(&self, region: &str, request: &InstanceRequest) -> Result<Option<Quote>, ProviderError>;

    /// Creates one instance carrying `marker`.
    async fn create(&self, region: &str, request: &InstanceRequest, marker: &str) -> Result<Instance, ProviderError>;

    /// The instance `id`, or `None` when the provider says it does not exist.
    async fn get(&self, region: &str, id: &str) -> Result<Option<Instance>, ProviderError>;

    /// Instances carrying exactly `marker`.
    async fn find(&self, region: &str, marker: &str) -> Result<Vec<Instance>, ProviderError> {
        Ok(self
            .list_marked(region, marker_prefix(marker))
            .await?
            .into_iter()
            .filter(|i| i.marker.as_deref() == Some(marker))
            .collect())
    }

    /// Instances whose marker begins with `prefix` (an installation's
    /// ledger id).
    async fn list_marked(&self, region: &str, prefix: &str) -> Result<Vec<Instance>, ProviderError>;

    /// Asks the provider to terminate `id`.
    async fn terminate(&self, region: &str, id: &str) -> Result<(), ProviderError>;
}

/// The installation part of a marker (`LEDGERID` of `LEDGERID:ROW`).
pub fn marker_prefix(marker: &str) -> &str {
    marker.split_once(':').map(|(p, _)| p).unwrap_or(marker)
}

/// The ledger row a marker names, if it names one of `ledger_id`'s.
pub fn marker_row(marker: &str, ledger_id: &str) -> Option<i64> {
    let (prefix, row) = marker.split_once(':')?;
    (prefix == ledger_id).then(|| row.parse().ok()).flatten()
}

/// The instance name that carries a marker where the provider has only a
/// name (`plugboard-LEDGERID-ROW`), and back.
pub fn marker_name(marker: &str) -> String {
    format!("plugboard-{}", marker.replace(':', "-"))
}

/// The marker an instance name carries (see [`marker_name`]).
pub fn marker_from_name(name: &str) -> Option<String> {
    let rest = name.strip_prefix("plugboard-")?;
    let (ledger, row) = rest.rsplit_once('-')?;
    if ledger.is_empty() || row.is_empty() || !row.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!("{ledger}:{row}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_survives_an_instance_name() {
        let m = "0123456789abcdef0123456789abcdef:42";
        assert_eq!(marker_name(m), "plugboard-0123456789abcdef0123456789abcdef-42");
        assert_eq!(marker_from_name(&marker_name(m)).as_deref(), Some(m));
        assert_eq!(marker_from_name("my-box"), None);
        assert_eq!(marker_from_name("plugboard-abc-x1"), None);
        assert_eq!(marker_row(m, "0123456789abcdef0123456789abcdef"), Some(42));
        assert_eq!(marker_row(m, "other"), None);
        assert_eq!(marker_prefix(m), "0123456789abcdef0123456789abcdef");
    }

    #[test]
    fn only_terminated_stops_billing() {
        for s in [
            InstanceState::Provisioning,
            InstanceState::Running,
            InstanceState::Stopping,
            InstanceState::Stopped,
            InstanceState::Unknown,
        ] {
            assert!(s.may_bill(), "{s}");
        }
        assert!(!InstanceState::Terminated.may_bill());
    }
}
