//! AWS EC2 (feature `ec2`): instances through the official AWS SDK for
//! Rust (`aws-sdk-ec2`, `aws-config`).
//!
//! Why the SDK rather than signed requests of plugboard's own: it signs
//! (SigV4), reads credentials the way every AWS tool does and follows the
//! API as it changes. Credentials come from the AWS default chain
//! (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`,
//! `AWS_PROFILE` and `~/.aws/config`/`credentials`, SSO, web identity, the
//! ECS and EC2 instance roles), or from keys plugboard's secret store holds
//! under the same names ([`Ec2::from_env_or_keys`]). They go only to the
//! SDK's signer: plugboard never logs or reports them (none found is
//! [`ProviderError::NoCredentials`]). The endpoint is overridable as for any
//! SDK client: `AWS_ENDPOINT_URL_EC2` (or `AWS_ENDPOINT_URL`, or
//! `endpoint_url` in the profile) is read by the SDK itself;
//! [`Ec2::with_endpoint`] sets one in code (private endpoints, tests). HTTPS
//! is rustls over ring with the system's root certificates (no OpenSSL).
//!
//! The region is per call (the manifest's `regions`, tried in order): one
//! SDK client per region, built on first use and kept.
//!
//! * **Marker.** `RunInstances` carries `TagSpecifications` for the
//!   instance and its volumes: `plugboard:marker = LEDGERID:ROW` (see
//!   [`MARKER_TAG`]), `Name = plugboard-LEDGERID-ROW` and the manifest's
//!   tags, in the create request itself, so no instance exists untagged.
//!   The sweep filters on the tag key, [`find`](Provider::find) on its
//!   value. The marker is also the request's `ClientToken`, so the same
//!   launch retried after a lost answer gets the same instance from EC2.
//! * **Lease.** `InstanceInitiatedShutdownBehavior = terminate`: when the
//!   lease watchdog ([`super::lease`]) powers the instance off, EC2
//!   terminates it instead of keeping a stopped instance (and its volume)
//!   around.
//! * **Price.** EC2's API quotes no price (the Pricing API is a separate,
//!   us-east-1-only service): [`quote`](Provider::quote) answers `Ok(None)`
//!   and the cost shown is the manifest's estimate. EC2 bills from
//!   `running`, not from creation.
//! * **Errors.** AWS's error codes are classified by [`classify`]: no
//!   capacity (`InsufficientInstanceCapacity`, `Unsupported` type in that
//!   zone) lets the next region be tried; throttling and 5xx are retried
//!   by the caller; quotas (`InstanceLimitExceeded`, `VcpuLimitExceeded`)
//!   and everything else are refusals with AWS's code and message. The
//!   SDK's own retries are off: retries are the caller's
//!   ([`super::retry`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::{Credentials, SharedCredentialsProvider, SharedHttpClient};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::primitives::DateTimeFormat;
use aws_sdk_ec2::types::{Filter, InstanceType, ResourceType, ShutdownBehavior, Tag, TagSpecification};
use base64::Engine as _;
use plugboard_core::CloudProvider;
use serde_json::{Map, Value};

use super::{ApiKey, Instance, InstanceRequest, InstanceState, Provider, ProviderError, Quote};

/// The provider name in manifests and the ledger.
pub const NAME: &str = "aws";
/// The tag that carries the marker (`LEDGERID:ROW`) on instances and volumes.
pub const MARKER_TAG: &str = "plugboard:marker";
/// The environment variable the SDK reads for an EC2 endpoint of its own
/// (a private endpoint, a local emulator); `AWS_ENDPOINT_URL` applies to
/// every AWS service.
pub const ENDPOINT_ENV: &str = "AWS_ENDPOINT_URL_EC2";
/// The access key id's name (environment variable, secret).
pub const KEY_ID_ENV: &str = "AWS_ACCESS_KEY_ID";
/// The secret access key's name (environment variable, secret).
pub const SECRET_KEY_ENV: &str = "AWS_SECRET_ACCESS_KEY";
/// The session token's name (environment variable, secret), for
/// temporary keys.
pub const SESSION_TOKEN_ENV: &str = "AWS_SESSION_TOKEN";

