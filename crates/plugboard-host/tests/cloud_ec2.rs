//! The EC2 provider against a real EC2 API emulator: `moto_server` (PyPI
//! `moto[server]`) on loopback, one per test, started here on a free port
//! and killed by pid when the test ends. Every call goes through the AWS
//! SDK exactly as against AWS (SigV4-signed query requests, XML answers).
//!
//! The provider is built with [`Ec2::with_endpoint`] rather than through
//! environment variables, which are process-wide while tests run in
//! parallel threads; the one test of [`Ec2::from_env`] (the SDK reading
//! `AWS_ENDPOINT_URL_EC2` and the default credential chain) runs this
//! binary again as a child process with its own environment.
//!
//! Under CI a missing `moto_server` fails the tests; elsewhere they are
//! skipped with a message.
//!
//! moto ignores `ClientToken`, so the "one instance per marker" tests show
//! the find-by-marker before create, not EC2's own idempotency. It also
//! accepts any AMI id and any instance type, and answers `running` at the
//! first read after `pending` and `terminated` at once.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use base64::Engine as _;
use plugboard_core::{CloudProvider, ExecutionMode};
use plugboard_host::backend::cloud::{CloudBackend, Providers};
use plugboard_host::backend::{Backend, Marked, Target};
use plugboard_host::cloud::ec2::{self, Ec2, MARKER_TAG};
use plugboard_host::cloud::provision::{self, AcquireError};
use plugboard_host::cloud::retry::RetryPolicy;
use plugboard_host::cloud::{ApiKey, Instance, InstanceRequest, InstanceState, Provider, ProviderError, Quote};
use plugboard_host::ledger::{Intent, ResourceKind, ResourceStatus};
use plugboard_host::{Backends, DataDir, GcOptions, Ledger};
use serde_json::{Value, json};

/// Set in the child process of [`from_env_uses_the_sdks_endpoint_variable_and_credential_chain`].
const CHILD_ENV: &str = "PLUGBOARD_TEST_EC2_CHILD";

/// A `moto_server` on loopback, killed by pid on drop.
struct Moto {
    child: Child,
    url: String,
    _log: tempfile::NamedTempFile,
}

impl Moto {
    /// Starts one, or `None` (outside CI) when moto_server is not installed.
    fn start() -> Option<Moto> {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("its address").port()
        };
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let spawned = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("the log"))
            .stderr(log.reopen().expect("the log"))
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "moto_server is required under CI (pip install 'moto[server]'): {e}"
                );
                eprintln!("SKIP: moto_server cannot be started ({e}); pip install 'moto[server]'");
                return None;
            }
        };
        let url = format!("http://127.0.0.1:{port}");
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("moto_server's status") {
                let said = std::fs::read_to_string(log.path()).unwrap_or_default();
                panic!("moto_server exited ({status}) before answering:\n{said}");
            }
            if answers(port) {
                break;
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                panic!("moto_server did not answer on port {port} within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Moto { child, url, _log: log })
    }

    /// The provider, at this server, with moto's conventional credentials.
    fn ec2(&self) -> Ec2 {
        Ec2::with_endpoint(&self.url, credentials())
    }

    /// A plain SDK client (for what the provider does not do: attributes,
    /// images).
    fn sdk(&self, region: &str) -> aws_sdk_ec2::Client {
        use aws_smithy_http_client::tls::{Provider as Tls, rustls_provider::CryptoMode};
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Tls::Rustls(CryptoMode::Ring))
            .build_https();
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .endpoint_url(&self.url)
            .credentials_provider(credentials())
            .http_client(http)
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }

    /// An AMI id moto knows (it ships Amazon's public images).
    async fn ami(&self) -> String {
        let images = self
            .sdk("us-east-1")
            .describe_images()
            .owners("amazon")
            .send()
            .await
            .expect("moto lists its images");
        images
            .images()
            .iter()
            .filter_map(|i| i.image_id())
            .find(|id| id.starts_with("ami-"))
            .expect("moto has an AMI")
            .to_owned()
    }

    /// Every instance in `region`, whatever its tags and state.
    async fn all_instances(&self, region: &str) -> Vec<aws_sdk_ec2::types::Instance> {
        let answer = self
            .sdk(region)
            .describe_instances()
            .send()
            .await
            .expect("moto lists instances");
        answer
            .reservations()
            .iter()
            .flat_map(|r| r.instances().iter().cloned())
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True once an HTTP request to moto on `port` gets an answer.
fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut first = [0u8; 12];
    s.read_exact(&mut first).is_ok() && first.starts_with(b"HTTP/1.")
}

