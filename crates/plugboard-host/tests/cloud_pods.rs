//! cloud_container on RunPod pods and Vast.ai instances, against
//! emulators of their documented APIs (the real services cannot run
//! here; see `common/runpod_emulator.rs` and `common/vast_emulator.rs` for
//! the quirks they keep). The emulated pods' address is this machine and
//! their mapped SSH port the test's real sshd: provision → SSH launch on
//! the mapped port → call → delete runs for real, and "nothing left" is
//! read from the machine's processes and the emulators' lists.

mod common;
#[path = "common/runpod_emulator.rs"]
mod runpod_emulator;
#[path = "common/vast_emulator.rs"]
mod vast_emulator;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::sshd::Sshd;
use common::*;
use plugboard_core::ExecutionMode;
use plugboard_host::backend::cloud::{CloudBackend, Providers};
use plugboard_host::cloud::provision::{self, AcquireError};
use plugboard_host::cloud::retry::RetryPolicy;
use plugboard_host::cloud::{InstanceRequest, InstanceState, Provider};
use plugboard_host::ledger::PriceSource;
use plugboard_host::{
    Backends, DataDir, GcOptions, Ledger, Manifest, ResourceHandle, ResourceStatus, RunState, Supervisor,
    SupervisorConfig,
};
use runpod_emulator::RunPodEmulator;
use serde_json::json;
use vast_emulator::VastEmulator;

const CHILD_ENV: &str = "PLUGBOARD_TEST_PODS_HOST_CHILD";

fn quick() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(50),
        max_delay: Duration::from_millis(400),
        max_attempts: 4,
        max_retry_after: Duration::from_secs(10),
    }
}

/// The built-in backends with the cloud one talking to `provider`.
fn backends(provider: Arc<dyn Provider>) -> Backends {
    let providers = Arc::new(Providers::new(Arc::new(|_: &str| None)));
    providers.insert(provider);
    let mut b = Backends::builtin(None);
    b.register(
        Arc::new(CloudBackend::new(providers).with_retry_policy(quick())),
        &[ExecutionMode::CloudContainer],
    );
    b
}

fn supervisor_with(data: &Path, provider: Arc<dyn Provider>) -> Supervisor {
    let mut cfg = SupervisorConfig::new(DataDir::new(data));
    cfg.backends = Some(backends(provider));
    Supervisor::new(cfg).unwrap()
}

fn whoami() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            std::process::Command::new("id")
                .arg("-un")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "root".into())
}

/// The Python slow_job worker in a cloud container. No `ssh_port`: the
/// worker is reached only if the provider's mapped port is used.
fn pod_manifest(dir: &Path, sshd: &Sshd, name: &str, launch: &str, provision_s: u32) -> Arc<Manifest> {
    let ex = workspace_root().join("examples/plugins/slow_job");
    let sdk = workspace_root().join("sdk/python");
    let workdir = dir.join(format!("pod-{name}"));
    manifest_in(
        dir,
        name,
        &format!(
            r#"name = "slow_job"
category = "{name}"
version = "0.1.0"
execution_mode = "cloud_container"
ready_timeout_s = 30
provision_timeout_s = {provision_s}
stop_grace_s = 2
config_schema_file = "{schema}"
[launch]
{launch}
ssh_user = "{user}"
identity_file = "{identity}"
command = "python3"
args = ["-u", "slow_job.py"]
env = {{ PYTHONPATH = "{sdk}" }}
workdir = "{workdir}"
upload = ["{ex}/slow_job.py", "{ex}/schema.json"]
"#,
            schema = ex.join("schema.json").display(),
            user = whoami(),
            identity = sshd.identity.display(),
            sdk = sdk.display(),
            ex = ex.display(),
            workdir = workdir.display(),
        ),
    )
}