/// The states [`Provider::list_marked`] and [`Provider::find`] ask for:
/// everything but `terminated`.
const LIVE_STATES: [&str; 5] = ["pending", "running", "stopping", "stopped", "shutting-down"];
/// Instances per `DescribeInstances` page, unless set (EC2 allows 5 to 1000).
const DEFAULT_PAGE: i32 = 500;
/// The longest wait for a connection to the endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait for one request's answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the SDK clients get their endpoint and credentials.
enum Source {
    /// The AWS configuration (endpoint, profile…), loaded on first use of
    /// each region; credentials from the default chain unless given.
    DefaultChain {
        credentials: Option<SharedCredentialsProvider>,
    },
    /// An endpoint and credentials given in code.
    Explicit {
        endpoint: String,
        credentials: SharedCredentialsProvider,
    },
}

/// EC2's API, one SDK client per region.
pub struct Ec2 {
    source: Source,
    http: SharedHttpClient,
    page_size: i32,
    clients: Mutex<HashMap<String, Client>>,
}

impl std::fmt::Debug for Ec2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let endpoint = match &self.source {
            Source::DefaultChain { .. } => "from the AWS configuration",
            Source::Explicit { endpoint, .. } => endpoint.as_str(),
        };
        let mut regions: Vec<String> = self.cached().keys().cloned().collect();
        regions.sort();
        f.debug_struct("Ec2")
            .field("endpoint", &endpoint)
            .field("regions", &regions)
            .finish_non_exhaustive()
    }
}

/// The HTTPS client every SDK client of plugboard uses: rustls over ring
/// with the system's root certificates (plain `http://` endpoints work too).
fn http_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider as Tls, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Tls::Rustls(CryptoMode::Ring))
        .build_https()
}

/// One region's EC2 configuration from `builder`: plugboard's HTTP client,
/// no SDK retries (the caller retries), bounded waits.
fn finish(builder: aws_sdk_ec2::config::Builder, http: &SharedHttpClient) -> aws_sdk_ec2::Config {
    builder
        .http_client(http.clone())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        )
        .build()
}

impl Ec2 {
    /// EC2 with the AWS default credential chain and endpoint resolution
    /// (see the module docs). Nothing is read yet: the configuration of a
    /// region is loaded on its first call, and missing credentials are
    /// reported then, as [`ProviderError::NoCredentials`].
    pub fn from_env() -> Result<Ec2, ProviderError> {
        Ok(Ec2::new(Source::DefaultChain { credentials: None }))
    }

    /// As [`Ec2::from_env`], but with the keys `lookup` finds under
    /// [`KEY_ID_ENV`], [`SECRET_KEY_ENV`] (and [`SESSION_TOKEN_ENV`]) when
    /// it finds both: for a host whose lookup is the environment, then
    /// plugboard's secret store (`plugboard secret set AWS_ACCESS_KEY_ID`).
    /// Without both, the default chain (profiles, SSO, roles) is used. The
    /// keys go only to the SDK's signer.
    pub fn from_env_or_keys(lookup: impl Fn(&str) -> Option<ApiKey>) -> Result<Ec2, ProviderError> {
        let credentials = match (lookup(KEY_ID_ENV), lookup(SECRET_KEY_ENV)) {
            (Some(id), Some(secret)) => Some(SharedCredentialsProvider::new(Credentials::new(
                id.expose(),
                secret.expose(),
                lookup(SESSION_TOKEN_ENV).map(|t| t.expose().to_owned()),
                None,
                "plugboard",
            ))),
            _ => None,
        };
        Ok(Ec2::new(Source::DefaultChain { credentials }))
    }

    /// EC2 at `endpoint_url` (`https://…`, or `http://…` for a local
    /// emulator) with fixed `credentials`, in every region: for private
    /// endpoints and tests. The credentials are only handed to the SDK's
    /// signer (their `Debug` hides the secret).
    pub fn with_endpoint(endpoint_url: impl Into<String>, credentials: Credentials) -> Ec2 {
        Ec2::new(Source::Explicit {
            endpoint: endpoint_url.into(),
            credentials: SharedCredentialsProvider::new(credentials),
        })
    }

    /// The same client listing `n` instances per `DescribeInstances` page
    /// (EC2 accepts 5 to 1000; 500 by default): more pages are followed
    /// with their `NextToken` either way.
    pub fn page_size(mut self, n: i32) -> Ec2 {
        self.page_size = n.clamp(5, 1000);
        self
    }