fn credentials() -> Credentials {
    Credentials::new("testing", "testing", None, None, "plugboard-tests")
}

/// A ledger id of its own for each test (markers are `LEDGERID:ROW`).
fn ledger_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn request(ami: &str, user_data: Option<&str>) -> InstanceRequest {
    InstanceRequest {
        instance_type: "g5.xlarge".into(),
        image: Some(ami.to_owned()),
        ssh_key_name: None,
        user_data: user_data.map(str::to_owned),
        tags: vec![("team".into(), "ml".into())],
        ..InstanceRequest::default()
    }
}

fn quick() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(10),
        ..RetryPolicy::default()
    }
}

fn tag<'a>(i: &'a aws_sdk_ec2::types::Instance, key: &str) -> Option<&'a str> {
    i.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

#[tokio::test]
async fn create_tags_the_instance_and_get_find_and_list_read_it() {
    let Some(moto) = Moto::start() else { return };
    let ami = moto.ami().await;
    let ec2 = moto.ec2();
    let ledger = ledger_id();
    let marker = format!("{ledger}:42");
    let script = "#!/bin/sh\n# the lease watchdog\necho plugboard > /run/lease\n";
    let made = ec2
        .create("us-east-1", &request(&ami, Some(script)), &marker)
        .await
        .expect("created");
    assert!(made.id.starts_with("i-"), "{made:?}");
    assert_eq!(made.region, "us-east-1");
    assert_eq!(made.marker.as_deref(), Some(marker.as_str()));
    assert_eq!(made.instance_type.as_deref(), Some("g5.xlarge"));

    // The tags, the user data and the shutdown behaviour, as EC2 holds them.
    let sdk = moto.sdk("us-east-1");
    let all = moto.all_instances("us-east-1").await;
    let held = all
        .iter()
        .find(|i| i.instance_id() == Some(made.id.as_str()))
        .expect("moto has it");
    assert_eq!(tag(held, MARKER_TAG), Some(marker.as_str()));
    assert_eq!(tag(held, "Name"), Some(format!("plugboard-{ledger}-42").as_str()));
    assert_eq!(tag(held, "team"), Some("ml"));
    let user_data = sdk
        .describe_instance_attribute()
        .instance_id(&made.id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .expect("user data");
    let encoded = user_data
        .user_data()
        .and_then(|v| v.value())
        .expect("the instance has user data");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("user data is base64");
    assert_eq!(String::from_utf8(decoded).expect("utf-8"), script);
    let shutdown = sdk
        .describe_instance_attribute()
        .instance_id(&made.id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::InstanceInitiatedShutdownBehavior)
        .send()
        .await
        .expect("shutdown behaviour");
    assert_eq!(
        shutdown.instance_initiated_shutdown_behavior().and_then(|v| v.value()),
        Some("terminate")
    );
    let volumes = sdk
        .describe_volumes()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{MARKER_TAG}"))
                .values(&marker)
                .build(),
        )
        .send()
        .await
        .expect("volumes");
    assert!(!volumes.volumes().is_empty(), "the root volume carries the marker too");

    // get: running, normalised, with its address; the raw fields say no secret.
    let got = ec2.get("us-east-1", &made.id).await.expect("read").expect("exists");
    assert_eq!(got.state, InstanceState::Running, "{got:?}");
    assert_eq!(got.raw_state, "running");
    assert!(got.public_ip.is_some(), "{got:?}");
    assert_eq!(got.marker.as_deref(), Some(marker.as_str()));
    assert!(got.raw.contains_key("private_ip"), "{:?}", got.raw);
    assert!(got.raw.contains_key("availability_zone"), "{:?}", got.raw);
    assert!(!format!("{got:?}").contains("testing"), "{got:?}");
    assert_eq!(ec2.cloud_provider(), CloudProvider::Aws);
    assert!(!ec2.bills_from_create());
    assert_eq!(ec2.quote("us-east-1", &request(&ami, None)).await.expect("quote"), None);

    // Another installation's instance, and one of this ledger's other rows.
    let other_ledger = ledger_id();
    let theirs = ec2
        .create("us-east-1", &request(&ami, None), &format!("{other_ledger}:42"))
        .await
        .expect("created");
    let sibling = ec2
        .create("us-east-1", &request(&ami, None), &format!("{ledger}:43"))
        .await
        .expect("created");

    // find: exactly the instance carrying the marker.
    let found = ec2.find("us-east-1", &marker).await.expect("find");
    assert_eq!(
        found.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec![made.id.as_str()]
    );
    assert!(ec2.find("eu-west-1", &marker).await.expect("find").is_empty());

    // list_marked: this ledger's instances only.
    let mut listed: Vec<String> = ec2
        .list_marked("us-east-1", &ledger)
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.id)
        .collect();
    listed.sort();
    let mut mine = vec![made.id.clone(), sibling.id.clone()];
    mine.sort();
    assert_eq!(listed, mine);
    let others = ec2.list_marked("us-east-1", &other_ledger).await.expect("list");
    assert_eq!(
        others.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec![theirs.id.as_str()]
    );
    assert!(
        ec2.list_marked("us-east-1", "no-such-ledger")
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn list_marked_follows_next_token_across_pages() {
    let Some(moto) = Moto::start() else { return };
    let ami = moto.ami().await;
    // The smallest page EC2 allows: 12 instances take three pages.
    let ec2 = moto.ec2().page_size(5);
    let ledger = ledger_id();
    let mut made = Vec::new();
    for row in 1..=12 {
        let i = ec2
            .create("us-east-1", &request(&ami, None), &format!("{ledger}:{row}"))
            .await
            .expect("created");
        made.push(i.id);
    }
    // A terminated one is left out.
    ec2.terminate("us-east-1", &made[0]).await.expect("terminated");
    let mut listed: Vec<String> = ec2
        .list_marked("us-east-1", &ledger)
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.id)
        .collect();
    listed.sort();
    let mut live = made[1..].to_vec();
    live.sort();
    assert_eq!(listed, live);
}