const RUNPOD_LAUNCH: &str = "provider = \"runpod\"\ngpu_type = \"NVIDIA RTX A4000\"\ngpu_count = 1\n\
                             image = \"runpod/base:0.6\"\ncloud_type = \"COMMUNITY\"\ndisk_gb = 20";
const VAST_LAUNCH: &str = "provider = \"vast_ai\"\ngpu_type = \"RTX 4090\"\ngpu_count = 1\nimage = \"pytorch/pytorch\"\n\
                           min_reliability = 0.95\ndisk_gb = 24";

#[test]
fn a_runpod_container_plugin_end_to_end() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(sshd) = Sshd::start(tmp.path()) else { return };
    let emu = RunPodEmulator::start("127.0.0.1", sshd.port);
    let client = Arc::new(emu.client());
    let rt = host_runtime();
    let data = tmp.path().join("data");
    let sup = rt.block_on(async { supervisor_with(&data, client.clone()) });
    let ledger_id = sup.with_ledger(|l| l.ledger_id().to_owned());
    let m = pod_manifest(tmp.path(), &sshd, "rp", RUNPOD_LAUNCH, 60);
    rt.block_on(async {
        let st = sup.start(Arc::clone(&m)).await.unwrap();
        assert_eq!(st.state, RunState::Running);
        let Some(ResourceHandle::Instance { provider, id, .. }) = st.resource.clone() else {
            panic!("not an instance: {:?}", st.resource)
        };
        assert_eq!(provider, "runpod");
        assert_eq!(emu.live(), vec![id.clone()], "exactly one pod");
        // The create request: the marker as the pod's name, the GPU, SSH published.
        let marker = format!("{ledger_id}:{}", st.resource_id.unwrap());
        let req = emu.with(|s| s.pods[&id].request.clone());
        assert_eq!(req["name"], plugboard_host::cloud::marker_name(&marker));
        assert_eq!(req["gpuTypeIds"], json!(["NVIDIA RTX A4000"]));
        assert_eq!(req["gpuCount"], 1);
        assert_eq!(req["cloudType"], "COMMUNITY");
        assert_eq!(req["containerDiskInGb"], 20);
        assert_eq!(req["imageName"], "runpod/base:0.6");
        assert_eq!(req["ports"], json!(["22/tcp"]));
        assert!(!marked_alive(&ledger_id).is_empty(), "the worker carries the marker");
        // The price: costPerHr (a string) of the created pod.
        let row = sup.with_ledger(|l| l.get(st.resource_id.unwrap()).unwrap().unwrap());
        assert_eq!(row.cost_per_hour, Some(0.17));
        assert_eq!(row.price_source, Some(PriceSource::Provider));
        assert!(row.billing_started_at.is_some());
        let rr = sup.metadata(&m).remote_resource.expect("remote_resource");
        assert_eq!(rr.provider, plugboard_core::CloudProvider::Runpod);
        assert_eq!(rr.ssh_host.as_deref(), Some("127.0.0.1"));
        assert_eq!(rr.ssh_port, sshd.port, "the mapped port, not launch.ssh_port");
        assert_eq!(rr.gpu_type.as_deref(), Some("NVIDIA RTX A4000"));
        let h = sup.handle("rp_slow_job").unwrap();
        assert_eq!(
            h.execute(json!({"steps": 2, "step_ms": 1})).await.unwrap(),
            json!({"steps_done": 2})
        );
        sup.stop("rp_slow_job").await.unwrap();
        assert!(emu.live().is_empty(), "{:?}", emu.log());
        assert!(emu.log().contains(&format!("DELETE /pods/{id} 204")), "{:?}", emu.log());
        // 404 after the delete: gone.
        assert_eq!(client.get("any", &id).await.unwrap(), None);
        assert!(marked_alive(&ledger_id).is_empty(), "marked processes left");
        let row = sup.with_ledger(|l| l.get(st.resource_id.unwrap()).unwrap().unwrap());
        assert_eq!(row.status, ResourceStatus::Stopped);
        assert!(row.ended_at.is_some());
        sup.shutdown().await.unwrap();
    });
}