    fn new(source: Source) -> Ec2 {
        Ec2 {
            source,
            http: http_client(),
            page_size: DEFAULT_PAGE,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, HashMap<String, Client>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client for `region`, built on first use.
    async fn client(&self, region: &str, what: &str) -> Result<Client, ProviderError> {
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ProviderError::Refused {
                provider: NAME,
                what: what.to_owned(),
                message: format!("{region:?} is not an AWS region name (like us-east-1)"),
            });
        }
        if let Some(c) = self.cached().get(region) {
            return Ok(c.clone());
        }
        let config = match &self.source {
            Source::DefaultChain { credentials } => {
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .region(Region::new(region.to_owned()))
                    .http_client(self.http.clone());
                if let Some(c) = credentials {
                    loader = loader.credentials_provider(c.clone());
                }
                let shared = loader.load().await;
                // `From<&SdkConfig>` applies AWS_ENDPOINT_URL_EC2 (then
                // AWS_ENDPOINT_URL and the profile's endpoint_url).
                finish(aws_sdk_ec2::config::Builder::from(&shared), &self.http)
            }
            Source::Explicit { endpoint, credentials } => finish(
                aws_sdk_ec2::Config::builder()
                    .behavior_version(BehaviorVersion::latest())
                    .region(Region::new(region.to_owned()))
                    .endpoint_url(endpoint.clone())
                    .credentials_provider(credentials.clone()),
                &self.http,
            ),
        };
        let client = Client::from_conf(config);
        Ok(self.cached().entry(region.to_owned()).or_insert(client).clone())
    }

    /// Every instance matching `filters` in `region`, page after page.
    async fn describe(&self, region: &str, filters: Vec<Filter>, what: &str) -> Result<Vec<Instance>, ProviderError> {
        let client = self.client(region, what).await?;
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = client
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .max_results(self.page_size)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error(e, what, region))?;
            for r in page.reservations() {
                for i in r.instances() {
                    found.push(instance(i, region, what)?);
                }
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(found),
            }
        }
    }
}

/// A `DescribeInstances` filter.
fn filter(name: &str, values: &[&str]) -> Filter {
    values
        .iter()
        .fold(Filter::builder().name(name), |b, v| b.values(*v))
        .build()
}

/// EC2's state names in the seed's.
pub fn normalise(raw: &str) -> InstanceState {
    match raw {
        "pending" => InstanceState::Provisioning,
        "running" => InstanceState::Running,
        "stopping" | "shutting-down" => InstanceState::Stopping,
        "stopped" => InstanceState::Stopped,
        "terminated" => InstanceState::Terminated,
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

/// Reads one instance of an EC2 answer.
fn instance(i: &aws_sdk_ec2::types::Instance, region: &str, what: &str) -> Result<Instance, ProviderError> {
    let id = i
        .instance_id()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| bad(what, "an instance has no InstanceId"))?;
    let raw_state = i
        .state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let tag = |key: &str| i.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value());
    let instance_type = i.instance_type().map(|t| t.as_str().to_owned());
    let mut raw = Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            raw.insert(k.into(), Value::from(v));
        }
    };
    put("instance_type", instance_type.clone());
    put(
        "launch_time",
        i.launch_time().and_then(|t| t.fmt(DateTimeFormat::DateTime).ok()),
    );
    put(
        "availability_zone",
        i.placement().and_then(|p| p.availability_zone()).map(str::to_owned),
    );
    put("private_ip", i.private_ip_address().map(str::to_owned));
    put("image_id", i.image_id().map(str::to_owned));
    put("key_name", i.key_name().map(str::to_owned));
    put(
        "state_reason",
        i.state_reason().and_then(|r| match (r.code(), r.message()) {
            (_, Some(m)) if !m.is_empty() => Some(m.to_owned()),
            (Some(c), _) => Some(c.to_owned()),
            _ => None,
        }),
    );
    put(
        "state_transition_reason",
        i.state_transition_reason().map(str::to_owned),
    );
    Ok(Instance {
        id: id.to_owned(),
        region: region.to_owned(),
        state: normalise(&raw_state),
        raw_state,
        public_ip: i.public_ip_address().filter(|ip| !ip.is_empty()).map(str::to_owned),
        // The manifest's ssh_port: EC2 maps no ports.
        ssh_port: None,
        instance_type,
        // DescribeInstances does not say (DescribeInstanceTypes would).
        gpu_type: None,
        gpu_count: 0,
        usd_per_hour: None,
        marker: tag(MARKER_TAG).map(str::to_owned),
        raw,
    })
}