#[tokio::test]
async fn terminate_is_confirmed_and_idempotent_and_unknown_ids_are_none() {
    let Some(moto) = Moto::start() else { return };
    let ami = moto.ami().await;
    let ec2 = moto.ec2();
    let marker = format!("{}:1", ledger_id());
    let made = ec2
        .create("us-east-1", &request(&ami, None), &marker)
        .await
        .expect("created");
    ec2.terminate("us-east-1", &made.id).await.expect("terminate");
    match ec2.get("us-east-1", &made.id).await.expect("read") {
        None => {}
        Some(i) => assert_eq!(i.state, InstanceState::Terminated, "{i:?}"),
    }
    ec2.terminate("us-east-1", &made.id)
        .await
        .expect("terminating again succeeds");
    assert!(
        ec2.find("us-east-1", &marker).await.expect("find").is_empty(),
        "terminated is not found"
    );
    assert_eq!(ec2.get("us-east-1", "i-0123456789abcdef0").await.expect("read"), None);
    ec2.terminate("us-east-1", "i-0123456789abcdef0")
        .await
        .expect("terminating what never existed succeeds");

    // The shared step: asks, then confirms with get.
    let again = ec2
        .create("us-east-1", &request(&ami, None), &format!("{}:2", ledger_id()))
        .await
        .expect("created");
    let asked = provision::terminate_confirmed(&ec2, "us-east-1", &again.id, Duration::from_secs(30), &quick())
        .await
        .expect("confirmed");
    assert!(asked);
    let asked = provision::terminate_confirmed(&ec2, "us-east-1", &again.id, Duration::from_secs(30), &quick())
        .await
        .expect("confirmed");
    assert!(!asked, "nothing left to terminate");

    // EC2's refusals come back as refusals, with AWS's code.
    let e = ec2
        .create(
            "us-east-1",
            &InstanceRequest {
                image: None,
                ..request(&ami, None)
            },
            &marker,
        )
        .await
        .expect_err("no image");
    assert!(matches!(e, ProviderError::Refused { .. }), "{e:?}");
    assert!(e.to_string().contains("launch.image"), "{e}");
}