#[test]
fn a_vast_container_plugin_end_to_end() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(sshd) = Sshd::start(tmp.path()) else { return };
    let emu = VastEmulator::start("127.0.0.1", sshd.port);
    let client = Arc::new(emu.client());
    let rt = host_runtime();
    let data = tmp.path().join("data");
    let sup = rt.block_on(async { supervisor_with(&data, client.clone()) });
    let ledger_id = sup.with_ledger(|l| l.ledger_id().to_owned());
    let m = pod_manifest(tmp.path(), &sshd, "va", VAST_LAUNCH, 60);
    rt.block_on(async {
        let st = sup.start(Arc::clone(&m)).await.unwrap();
        assert_eq!(st.state, RunState::Running);
        let Some(ResourceHandle::Instance { provider, id, .. }) = st.resource.clone() else {
            panic!("not an instance: {:?}", st.resource)
        };
        assert_eq!(provider, "vast_ai");
        let nid: u64 = id.parse().unwrap();
        assert_eq!(emu.live(), vec![nid]);
        // The cheapest 4090 on a host at least 0.95 reliable: offer 103.
        assert!(
            emu.log().contains(&format!("PUT /asks/103/ 200 {id}")),
            "{:?}",
            emu.log()
        );
        let (label, image, disk, created_ms, running_ms) = emu.with(|s| {
            let i = &s.instances[&nid];
            (
                i.label.clone(),
                i.request["image"].clone(),
                i.request["disk"].clone(),
                i.created_ms,
                i.running_ms,
            )
        });
        let marker = format!("{ledger_id}:{}", st.resource_id.unwrap());
        assert_eq!(label, plugboard_host::cloud::marker_name(&marker));
        assert_eq!((image, disk), (json!("pytorch/pytorch"), json!(24)));
        assert!(!marked_alive(&ledger_id).is_empty(), "the worker carries the marker");
        // The price is the offer's dph_total; billing began at the create,
        // before the instance ran (storage bills from creation).
        let row = sup.with_ledger(|l| l.get(st.resource_id.unwrap()).unwrap().unwrap());
        assert_eq!(row.cost_per_hour, Some(0.38));
        assert_eq!(row.price_source, Some(PriceSource::Provider));
        let billed = row.billing_started_at.expect("billing started");
        let running_ms = running_ms.expect("it ran");
        assert!(
            billed < running_ms - 300 && billed >= created_ms - 1000,
            "billing from {billed}, created {created_ms}, running {running_ms}"
        );
        let rr = sup.metadata(&m).remote_resource.expect("remote_resource");
        assert_eq!(rr.provider, plugboard_core::CloudProvider::VastAi);
        assert_eq!(rr.ssh_port, sshd.port, "ports[22/tcp].HostPort, not the proxy");
        assert_eq!(rr.estimated_cost_per_hour, Some(0.38));
        let h = sup.handle("va_slow_job").unwrap();
        assert_eq!(
            h.execute(json!({"steps": 3, "step_ms": 1})).await.unwrap(),
            json!({"steps_done": 3})
        );
        sup.stop("va_slow_job").await.unwrap();
        assert!(emu.live().is_empty(), "{:?}", emu.log());
        assert_eq!(emu.with(|s| s.destroyed.clone()), vec![nid]);
        assert_eq!(client.get("any", &id).await.unwrap(), None, "destroyed is gone");
        assert!(marked_alive(&ledger_id).is_empty(), "marked processes left");
        let row = sup.with_ledger(|l| l.get(st.resource_id.unwrap()).unwrap().unwrap());
        assert_eq!(row.status, ResourceStatus::Stopped);
        sup.shutdown().await.unwrap();
    });
}