/// AWS's error codes for "no such instance".
fn is_not_found(code: Option<&str>) -> bool {
    matches!(code, Some("InvalidInstanceID.NotFound" | "InvalidInstanceID.Malformed"))
}

/// Classifies an EC2 error answer: `code` and `message` as AWS gave them,
/// `http_status` when there was an HTTP answer, `what` was being asked in
/// `region`.
///
/// * no capacity for the type there (`InsufficientInstanceCapacity`,
///   `InsufficientHostCapacity`, `InsufficientCapacity`, `Unsupported`:
///   the type is not offered in that zone) → [`ProviderError::Capacity`],
///   so the next region is tried;
/// * throttling (`RequestLimitExceeded`, `Throttling`, HTTP 429) →
///   [`ProviderError::RateLimited`];
/// * AWS failing (`InternalError`, `ServiceUnavailable`, `Unavailable`,
///   any HTTP 5xx) → [`ProviderError::Transient`];
/// * anything else → [`ProviderError::Refused`] with AWS's code and
///   message; quotas included (`InstanceLimitExceeded`,
///   `VcpuLimitExceeded`): the account's limit to raise, which a failover
///   would only hide.
pub fn classify(
    code: Option<&str>,
    message: &str,
    http_status: Option<u16>,
    what: &str,
    region: &str,
) -> ProviderError {
    // EC2's codes sometimes come as `Server.X` / `Client.X` (state reasons).
    let bare = code.map(|c| {
        c.strip_prefix("Server.")
            .or_else(|| c.strip_prefix("Client."))
            .unwrap_or(c)
    });
    let mut said = match (code, message.is_empty()) {
        (Some(c), false) => format!("{c}: {message}"),
        (Some(c), true) => c.to_owned(),
        (None, false) => message.to_owned(),
        (None, true) => String::new(),
    };
    if let Some(s) = http_status {
        said = if said.is_empty() {
            format!("HTTP {s}")
        } else {
            format!("{said} (HTTP {s})")
        };
    } else if said.is_empty() {
        said = "no answer".to_owned();
    }
    match bare {
        Some(
            "InsufficientInstanceCapacity"
            | "InsufficientHostCapacity"
            | "InsufficientCapacity"
            | "InsufficientCapacityOnHost"
            | "Unsupported",
        ) => {
            return ProviderError::Capacity {
                provider: NAME,
                region: region.to_owned(),
                message: said,
            };
        }
        Some(
            "RequestLimitExceeded"
            | "Throttling"
            | "ThrottlingException"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "TooManyRequestsException",
        ) => {
            return ProviderError::RateLimited {
                provider: NAME,
                retry_after: None,
                message: said,
            };
        }
        Some(
            "InternalError"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "Unavailable"
            | "RequestTimeout"
            | "RequestTimeoutException",
        ) => {
            return ProviderError::Transient {
                provider: NAME,
                what: what.to_owned(),
                message: said,
            };
        }
        _ => {}
    }
    match http_status {
        Some(429) => ProviderError::RateLimited {
            provider: NAME,
            retry_after: None,
            message: said,
        },
        Some(s) if s >= 500 => ProviderError::Transient {
            provider: NAME,
            what: what.to_owned(),
            message: said,
        },
        _ => ProviderError::Refused {
            provider: NAME,
            what: what.to_owned(),
            message: said,
        },
    }
}

/// An error and its sources, `: `-separated (each said once).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let said = s.to_string();
        if !said.is_empty() && !out.ends_with(&said) {
            out.push_str(": ");
            out.push_str(&said);
        }
        cur = s.source();
    }
    out
}

/// What the credential chain said when it found no usable credentials
/// (`None` when the error is something else, or a credential source that
/// timed out or failed: a retry may reach it).
fn credentials_problem(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(c) = err.downcast_ref::<CredentialsError>() {
            return match c {
                CredentialsError::ProviderTimedOut(_) | CredentialsError::ProviderError(_) => None,
                c => Some(chain(c)),
            };
        }
        cur = err.source();
    }
    None
}

