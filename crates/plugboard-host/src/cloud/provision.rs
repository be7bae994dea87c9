//! The steps every provider shares, in the order that leaks nothing:
//! look for an instance carrying the marker before creating one (a retry
//! after a timeout or a crash adopts it), refuse a price above the cap
//! before any create, fail over to the next region on a capacity error,
//! wait for `running` with a deadline, and count an instance terminated
//! only when the provider says so.

use std::time::{Duration, Instant};

use plugboard_core::RemoteResource;
use serde_json::Value;

use super::retry::{RetryPolicy, with_retries};
use super::{Instance, InstanceRequest, InstanceState, Provider, ProviderError};

/// Why an instance could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AcquireError {
    /// The provider's price is above the manifest's cap: nothing was created.
    #[error(
        "{provider} asks {price:.4} USD/h for {instance_type} in {region}, above max_price_per_hour = {max:.4}; nothing was created"
    )]
    TooExpensive {
        /// The provider.
        provider: &'static str,
        /// The type.
        instance_type: String,
        /// The region quoted.
        region: String,
        /// Its price.
        price: f64,
        /// The cap.
        max: f64,
    },
    /// Every region answered "no capacity".
    #[error("no capacity for {instance_type} in any region tried: {}", tried.join("; "))]
    NoCapacity {
        /// The type.
        instance_type: String,
        /// Each region and what it said.
        tried: Vec<String>,
    },
    /// The provider failed or refused.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// It did not come up in time.
    #[error("instance {id} in {region} was still {state} after {secs} s")]
    NotRunning {
        /// The instance.
        id: String,
        /// Its region.
        region: String,
        /// Its last state.
        state: String,
        /// The wait.
        secs: u64,
    },
    /// It ended while booting.
    #[error("instance {id} in {region} ended while booting ({raw_state})")]
    Ended {
        /// The instance.
        id: String,
        /// Its region.
        region: String,
        /// What the provider said.
        raw_state: String,
    },
}

/// An instance had: found by its marker or created now.
#[derive(Debug, Clone)]
pub struct Acquired {
    /// The instance.
    pub instance: Instance,
    /// The provider's price quote, when it gave one.
    pub quoted_usd_per_hour: Option<f64>,
    /// True when it already existed (a retry adopted it).
    pub adopted: bool,
}