#[tokio::test]
async fn acquiring_twice_with_one_marker_creates_one_instance() {
    let Some(moto) = Moto::start() else { return };
    let ami = moto.ami().await;
    let ec2 = moto.ec2();
    let ledger = ledger_id();
    let marker = format!("{ledger}:5");
    let regions = vec!["us-east-1".to_owned()];
    let req = request(&ami, Some("#!/bin/sh\ntrue\n"));
    let first = provision::acquire(&ec2, &regions, &req, &marker, Some(2.0), &quick())
        .await
        .expect("acquired");
    assert!(!first.adopted);
    assert_eq!(first.quoted_usd_per_hour, None, "EC2 quotes no price");
    // A launch retried after a crash between the create and the ledger
    // update: the marker finds the instance (moto ignores ClientToken, so
    // this is the find before create at work).
    let second = provision::acquire(&ec2, &regions, &req, &marker, Some(2.0), &quick())
        .await
        .expect("acquired");
    assert!(second.adopted);
    assert_eq!(second.instance.id, first.instance.id);
    let marked: Vec<_> = moto
        .all_instances("us-east-1")
        .await
        .into_iter()
        .filter(|i| tag(i, MARKER_TAG) == Some(marker.as_str()))
        .collect();
    assert_eq!(marked.len(), 1, "{marked:?}");
    let running = provision::wait_running(&ec2, "us-east-1", &first.instance.id, Duration::from_secs(30), &quick())
        .await
        .expect("runs");
    assert!(running.public_ip.is_some());
}

/// EC2 with no capacity in one region (moto accepts any type anywhere).
struct NoCapacityIn {
    inner: Arc<Ec2>,
    region: &'static str,
}

#[async_trait]
impl Provider for NoCapacityIn {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn cloud_provider(&self) -> CloudProvider {
        self.inner.cloud_provider()
    }
    async fn quote(&self, region: &str, request: &InstanceRequest) -> Result<Option<Quote>, ProviderError> {
        self.inner.quote(region, request).await
    }
    async fn create(&self, region: &str, request: &InstanceRequest, marker: &str) -> Result<Instance, ProviderError> {
        if region == self.region {
            // What classify makes of EC2's answer there.
            return Err(ec2::classify(
                Some("InsufficientInstanceCapacity"),
                "We currently do not have sufficient g5.xlarge capacity in the Availability Zone you requested",
                Some(500),
                "launching an instance",
                region,
            ));
        }
        self.inner.create(region, request, marker).await
    }
    async fn get(&self, region: &str, id: &str) -> Result<Option<Instance>, ProviderError> {
        self.inner.get(region, id).await
    }
    async fn find(&self, region: &str, marker: &str) -> Result<Vec<Instance>, ProviderError> {
        self.inner.find(region, marker).await
    }
    async fn list_marked(&self, region: &str, prefix: &str) -> Result<Vec<Instance>, ProviderError> {
        self.inner.list_marked(region, prefix).await
    }
    async fn terminate(&self, region: &str, id: &str) -> Result<(), ProviderError> {
        self.inner.terminate(region, id).await
    }
}

#[tokio::test]
async fn no_capacity_in_the_first_region_fails_over_to_the_next() {
    let Some(moto) = Moto::start() else { return };
    let ami = moto.ami().await;
    let ec2 = Arc::new(moto.ec2());
    let provider = NoCapacityIn {
        inner: Arc::clone(&ec2),
        region: "us-east-1",
    };
    let ledger = ledger_id();
    let marker = format!("{ledger}:9");
    let regions = vec!["us-east-1".to_owned(), "eu-west-1".to_owned()];
    let got = provision::acquire(&provider, &regions, &request(&ami, None), &marker, None, &quick())
        .await
        .expect("acquired in the second region");
    assert_eq!(got.instance.region, "eu-west-1");
    assert!(!got.adopted);
    let there = ec2.find("eu-west-1", &marker).await.expect("find");
    assert_eq!(
        there.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec![got.instance.id.as_str()]
    );
    assert!(ec2.list_marked("us-east-1", &ledger).await.expect("list").is_empty());
    assert!(
        moto.all_instances("us-east-1").await.is_empty(),
        "nothing was created in us-east-1"
    );

    // No capacity anywhere: every region's answer is reported, nothing made.
    let nowhere = NoCapacityIn {
        inner: Arc::clone(&ec2),
        region: "us-east-1",
    };
    let e = provision::acquire(
        &nowhere,
        &["us-east-1".to_owned()],
        &request(&ami, None),
        &format!("{ledger}:10"),
        None,
        &quick(),
    )
    .await
    .expect_err("no capacity");
    match e {
        AcquireError::NoCapacity { tried, .. } => {
            assert_eq!(tried.len(), 1);
            assert!(tried[0].contains("InsufficientInstanceCapacity"), "{tried:?}");
        }
        e => panic!("{e:?}"),
    }
}