fn pod_request() -> InstanceRequest {
    InstanceRequest {
        instance_type: "NVIDIA RTX A4000".into(),
        image: Some("runpod/base:0.6".into()),
        gpu_type: Some("NVIDIA RTX A4000".into()),
        gpu_count: 2,
        ..Default::default()
    }
}

#[test]
fn runpod_cost_per_hr_is_read_as_a_string_and_as_a_number() {
    let emu = RunPodEmulator::start("127.0.0.1", 2222);
    let client = emu.client();
    let rt = host_runtime();
    rt.block_on(async {
        let p = client
            .create("any", &pod_request(), "0123456789abcdef0123456789abcdef:1")
            .await
            .unwrap();
        assert_eq!(p.usd_per_hour, Some(0.34), "\"0.34\" as a string");
        emu.with(|s| s.behaviour.cost_as_number = true);
        let got = client.get("any", &p.id).await.unwrap().unwrap();
        assert_eq!(got.usd_per_hour, Some(0.34), "0.34 as a number");
    });
}

#[test]
fn runpod_an_empty_public_ip_and_port_mappings_are_not_running_yet() {
    let emu = RunPodEmulator::start("127.0.0.1", 2222);
    emu.with(|s| s.behaviour.unreachable_reads = 2);
    let client = emu.client();
    let rt = host_runtime();
    rt.block_on(async {
        let p = client
            .create("any", &pod_request(), "0123456789abcdef0123456789abcdef:2")
            .await
            .unwrap();
        // desiredStatus RUNNING from the start, but no address yet.
        assert_eq!(p.raw_state, "RUNNING");
        assert_eq!(
            (p.state, p.public_ip.clone(), p.ssh_port),
            (InstanceState::Provisioning, None, None)
        );
        for _ in 0..2 {
            let g = client.get("any", &p.id).await.unwrap().unwrap();
            assert_eq!(
                (g.state, g.public_ip, g.ssh_port),
                (InstanceState::Provisioning, None, None)
            );
        }
        let g = client.get("any", &p.id).await.unwrap().unwrap();
        assert_eq!(g.state, InstanceState::Running);
        assert_eq!((g.public_ip.as_deref(), g.ssh_port), (Some("127.0.0.1"), Some(2222)));
        // The delete answers an empty body; a second one a 404: both done.
        client.terminate("any", &p.id).await.unwrap();
        client.terminate("any", &p.id).await.unwrap();
        assert_eq!(
            client.get("any", &p.id).await.unwrap(),
            None,
            "404 after delete is gone"
        );
        // Found by name while it existed, not after.
        assert!(
            client
                .find("any", "0123456789abcdef0123456789abcdef:2")
                .await
                .unwrap()
                .is_empty()
        );
    });
    assert!(emu.log().iter().any(|l| l.starts_with("DELETE") && l.ends_with("204")));
}