/// Finds or creates one instance carrying `marker`, trying `regions` in
/// order (see the module docs).
pub async fn acquire(
    provider: &dyn Provider,
    regions: &[String],
    request: &InstanceRequest,
    marker: &str,
    max_price: Option<f64>,
    policy: &RetryPolicy,
) -> Result<Acquired, AcquireError> {
    // First: does one exist already (a launch cut off after its create)?
    for region in regions {
        if let Some(i) = find_marked(provider, region, marker, policy).await?.into_iter().next() {
            tracing::info!(provider = provider.name(), region = %region, id = %i.id, marker, "adopting the instance that carries the marker");
            let quoted = i.usd_per_hour;
            return Ok(Acquired {
                instance: i,
                quoted_usd_per_hour: quoted,
                adopted: true,
            });
        }
    }
    let mut tried = Vec::new();
    for region in regions {
        let quote = with_retries(policy, "asking the price", || provider.quote(region, request)).await?;
        if let (Some(q), Some(max)) = (quote, max_price)
            && q.usd_per_hour > max
        {
            return Err(AcquireError::TooExpensive {
                provider: provider.name(),
                instance_type: request.instance_type.clone(),
                region: region.clone(),
                price: q.usd_per_hour,
                max,
            });
        }
        if quote.is_some_and(|q| !q.available) {
            tried.push(format!("{region}: the provider lists no capacity"));
            continue;
        }
        // A create that timed out or failed with a 5xx may have created the
        // instance all the same (only the answer was lost): every retry
        // looks for the marker first and adopts what it finds.
        let attempts = std::sync::atomic::AtomicU32::new(0);
        match with_retries(policy, "creating an instance", || async {
            if attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0
                && let Some(i) = provider
                    .find(region, marker)
                    .await?
                    .into_iter()
                    .find(|i| i.state != InstanceState::Terminated)
            {
                tracing::info!(provider = provider.name(), region = %region, id = %i.id, marker, "a failed create had created the instance; adopting it");
                return Ok((i, true));
            }
            provider.create(region, request, marker).await.map(|i| (i, false))
        })
        .await
        {
            Ok((instance, adopted)) => {
                return Ok(Acquired {
                    quoted_usd_per_hour: quote.map(|q| q.usd_per_hour).or(instance.usd_per_hour),
                    instance,
                    adopted,
                });
            }
            Err(ProviderError::Capacity { message, .. }) => {
                tracing::info!(provider = provider.name(), region = %region, %message, "no capacity; trying the next region");
                tried.push(format!("{region}: {message}"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(AcquireError::NoCapacity {
        instance_type: request.instance_type.clone(),
        tried,
    })
}

/// The instances in `region` carrying `marker` (not terminated).
pub async fn find_marked(
    provider: &dyn Provider,
    region: &str,
    marker: &str,
    policy: &RetryPolicy,
) -> Result<Vec<Instance>, ProviderError> {
    let found = with_retries(policy, "finding an instance by marker", || {
        provider.find(region, marker)
    })
    .await?;
    Ok(found
        .into_iter()
        .filter(|i| i.state != InstanceState::Terminated)
        .collect())
}

/// Polls `id` until it runs with an address, it ends, or `limit` passes.
pub async fn wait_running(
    provider: &dyn Provider,
    region: &str,
    id: &str,
    limit: Duration,
    policy: &RetryPolicy,
) -> Result<Instance, AcquireError> {
    let end = Instant::now() + limit;
    let mut every = Duration::from_millis(200);
    loop {
        let got = with_retries(policy, "reading an instance", || provider.get(region, id)).await?;
        let last = match got {
            Some(i) if i.state == InstanceState::Running && i.public_ip.is_some() => return Ok(i),
            Some(i) if matches!(i.state, InstanceState::Terminated | InstanceState::Stopped) => {
                return Err(AcquireError::Ended {
                    id: id.to_owned(),
                    region: region.to_owned(),
                    raw_state: i.raw_state,
                });
            }
            Some(i) => format!("{} ({})", i.state, i.raw_state),
            None => "not yet listed".into(),
        };
        if Instant::now() + every > end {
            return Err(AcquireError::NotRunning {
                id: id.to_owned(),
                region: region.to_owned(),
                state: last,
                secs: limit.as_secs(),
            });
        }
        tokio::time::sleep(every).await;
        every = (every * 2).min(Duration::from_secs(5));
    }
}

/// How many consecutive "not found" reads make an instance gone.
const NOT_FOUND_READS: u32 = 3;

/// Asks for termination and waits until the provider confirms it (the
/// instance reads `terminated` or no longer exists), asking again while it
/// does not; `Ok(false)` when there was nothing to terminate.
pub async fn terminate_confirmed(
    provider: &dyn Provider,
    region: &str,
    id: &str,
    limit: Duration,
    policy: &RetryPolicy,
) -> Result<bool, ProviderError> {
    let end = Instant::now() + limit;
    let mut every = Duration::from_millis(200);
    let mut asked = false;
    let mut unknown = 0;
    loop {
        let got = with_retries(policy, "reading an instance", || provider.get(region, id)).await?;
        let state = match &got {
            // Providers read eventually: an instance created a moment ago
            // may not be listed yet. "Not found" is trusted once termination
            // was asked for and it stays not found over a few reads.
            None if unknown >= NOT_FOUND_READS => return Ok(asked),
            None => {
                unknown += 1;
                if !asked {
                    with_retries(policy, "terminating an instance", || provider.terminate(region, id)).await?;
                    asked = true;
                }
                tokio::time::sleep(every).await;
                every = (every * 2).min(Duration::from_secs(5));
                continue;
            }
            Some(i) if i.state == InstanceState::Terminated => return Ok(asked),
            Some(i) => {
                unknown = 0;
                i.state
            }
        };
        if state != InstanceState::Stopping || !asked {
            with_retries(policy, "terminating an instance", || provider.terminate(region, id)).await?;
            asked = true;
        }
        if Instant::now() + every > end {
            return Err(ProviderError::Transient {
                provider: provider.name(),
                what: format!("terminating {id} in {region}"),
                message: format!(
                    "still {state} after {} s; it counts as billing until the provider says terminated",
                    limit.as_secs()
                ),
            });
        }
        tokio::time::sleep(every).await;
        every = (every * 2).min(Duration::from_secs(5));
    }
}

/// The seed's `RemoteResource` for an instance; its SSH port is the one
/// the provider mapped, else `ssh_port`.
pub fn remote_resource(provider: &dyn Provider, i: &Instance, ssh_port: u16, price: Option<f64>) -> RemoteResource {
    let mut r = RemoteResource::new(provider.cloud_provider());
    r.region = Some(i.region.clone());
    r.instance_id = Some(i.id.clone());
    r.resource_type = i.instance_type.clone();
    r.gpu_count = i.gpu_count;
    r.gpu_type = i.gpu_type.clone();
    r.status = i.state.as_str().into();
    r.ssh_host = i.public_ip.clone();
    r.ssh_port = i.ssh_port.unwrap_or(ssh_port);
    r.estimated_cost_per_hour = price.or(i.usd_per_hour);
    r.metadata = i.raw.clone();
    r.metadata.insert("raw_status".into(), Value::from(i.raw_state.clone()));
    r
}