/// An SDK error as a [`ProviderError`] (see [`classify`]); the SDK's
/// messages name no credential.
fn sdk_error<E>(e: SdkError<E>, what: &str, region: &str) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let Some(problem) = credentials_problem(&e) {
        return ProviderError::NoCredentials {
            provider: NAME,
            hint: format!(
                "the AWS default chain found none (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, SSO, web identity, an instance role): {problem}"
            ),
        };
    }
    let transient = |message: String| ProviderError::Transient {
        provider: NAME,
        what: what.to_owned(),
        message,
    };
    match &e {
        SdkError::ServiceError(ctx) => classify(
            ctx.err().code(),
            ctx.err().message().unwrap_or_default(),
            Some(ctx.raw().status().as_u16()),
            what,
            region,
        ),
        SdkError::TimeoutError(_) => transient(format!("no answer in time: {}", chain(&e))),
        SdkError::DispatchFailure(d) if d.is_user() => ProviderError::Refused {
            provider: NAME,
            what: what.to_owned(),
            message: format!("the request could not be sent: {}", chain(&e)),
        },
        SdkError::DispatchFailure(_) => transient(format!("the request could not be sent: {}", chain(&e))),
        SdkError::ResponseError(r) if r.raw().status().is_server_error() => {
            transient(format!("HTTP {}: {}", r.raw().status().as_u16(), chain(&e)))
        }
        SdkError::ResponseError(_) => bad(what, chain(&e)),
        SdkError::ConstructionFailure(_) => ProviderError::Refused {
            provider: NAME,
            what: what.to_owned(),
            message: format!("the request could not be built: {}", chain(&e)),
        },
        _ => transient(chain(&e)),
    }
}

/// The tags an instance (and its volumes) are created with: the marker,
/// its `Name`, then the manifest's (which cannot replace either).
fn tags_for(marker: &str, extra: &[(String, String)]) -> Vec<Tag> {
    let mut tags = vec![
        Tag::builder().key(MARKER_TAG).value(marker).build(),
        Tag::builder().key("Name").value(super::marker_name(marker)).build(),
    ];
    for (k, v) in extra {
        if k != MARKER_TAG && k != "Name" && !tags.iter().any(|t| t.key() == Some(k.as_str())) {
            tags.push(Tag::builder().key(k).value(v).build());
        }
    }
    tags
}

/// The `ClientToken` of a launch: the marker, when EC2 accepts it (at most
/// 64 ASCII characters), so a create repeated after a lost answer returns
/// the instance already made. A marker names one launch (each launch has a
/// ledger row of its own), so no token is used for two instances; EC2
/// scopes tokens to a region, so a failover creates afresh.
fn client_token(marker: &str) -> Option<String> {
    (!marker.is_empty() && marker.len() <= 64 && marker.is_ascii()).then(|| marker.to_owned())
}

#[async_trait]
impl Provider for Ec2 {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cloud_provider(&self) -> CloudProvider {
        CloudProvider::Aws
    }

    /// EC2 bills from `running`.
    fn bills_from_create(&self) -> bool {
        false
    }

    /// Always `Ok(None)`: EC2's API has no price (see the module docs).
    async fn quote(&self, _region: &str, _request: &InstanceRequest) -> Result<Option<Quote>, ProviderError> {
        Ok(None)
    }