#[test]
fn vast_quotes_the_cheapest_matching_offer_and_rents_it() {
    let emu = VastEmulator::start("127.0.0.1", 2222);
    let client = emu.client();
    let req = InstanceRequest {
        instance_type: "RTX 4090".into(),
        image: Some("pytorch/pytorch".into()),
        gpu_type: Some("RTX 4090".into()),
        gpu_count: 1,
        min_reliability: Some(0.95),
        ..Default::default()
    };
    let rt = host_runtime();
    rt.block_on(async {
        let q = client.quote("any", &req).await.unwrap().unwrap();
        assert_eq!((q.usd_per_hour, q.available), (0.38, true));
        // A cap under the cheapest: refused before anything is rented.
        let e = provision::acquire(
            &client,
            &["any".to_string()],
            &req,
            "0123456789abcdef0123456789abcdef:4",
            Some(0.30),
            &quick(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, AcquireError::TooExpensive { price, .. } if price == 0.38),
            "{e}"
        );
        assert!(emu.live().is_empty());
        let got = provision::acquire(
            &client,
            &["any".to_string()],
            &req,
            "0123456789abcdef0123456789abcdef:4",
            Some(0.40),
            &quick(),
        )
        .await
        .unwrap();
        assert_eq!(got.quoted_usd_per_hour, Some(0.38));
        assert_eq!(got.instance.raw["offer_id"], 103);
        assert_eq!(got.instance.raw["dph_total"], 0.38);
        assert_eq!(got.instance.usd_per_hour, Some(0.38));
        // The search asked for the filters.
        let s = emu.with(|s| s.searches[0].clone());
        assert_eq!(s["gpu_name"]["eq"], "RTX 4090");
        assert_eq!(s["reliability"]["gte"], 0.95);
        assert_eq!(s["num_gpus"]["eq"], 1);
        // actual_status null at first: provisioning, no address; then the
        // object (not a list) of /instances/{id}/ reads as running.
        let first = client.get("any", &got.instance.id).await.unwrap().unwrap();
        assert_eq!(
            (first.state, first.raw_state.as_str()),
            (InstanceState::Provisioning, "null")
        );
        assert_eq!(first.public_ip, None);
        let running = provision::wait_running(&client, "any", &got.instance.id, Duration::from_secs(20), &quick())
            .await
            .unwrap();
        assert_eq!(
            (running.public_ip.as_deref(), running.ssh_port),
            (Some("127.0.0.1"), Some(2222))
        );
        assert!(client.bills_from_create());
        // A retry with the same marker adopts it (found by its label).
        let again = provision::acquire(
            &client,
            &["any".to_string()],
            &req,
            "0123456789abcdef0123456789abcdef:4",
            None,
            &quick(),
        )
        .await
        .unwrap();
        assert!(again.adopted);
        assert_eq!(again.instance.id, got.instance.id);
        assert!(
            provision::terminate_confirmed(&client, "any", &got.instance.id, Duration::from_secs(10), &quick())
                .await
                .unwrap()
        );
    });
    assert!(emu.live().is_empty());
    assert_eq!(
        emu.log().iter().filter(|l| l.starts_with("PUT /asks/")).count(),
        1,
        "{:?}",
        emu.log()
    );
}

#[test]
fn a_pod_that_never_gets_an_address_fails_the_start_and_is_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(sshd) = Sshd::start(tmp.path()) else { return };
    let emu = RunPodEmulator::start("127.0.0.1", sshd.port);
    emu.with(|s| s.behaviour.never_reachable = true);
    let rt = host_runtime();
    let data = tmp.path().join("data");
    let sup = rt.block_on(async { supervisor_with(&data, Arc::new(emu.client())) });
    let m = pod_manifest(tmp.path(), &sshd, "noip", RUNPOD_LAUNCH, 3);
    rt.block_on(async {
        let e = sup.start(m).await.unwrap_err().to_string();
        assert!(
            (e.contains("still provisioning") || e.contains("provision")) && e.contains("runpod"),
            "{e}"
        );
        sup.shutdown().await.ok();
    });
    assert_eq!(emu.with(|s| s.next_id), 1, "one pod was created");
    assert!(emu.live().is_empty(), "the pod was left: {:?}", emu.log());
    assert_eq!(emu.with(|s| s.deleted.len()), 1);
    let ledger = Ledger::open(&DataDir::new(&data).ledger_path()).unwrap();
    assert!(ledger.live().unwrap().is_empty(), "the row is ended");
}