/// A cloud backend whose `aws` provider is `ec2`.
fn backend_with(ec2: Ec2) -> CloudBackend {
    // No keys: the EC2 provider is given, not built from the environment.
    let providers = Arc::new(Providers::new(Arc::new(|_: &str| None)));
    providers.insert(Arc::new(ec2));
    CloudBackend::new(providers).with_retry_policy(quick())
}

#[tokio::test]
async fn the_sweep_finds_an_unrecorded_instance_and_stop_terminates_it() {
    let Some(moto) = Moto::start() else { return };
    let ami = moto.ami().await;
    let ec2 = moto.ec2();
    let ledger = ledger_id();
    let marker = format!("{ledger}:7");
    // A host SIGKILLed between the create and the ledger update: the
    // instance exists, only its marker says whose it is.
    let made = ec2
        .create("us-east-1", &request(&ami, None), &marker)
        .await
        .expect("created");
    let other = ec2
        .create("us-east-1", &request(&ami, None), &format!("{}:7", ledger_id()))
        .await
        .expect("created");
    let backend = backend_with(moto.ec2());
    let found = backend
        .sweep(&ledger, &[json!({"provider": "aws", "regions": ["us-east-1"]})])
        .await
        .expect("swept");
    assert_eq!(found.len(), 1, "{found:?}");
    let Marked {
        resource_id,
        description,
    } = &found[0];
    assert_eq!(*resource_id, 7);
    assert!(description.contains(&made.id), "{description}");
    let stopped = backend
        .stop(
            &Target {
                resource_id: Some(7),
                marker: marker.clone(),
                handle: None,
                details: Value::Null,
                marker_found: Some(true),
            },
            Duration::ZERO,
        )
        .await
        .expect("stopped");
    assert_eq!(stopped.ended.len(), 1, "{stopped:?}");
    assert!(stopped.ended[0].contains(&made.id), "{stopped:?}");
    match ec2.get("us-east-1", &made.id).await.expect("read") {
        None => {}
        Some(i) => assert_eq!(i.state, InstanceState::Terminated, "{i:?}"),
    }
    let theirs = ec2.get("us-east-1", &other.id).await.expect("read").expect("exists");
    assert_eq!(
        theirs.state,
        InstanceState::Running,
        "another ledger's instance is left alone"
    );
    let again = backend
        .sweep(&ledger, &[json!({"provider": "aws", "regions": ["us-east-1"]})])
        .await
        .expect("swept");
    assert!(again.is_empty(), "{again:?}");
}

#[tokio::test]
async fn gc_terminates_a_dead_hosts_instance_and_ends_its_row() {
    let Some(moto) = Moto::start() else { return };
    let ami = moto.ami().await;
    let ec2 = moto.ec2();
    let tmp = tempfile::tempdir().expect("a temp dir");
    let mut ledger = Ledger::open(&DataDir::new(tmp.path()).ledger_path()).expect("ledger");
    let dead = ledger.register_host(4_999_977, 1, "another-boot").expect("host");
    let details = json!({"provider": "aws", "regions": ["us-east-1", "eu-west-1"], "instance_type": "g5.xlarge"});
    let row = ledger
        .intent(
            dead.id,
            &Intent {
                details: details.clone(),
                ..Intent::new(ResourceKind::Instance, "cloud", "gpu_job")
            },
        )
        .expect("intent");
    let marker = ledger.marker(row);
    // The host died after the create (in its second region), before
    // recording the handle.
    let made = ec2
        .create("eu-west-1", &request(&ami, None), &marker)
        .await
        .expect("created");
    let mut backends = Backends::default();
    backends.register(
        Arc::new(backend_with(moto.ec2())),
        &[ExecutionMode::CloudVm, ExecutionMode::CloudGpu, ExecutionMode::CloudCpu],
    );
    let report = plugboard_host::gc(
        &mut ledger,
        GcOptions {
            grace: Duration::ZERO,
            ..GcOptions::default()
        },
        None,
        &backends,
    )
    .await
    .expect("gc");
    assert_eq!(report.unconfirmed, 0, "{report:?}");
    let reaped: Vec<_> = report.reaped.iter().filter(|r| r.resource_id == Some(row)).collect();
    assert_eq!(reaped.len(), 1, "{report:?}");
    assert!(reaped[0].confirmed, "{report:?}");
    match ec2.get("eu-west-1", &made.id).await.expect("read") {
        None => {}
        Some(i) => assert_eq!(i.state, InstanceState::Terminated, "{i:?}"),
    }
    let r = ledger.get(row).expect("read row").expect("row");
    assert!(!r.is_live(), "{r:?}");
    assert_eq!(r.status, ResourceStatus::Reaped, "{r:?}");
    let again = plugboard_host::gc(&mut ledger, GcOptions::default(), None, &backends)
        .await
        .expect("gc");
    assert!(again.reaped.is_empty(), "{again:?}");
}