    async fn create(&self, region: &str, request: &InstanceRequest, marker: &str) -> Result<Instance, ProviderError> {
        let what = "launching an instance";
        let image = request
            .image
            .as_deref()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| ProviderError::Refused {
                provider: NAME,
                what: what.to_owned(),
                message: "EC2 needs launch.image (an AMI id)".into(),
            })?;
        let client = self.client(region, what).await?;
        let tags = tags_for(marker, &request.tags);
        let spec = |kind: ResourceType| {
            TagSpecification::builder()
                .resource_type(kind)
                .set_tags(Some(tags.clone()))
                .build()
        };
        let answer = client
            .run_instances()
            .image_id(image)
            .instance_type(InstanceType::from(request.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .set_key_name(request.ssh_key_name.clone())
            .set_user_data(
                request
                    .user_data
                    .as_ref()
                    .map(|u| base64::engine::general_purpose::STANDARD.encode(u)),
            )
            .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
            .tag_specifications(spec(ResourceType::Instance))
            .tag_specifications(spec(ResourceType::Volume))
            .set_client_token(client_token(marker))
            .send()
            .await
            .map_err(|e| sdk_error(e, what, region))?;
        let first = answer
            .instances()
            .first()
            .ok_or_else(|| bad(what, "RunInstances answered no instance"))?;
        let mut i = instance(first, region, what)?;
        // The answer lists the tags it was created with; it is created with
        // the marker either way.
        i.marker.get_or_insert_with(|| marker.to_owned());
        Ok(i)
    }

    async fn get(&self, region: &str, id: &str) -> Result<Option<Instance>, ProviderError> {
        let what = "reading an instance";
        let client = self.client(region, what).await?;
        let answer = match client.describe_instances().instance_ids(id).send().await {
            Ok(a) => a,
            Err(e) if is_not_found(e.code()) => return Ok(None),
            Err(e) => return Err(sdk_error(e, what, region)),
        };
        let found = answer
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(id));
        found.map(|i| instance(i, region, what)).transpose()
    }

    async fn find(&self, region: &str, marker: &str) -> Result<Vec<Instance>, ProviderError> {
        let filters = vec![
            filter(&format!("tag:{MARKER_TAG}"), &[marker]),
            filter("instance-state-name", &LIVE_STATES),
        ];
        Ok(self
            .describe(region, filters, "finding an instance by marker")
            .await?
            .into_iter()
            .filter(|i| i.marker.as_deref() == Some(marker))
            .collect())
    }

    async fn list_marked(&self, region: &str, prefix: &str) -> Result<Vec<Instance>, ProviderError> {
        let filters = vec![
            filter("tag-key", &[MARKER_TAG]),
            filter("instance-state-name", &LIVE_STATES),
        ];
        Ok(self
            .describe(region, filters, "listing marked instances")
            .await?
            .into_iter()
            .filter(|i| i.marker.as_deref().is_some_and(|m| super::marker_prefix(m) == prefix))
            .collect())
    }