/// The host that gets SIGKILLed while its create answer is held back.
#[test]
fn pods_host_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let parts: Vec<&str> = spec.split('|').collect();
    let (provider, data, dir, sshd_dir, port) = (parts[0], parts[1], parts[2], parts[3], parts[4]);
    let sshd = Sshd::attach(Path::new(sshd_dir), port.parse().unwrap());
    let rt = host_runtime();
    rt.block_on(async {
        // The built-in backends (cloud_container included), reaching the
        // emulator through the environment.
        let sup = supervisor(Path::new(data));
        let launch = if provider == "runpod" {
            RUNPOD_LAUNCH
        } else {
            VAST_LAUNCH
        };
        let m = pod_manifest(Path::new(dir), &sshd, "child", launch, 120);
        println!("launching");
        sup.start(m).await.unwrap();
        println!("started");
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

fn spawn_child(tmp: &Path, sshd: &Sshd, provider: &str, env: [(&str, &str); 2]) -> std::process::Child {
    let spec = format!(
        "{provider}|{}|{}|{}|{}",
        tmp.join("data").display(),
        tmp.display(),
        sshd.dir.display(),
        sshd.port
    );
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "pods_host_child", "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_ENV, spec)
        .envs(env)
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 256];
        while let Ok(n) = out.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if String::from_utf8_lossy(&buf).contains("launching") {
                let _ = tx.send(());
            }
        }
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(90)).is_ok(),
        "the host child never printed launching"
    );
    child
}

fn gc_all(data: &Path, b: &Backends) -> (Ledger, String) {
    let mut ledger = Ledger::open(&DataDir::new(data).ledger_path()).unwrap();
    let row = ledger.live().unwrap().remove(0);
    assert!(row.handle.is_none(), "the host wrote the handle: {row:?}");
    let rt = host_runtime();
    let report = rt
        .block_on(plugboard_host::gc(
            &mut ledger,
            GcOptions {
                all: false,
                dry_run: false,
                grace: Duration::from_secs(1),
                ..Default::default()
            },
            None,
            b,
        ))
        .unwrap();
    (ledger, format!("{report:?}"))
}

#[test]
fn a_pod_created_before_its_host_was_killed_is_found_by_name_and_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(sshd) = Sshd::start(tmp.path()) else { return };
    let emu = RunPodEmulator::start("127.0.0.1", sshd.port);
    // The pod exists at once, the create answer comes 30 s later: the
    // host is killed in between, before it could write the pod down.
    emu.with(|s| s.behaviour.create_answer_delay = Duration::from_secs(30));
    let mut host = spawn_child(
        tmp.path(),
        &sshd,
        "runpod",
        [("RUNPOD_API_KEY", &emu.key), ("PLUGBOARD_RUNPOD_API_URL", &emu.url)],
    );
    assert!(wait_until_blocking(Duration::from_secs(30), || emu.live().len() == 1));
    host.kill().unwrap();
    host.wait().unwrap();
    let id = emu.live().remove(0);
    let (ledger, report) = gc_all(&tmp.path().join("data"), &backends(Arc::new(emu.client())));
    assert!(emu.live().is_empty(), "{report}\n{:?}", emu.log());
    assert_eq!(emu.with(|s| s.deleted.clone()), vec![id]);
    assert!(ledger.live().unwrap().is_empty(), "{report}");
}

#[test]
fn a_vast_instance_created_before_its_host_was_killed_is_found_by_label_and_destroyed() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(sshd) = Sshd::start(tmp.path()) else { return };
    let emu = VastEmulator::start("127.0.0.1", sshd.port);
    emu.with(|s| s.behaviour.create_answer_delay = Duration::from_secs(30));
    let mut host = spawn_child(
        tmp.path(),
        &sshd,
        "vast_ai",
        [("VAST_API_KEY", &emu.key), ("PLUGBOARD_VAST_API_URL", &emu.url)],
    );
    assert!(wait_until_blocking(Duration::from_secs(30), || emu.live().len() == 1));
    host.kill().unwrap();
    host.wait().unwrap();
    let id = emu.live().remove(0);
    let (ledger, report) = gc_all(&tmp.path().join("data"), &backends(Arc::new(emu.client())));
    assert!(emu.live().is_empty(), "{report}\n{:?}", emu.log());
    assert_eq!(emu.with(|s| s.destroyed.clone()), vec![id]);
    assert!(ledger.live().unwrap().is_empty(), "{report}");
}