#[tokio::test]
async fn from_env_uses_the_sdks_endpoint_variable_and_credential_chain() {
    let Some(moto) = Moto::start() else { return };
    let ami = moto.ami().await;
    let ledger = ledger_id();
    let nowhere = tempfile::tempdir().expect("a temp dir");
    // How the child finds keys: in the environment, in its lookup (the
    // secret store's place), or nowhere.
    let run = |keys: &str, marker: &str| {
        let mut c = Command::new(std::env::current_exe().expect("this test binary"));
        c.args(["--exact", "from_env_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{ami} {marker} {keys}"))
            .env("AWS_ENDPOINT_URL_EC2", &moto.url)
            // No profile, no shared files, no instance metadata: only what
            // is given here.
            .env("AWS_CONFIG_FILE", nowhere.path().join("config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", nowhere.path().join("credentials"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("HOME", nowhere.path());
        for k in [
            "AWS_ENDPOINT_URL",
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            c.env_remove(k);
        }
        if keys == "env" {
            c.env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing");
        }
        let out = c.output().expect("the child runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        text
    };
    let with_keys = run("env", &format!("{ledger}:1"));
    let id = with_keys
        .lines()
        .find_map(|l| l.split_once("created ").map(|(_, id)| id))
        .unwrap_or_else(|| panic!("the child created nothing:\n{with_keys}"))
        .trim()
        .to_owned();
    // It went to this moto, through the variable.
    let here = moto
        .ec2()
        .find("us-east-1", &format!("{ledger}:1"))
        .await
        .expect("find");
    assert_eq!(
        here.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec![id.as_str()]
    );
    let without = run("none", &format!("{ledger}:2"));
    assert!(without.contains("no credentials:"), "{without}");
    assert!(
        moto.ec2()
            .find("us-east-1", &format!("{ledger}:2"))
            .await
            .expect("find")
            .is_empty()
    );
    let stored = run("lookup", &format!("{ledger}:3"));
    assert!(stored.contains("created i-"), "{stored}");
    assert_eq!(
        moto.ec2()
            .find("us-east-1", &format!("{ledger}:3"))
            .await
            .expect("find")
            .len(),
        1
    );
}

/// Run by [`from_env_uses_the_sdks_endpoint_variable_and_credential_chain`]
/// in a process of its own; does nothing otherwise.
#[tokio::test]
async fn from_env_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let parts: Vec<&str> = spec.split(' ').collect();
    let [ami, marker, keys] = parts[..] else {
        panic!("{CHILD_ENV} is `AMI MARKER KEYS`: {spec:?}")
    };
    let ec2 = if keys == "lookup" {
        Ec2::from_env_or_keys(|name| match name {
            ec2::KEY_ID_ENV | ec2::SECRET_KEY_ENV => Some(ApiKey::new("testing")),
            _ => None,
        })
    } else {
        // A lookup with the id only falls back to the default chain.
        Ec2::from_env_or_keys(|name| (name == ec2::KEY_ID_ENV).then(|| ApiKey::new("testing")))
    }
    .expect("from the environment");
    match ec2.create("us-east-1", &request(ami, None), marker).await {
        Ok(i) => println!("created {}", i.id),
        Err(e) => {
            assert!(matches!(e, ProviderError::NoCredentials { .. }), "{e:?}");
            assert!(!e.is_retryable());
            println!("refused: {e}");
        }
    }
}