    async fn terminate(&self, region: &str, id: &str) -> Result<(), ProviderError> {
        let what = "terminating an instance";
        let client = self.client(region, what).await?;
        match client.terminate_instances().instance_ids(id).send().await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(e.code()) => Ok(()),
            Err(e) => Err(sdk_error(e, what, region)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::primitives::DateTime;
    use aws_sdk_ec2::types::{InstanceState as Ec2State, InstanceStateName, Placement, StateReason};

    #[test]
    fn states_are_normalised_and_unknown_ones_kept_billing() {
        assert_eq!(normalise("pending"), InstanceState::Provisioning);
        assert_eq!(normalise("running"), InstanceState::Running);
        assert_eq!(normalise("stopping"), InstanceState::Stopping);
        assert_eq!(normalise("shutting-down"), InstanceState::Stopping);
        assert_eq!(normalise("stopped"), InstanceState::Stopped);
        assert_eq!(normalise("terminated"), InstanceState::Terminated);
        assert_eq!(normalise("hibernating"), InstanceState::Unknown);
        assert!(normalise("hibernating").may_bill());
    }

    #[test]
    fn capacity_lets_the_next_region_be_tried() {
        for code in [
            "InsufficientInstanceCapacity",
            "Server.InsufficientInstanceCapacity",
            "InsufficientHostCapacity",
            "Unsupported",
        ] {
            // EC2 answers InsufficientInstanceCapacity with HTTP 500: the
            // code decides, not the status.
            let e = classify(
                Some(code),
                "We currently do not have sufficient g5.xlarge capacity",
                Some(500),
                "launching an instance",
                "us-east-1",
            );
            match e {
                ProviderError::Capacity { region, message, .. } => {
                    assert_eq!(region, "us-east-1");
                    assert!(message.contains(code), "{message}");
                }
                e => panic!("{code}: {e:?}"),
            }
        }
    }

    #[test]
    fn quotas_are_refusals_not_capacity() {
        for code in ["InstanceLimitExceeded", "VcpuLimitExceeded"] {
            let e = classify(
                Some(code),
                "You have requested more vCPU capacity than your current vCPU limit",
                Some(400),
                "launching an instance",
                "us-east-1",
            );
            assert!(matches!(e, ProviderError::Refused { .. }), "{code}: {e:?}");
            assert!(!e.is_retryable());
            assert!(e.to_string().contains(code), "{e}");
        }
    }

    #[test]
    fn throttling_and_failures_are_retryable() {
        let throttled = classify(
            Some("RequestLimitExceeded"),
            "Request limit exceeded.",
            Some(503),
            "x",
            "r",
        );
        assert!(
            matches!(throttled, ProviderError::RateLimited { retry_after: None, .. }),
            "{throttled:?}"
        );
        let throttled = classify(Some("Throttling"), "Rate exceeded", Some(400), "x", "r");
        assert!(matches!(throttled, ProviderError::RateLimited { .. }), "{throttled:?}");
        let many = classify(None, "", Some(429), "x", "r");
        assert!(matches!(many, ProviderError::RateLimited { .. }), "{many:?}");
        let internal = classify(
            Some("InternalError"),
            "An internal error has occurred",
            Some(500),
            "x",
            "r",
        );
        assert!(matches!(internal, ProviderError::Transient { .. }), "{internal:?}");
        let gateway = classify(None, "", Some(502), "x", "r");
        assert!(matches!(gateway, ProviderError::Transient { .. }), "{gateway:?}");
        assert!(gateway.to_string().contains("HTTP 502"), "{gateway}");
        for e in [throttled, many, internal, gateway] {
            assert!(e.is_retryable(), "{e:?}");
        }
    }

    #[test]
    fn other_answers_are_refusals_with_awss_code_and_message() {
        let e = classify(
            Some("InvalidAMIID.NotFound"),
            "The image id '[ami-12345678]' does not exist",
            Some(400),
            "launching an instance",
            "eu-west-1",
        );
        match &e {
            ProviderError::Refused { what, message, .. } => {
                assert_eq!(what, "launching an instance");
                assert_eq!(
                    message,
                    "InvalidAMIID.NotFound: The image id '[ami-12345678]' does not exist (HTTP 400)"
                );
            }
            e => panic!("{e:?}"),
        }
        assert!(!e.is_retryable());
        let e = classify(Some("AuthFailure"), "", Some(401), "x", "r");
        assert!(
            matches!(&e, ProviderError::Refused { message, .. } if message == "AuthFailure (HTTP 401)"),
            "{e:?}"
        );
    }

    #[test]
    fn an_instance_is_read_from_ec2s_shape() {
        let i = aws_sdk_ec2::types::Instance::builder()
            .instance_id("i-0123456789abcdef0")
            .state(Ec2State::builder().name(InstanceStateName::Running).code(16).build())
            .instance_type(InstanceType::from("g5.xlarge"))
            .public_ip_address("198.51.100.7")
            .private_ip_address("10.0.0.7")
            .launch_time(DateTime::from_secs(1_700_000_000))
            .placement(Placement::builder().availability_zone("us-east-1a").build())
            .state_reason(StateReason::builder().code("").message("").build())
            .tags(
                Tag::builder()
                    .key(MARKER_TAG)
                    .value("0123456789abcdef0123456789abcdef:7")
                    .build(),
            )
            .tags(
                Tag::builder()
                    .key("Name")
                    .value("plugboard-0123456789abcdef0123456789abcdef-7")
                    .build(),
            )
            .build();
        let got = instance(&i, "us-east-1", "test").expect("reads");
        assert_eq!(got.id, "i-0123456789abcdef0");
        assert_eq!(got.region, "us-east-1");
        assert_eq!(got.state, InstanceState::Running);
        assert_eq!(got.raw_state, "running");
        assert_eq!(got.public_ip.as_deref(), Some("198.51.100.7"));
        assert_eq!(got.instance_type.as_deref(), Some("g5.xlarge"));
        assert_eq!(got.marker.as_deref(), Some("0123456789abcdef0123456789abcdef:7"));
        assert_eq!(got.raw.get("private_ip"), Some(&Value::from("10.0.0.7")));
        assert_eq!(got.raw.get("availability_zone"), Some(&Value::from("us-east-1a")));
        assert_eq!(got.raw.get("launch_time"), Some(&Value::from("2023-11-14T22:13:20Z")));
        assert!(!got.raw.contains_key("state_reason"), "empty reasons are left out");
        let no_id = aws_sdk_ec2::types::Instance::builder().build();
        assert!(matches!(
            instance(&no_id, "r", "test"),
            Err(ProviderError::BadAnswer { .. })
        ));
        let unnamed = aws_sdk_ec2::types::Instance::builder().instance_id("i-1").build();
        let got = instance(&unnamed, "r", "test").expect("reads");
        assert_eq!(
            (got.state, got.raw_state.as_str(), got.marker),
            (InstanceState::Unknown, "unknown", None)
        );
    }

    #[test]
    fn the_marker_and_name_tags_come_first_and_cannot_be_replaced() {
        let m = "0123456789abcdef0123456789abcdef:42";
        let extra = vec![
            ("team".to_owned(), "ml".to_owned()),
            ("Name".to_owned(), "mine".to_owned()),
            (MARKER_TAG.to_owned(), "other:1".to_owned()),
            ("team".to_owned(), "twice".to_owned()),
        ];
        let built = tags_for(m, &extra);
        let pairs: Vec<(Option<&str>, Option<&str>)> = built.iter().map(|t| (t.key(), t.value())).collect();
        assert_eq!(
            pairs,
            vec![
                (Some(MARKER_TAG), Some(m)),
                (Some("Name"), Some("plugboard-0123456789abcdef0123456789abcdef-42")),
                (Some("team"), Some("ml")),
            ]
        );
        assert_eq!(client_token(m).as_deref(), Some(m));
        assert_eq!(client_token(&"x".repeat(65)), None);
    }

    #[tokio::test]
    async fn a_chain_with_no_credentials_is_no_credentials_and_says_nothing_secret() {
        use aws_credential_types::credential_fn::provide_credentials_fn;
        let none =
            provide_credentials_fn(|| async { Err(CredentialsError::not_loaded("no credentials were configured")) });
        let ec2 = Ec2::new(Source::Explicit {
            // Never reached: signing fails first.
            endpoint: "http://127.0.0.1:9".into(),
            credentials: SharedCredentialsProvider::new(none),
        });
        let e = ec2
            .get("us-east-1", "i-0123456789abcdef0")
            .await
            .expect_err("no credentials");
        match &e {
            ProviderError::NoCredentials { provider: NAME, hint } => assert!(
                hint.ends_with("the credential provider was not enabled: no credentials were configured"),
                "{hint}"
            ),
            e => panic!("{e:?}"),
        }
        assert!(!e.is_retryable());
        let with_keys = Ec2::with_endpoint(
            "http://127.0.0.1:9",
            Credentials::new("AKIDPLUGBOARDTEST", "s3cr3t-never-shown", None, None, "test"),
        );
        assert!(!format!("{with_keys:?}").contains("s3cr3t"), "{with_keys:?}");
        // Nothing listens on port 9: a transport failure, retryable.
        let e = with_keys
            .get("us-east-1", "i-0123456789abcdef0")
            .await
            .expect_err("refused connection");
        assert!(matches!(e, ProviderError::Transient { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("the request could not be sent: dispatch failure"),
            "{e}"
        );
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }

    #[tokio::test]
    async fn an_image_is_required_and_regions_are_checked() {
        let ec2 = Ec2::with_endpoint("http://127.0.0.1:9", Credentials::new("a", "b", None, None, "test"));
        let request = InstanceRequest {
            instance_type: "t3.micro".into(),
            ..InstanceRequest::default()
        };
        let e = ec2.create("us-east-1", &request, "l:1").await.expect_err("no image");
        assert!(e.to_string().contains("EC2 needs launch.image (an AMI id)"), "{e}");
        let e = ec2.get("", "i-1").await.expect_err("no region");
        assert!(matches!(e, ProviderError::Refused { .. }), "{e:?}");
        let e = ec2.list_marked("us-east-1/../x", "l").await.expect_err("bad region");
        assert!(matches!(e, ProviderError::Refused { .. }), "{e:?}");
        assert_eq!(ec2.quote("us-east-1", &request).await.expect("no price"), None);
    }
}
