//! cloud_gpu on Lambda Cloud, against an emulator of Lambda's documented
//! API (the real service cannot run here; see `common/lambda_emulator.rs`
//! for the quirks it keeps). The emulated instances' address is this
//! machine, where a real sshd listens: provision → SSH launch → call →
//! terminate runs for real, and "nothing left" is read from the machine's
//! processes and from the emulator's instance list.

mod common;
#[path = "common/lambda_emulator.rs"]
mod lambda_emulator;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::sshd::Sshd;
use common::*;
use lambda_emulator::LambdaEmulator;
use plugboard_core::ExecutionMode;
use plugboard_host::backend::cloud::{CloudBackend, Providers};
use plugboard_host::cloud::retry::RetryPolicy;
use plugboard_host::cloud::{InstanceRequest, provision};
use plugboard_host::ledger::PriceSource;
use plugboard_host::{
    Backends, DataDir, GcOptions, Ledger, Manifest, ResourceHandle, ResourceStatus, RunState, Supervisor,
    SupervisorConfig,
};
use serde_json::json;

const CHILD_ENV: &str = "PLUGBOARD_TEST_CLOUD_HOST_CHILD";

fn quick() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(50),
        max_delay: Duration::from_millis(400),
        max_attempts: 4,
        max_retry_after: Duration::from_secs(10),
    }
}

/// The built-in backends with the cloud one talking to `emu`.
fn backends(emu: &LambdaEmulator) -> Backends {
    let providers = Arc::new(Providers::new(Arc::new(|_: &str| None)));
    providers.insert(Arc::new(emu.client()));
    let mut b = Backends::builtin(None);
    b.register(
        Arc::new(CloudBackend::new(providers).with_retry_policy(quick())),
        &[ExecutionMode::CloudVm, ExecutionMode::CloudGpu, ExecutionMode::CloudCpu],
    );
    b
}

fn supervisor_for(data: &Path, emu: &LambdaEmulator) -> Supervisor {
    let mut cfg = SupervisorConfig::new(DataDir::new(data));
    cfg.backends = Some(backends(emu));
    Supervisor::new(cfg).unwrap()
}

/// The Python slow_job worker on a Lambda GPU instance.
fn gpu_manifest(dir: &Path, sshd: &Sshd, name: &str, launch_extra: &str) -> Arc<Manifest> {
    let ex = workspace_root().join("examples/plugins/slow_job");
    let sdk = workspace_root().join("sdk/python");
    let workdir = dir.join(format!("instance-{name}"));
    manifest_in(
        dir,
        name,
        &format!(
            r#"name = "slow_job"
category = "{name}"
version = "0.1.0"
execution_mode = "cloud_gpu"
ready_timeout_s = 30
provision_timeout_s = 60
stop_grace_s = 2
config_schema_file = "{schema}"
[launch]
provider = "lambda_labs"
regions = ["us-west-1", "us-east-1"]
instance_type = "gpu_1x_a10"
ssh_key_name = "test-key"
ssh_user = "{user}"
ssh_port = {port}
identity_file = "{identity}"
command = "python3"
args = ["-u", "slow_job.py"]
env = {{ PYTHONPATH = "{sdk}" }}
workdir = "{workdir}"
upload = ["{ex}/slow_job.py", "{ex}/schema.json"]
{launch_extra}
"#,
            schema = ex.join("schema.json").display(),
            user = whoami(),
            port = sshd.port,
            identity = sshd.identity.display(),
            sdk = sdk.display(),
            ex = ex.display(),
            workdir = workdir.display(),
        ),
    )
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

/// Every file under `dir`, as text (lossy).
fn all_text(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p.display().to_string(), String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    out
}

#[test]
fn a_lambda_gpu_plugin_end_to_end() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(sshd) = Sshd::start(tmp.path()) else { return };
    let emu = LambdaEmulator::start(&tmp.path().join("emulator"), "127.0.0.1");
    // No capacity in the first region (though listed with some): the
    // launch there is refused and it lands in the second.
    emu.with(|s| {
        s.behaviour.no_capacity.insert("us-west-1".into());
        s.behaviour.listed_anyway = true;
    });
    let rt = host_runtime();
    let data = tmp.path().join("data");
    let sup = rt.block_on(async { supervisor_for(&data, &emu) });
    let ledger_id = sup.with_ledger(|l| l.ledger_id().to_owned());
    let m = gpu_manifest(tmp.path(), &sshd, "gpu", "lease_s = 8");
    rt.block_on(async {
        let st = sup.start(Arc::clone(&m)).await.unwrap();
        assert_eq!(st.state, RunState::Running);
        assert_eq!(st.backend.as_deref(), Some("cloud"));
        let Some(ResourceHandle::Instance { provider, region, id }) = st.resource.clone() else {
            panic!("not an instance: {:?}", st.resource)
        };
        assert_eq!(provider, "lambda_labs");
        assert_eq!(region, "us-east-1");
        assert_eq!(emu.live().len(), 1, "exactly one instance");
        assert_eq!(emu.status(&id).as_deref(), Some("active"));
        // The worker runs "on the instance" (under sshd), carrying the marker.
        let marker = format!("{ledger_id}:{}", st.resource_id.unwrap());
        assert_eq!(
            plugboard_host::cloud::marker_from_name(&emu.with(|s| s.instances[&id].name.clone())).as_deref(),
            Some(marker.as_str())
        );
        assert!(!marked_alive(&ledger_id).is_empty(), "the worker carries the marker");
        // The ledger: the instance, the provider's price.
        let row = sup.with_ledger(|l| l.get(st.resource_id.unwrap()).unwrap().unwrap());
        assert_eq!(row.cost_per_hour, Some(0.75));
        assert_eq!(row.price_source, Some(PriceSource::Provider));
        assert!(row.billing_started_at.is_some(), "billing while running");
        // The seed's RemoteResource.
        let meta = sup.metadata(&m);
        let rr = meta.remote_resource.expect("remote_resource");
        assert_eq!(rr.provider, plugboard_core::CloudProvider::LambdaLabs);
        assert_eq!(rr.instance_id.as_deref(), Some(id.as_str()));
        assert_eq!(rr.region.as_deref(), Some("us-east-1"));
        assert_eq!(rr.status, "running");
        assert_eq!(rr.gpu_count, 1);
        assert_eq!(rr.gpu_type.as_deref(), Some("A10 (24 GB PCIe)"));
        assert_eq!(rr.ssh_host.as_deref(), Some("127.0.0.1"));
        assert_eq!(rr.ssh_port, sshd.port);
        assert_eq!(rr.estimated_cost_per_hour, Some(0.75));
        assert_eq!(rr.resource_type.as_deref(), Some("gpu_1x_a10"));
        // A call, through the same handle as every mode.
        let h = sup.handle("gpu_slow_job").unwrap();
        assert_eq!(
            h.execute(json!({"steps": 2, "step_ms": 1})).await.unwrap(),
            json!({"steps_done": 2})
        );
        // The lease is renewed while the host lives.
        // (Checked by order, not by a time window: its modification time
        // must move on after the start, renewed every lease_s / 4 = 2 s.)
        let lease = plugboard_host::cloud::lease::lease_file(&marker);
        let mtime = || {
            std::fs::metadata(&lease)
                .and_then(|md| md.modified())
                .expect("the lease file exists on the instance")
        };
        let first = mtime();
        assert!(
            wait_until(Duration::from_secs(12), || mtime() > first).await,
            "the lease was not renewed within 12 s of a 2 s renewal interval"
        );
        assert!(!emu.powered_off(&id));

        sup.stop("gpu_slow_job").await.unwrap();
        assert_eq!(emu.status(&id).as_deref(), Some("terminated"), "{:?}", emu.log());
        assert!(marked_alive(&ledger_id).is_empty(), "marked processes left");
        let row = sup.with_ledger(|l| l.get(st.resource_id.unwrap()).unwrap().unwrap());
        assert_eq!(row.status, ResourceStatus::Stopped);
        assert!(row.ended_at.is_some());
    });
    let log = emu.log();
    assert!(log.iter().any(|l| l.contains("400 capacity us-west-1")), "{log:?}");
    // The key never reaches the ledger, the logs, or any file of the data dir.
    for (path, text) in all_text(&data) {
        assert!(!text.contains(&emu.key), "the API key is in {path}");
    }
    rt.block_on(async { sup.shutdown().await.unwrap() });
}

#[test]
fn a_worker_that_dies_on_its_instance_ends_the_row_only_once_the_instance_is_terminated() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(sshd) = Sshd::start(tmp.path()) else { return };
    let emu = LambdaEmulator::start(&tmp.path().join("emulator"), "127.0.0.1");
    let rt = host_runtime();
    let data = tmp.path().join("data");
    let sup = rt.block_on(async { supervisor_for(&data, &emu) });
    let ledger_id = sup.with_ledger(|l| l.ledger_id().to_owned());
    let (id, rid) = rt.block_on(async {
        let st = sup
            .start(gpu_manifest(tmp.path(), &sshd, "die", "lease_s = 30"))
            .await
            .unwrap();
        let Some(ResourceHandle::Instance { id, .. }) = st.resource.clone() else {
            panic!("not an instance: {:?}", st.resource)
        };
        let rid = st.resource_id.unwrap();
        // The provider fails every terminate for now.
        emu.with(|s| s.behaviour.fail_terminates = 1_000);
        // The worker dies on the instance; the instance itself goes on.
        let pids = marked_alive(&ledger_id);
        assert!(!pids.is_empty());
        for p in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p as i32), nix::sys::signal::Signal::SIGKILL);
        }
        assert!(
            wait_until(Duration::from_secs(15), || sup
                .status("die_slow_job")
                .is_some_and(|s| matches!(s.state, RunState::Crashed | RunState::Exited)))
            .await,
            "{:?}",
            sup.status("die_slow_job")
        );
        // Not confirmed gone: the row stays live (and billing), saying why.
        let note_says = || {
            sup.with_ledger(|l| l.get(rid).unwrap().unwrap())
                .note
                .is_some_and(|n| n.contains("not confirmed gone"))
        };
        assert!(
            wait_until(Duration::from_secs(15), note_says).await,
            "{:?}",
            sup.with_ledger(|l| l.get(rid).unwrap())
        );
        let row = sup.with_ledger(|l| l.get(rid).unwrap().unwrap());
        assert!(row.ended_at.is_none(), "ended before the provider confirmed: {row:?}");
        assert!(
            matches!(row.status, ResourceStatus::Crashed | ResourceStatus::Exited),
            "{row:?}"
        );
        assert_eq!(emu.live().len(), 1, "{:?}", emu.log());
        emu.with(|s| s.behaviour.fail_terminates = 0);
        sup.shutdown().await.ok();
        (id, rid)
    });
    // The provider recovers: gc terminates it, and only then is the row ended.
    let mut ledger = Ledger::open(&DataDir::new(&data).ledger_path()).unwrap();
    let report = rt
        .block_on(plugboard_host::gc(
            &mut ledger,
            GcOptions {
                all: true,
                grace: Duration::from_secs(1),
                ..Default::default()
            },
            None,
            &backends(&emu),
        ))
        .unwrap();
    assert!(report.reaped.iter().any(|r| r.confirmed), "{report:?}");
    assert_eq!(emu.status(&id).as_deref(), Some("terminated"), "{:?}", emu.log());
    assert!(ledger.get(rid).unwrap().unwrap().ended_at.is_some());
}

#[test]
fn refusals_come_before_any_create() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(sshd) = Sshd::start(tmp.path()) else { return };
    let emu = LambdaEmulator::start(&tmp.path().join("emulator"), "127.0.0.1");
    let rt = host_runtime();
    let sup = rt.block_on(async { supervisor_for(&tmp.path().join("data"), &emu) });
    rt.block_on(async {
        // The provider asks 0.75 USD/h; the manifest caps at 0.50.
        let e = sup
            .start(gpu_manifest(tmp.path(), &sshd, "capped", "max_price_per_hour = 0.5"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("above max_price_per_hour") && e.contains("0.75"), "{e}");
        // A type Lambda does not have: its own list in the message.
        let m = manifest_in(
            tmp.path(),
            "badtype",
            &format!(
                "name = \"b\"\ncategory = \"badtype\"\nexecution_mode = \"cloud_gpu\"\n[launch]\nprovider = \"lambda_labs\"\n\
                 region = \"us-west-1\"\ninstance_type = \"gpu_9x_z9\"\nidentity_file = \"{}\"\ncommand = \"w\"\n",
                sshd.identity.display()
            ),
        );
        let e = sup.start(m).await.unwrap_err().to_string();
        assert!(e.contains("gpu_9x_z9") && e.contains("gpu_1x_a10"), "{e}");
    });
    assert!(
        !emu.log()
            .iter()
            .any(|l| l.starts_with("POST /instance-operations/launch")),
        "{:?}",
        emu.log()
    );
    assert!(emu.live().is_empty());
    // No key at all: the start says which variable to set.
    let mut cfg = SupervisorConfig::new(DataDir::new(tmp.path().join("data2")));
    let mut b = Backends::builtin(None);
    b.register(
        Arc::new(CloudBackend::new(Arc::new(Providers::new(Arc::new(|_: &str| None))))),
        &[ExecutionMode::CloudGpu],
    );
    cfg.backends = Some(b);
    rt.block_on(async {
        let sup = Supervisor::new(cfg).unwrap();
        let e = sup
            .start(gpu_manifest(tmp.path(), &sshd, "nokey", ""))
            .await
            .unwrap_err()
            .to_string();
        // (PLUGBOARD_LAMBDA_API_URL/LAMBDA_API_KEY are not set in tests.)
        if std::env::var_os("LAMBDA_API_KEY").is_none() {
            assert!(e.contains("LAMBDA_API_KEY"), "{e}");
        }
    });
}

#[test]
fn rate_limits_are_waited_out_and_terminations_confirmed() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(sshd) = Sshd::start(tmp.path()) else { return };
    let emu = LambdaEmulator::start(&tmp.path().join("emulator"), "127.0.0.1");
    emu.with(|s| s.behaviour.launch_interval = Duration::from_secs(5));
    let rt = host_runtime();
    let data = tmp.path().join("data");
    let sup = rt.block_on(async { supervisor_for(&data, &emu) });
    rt.block_on(async {
        // Two launches at once: the second within 5 s of the first is
        // answered 429 + Retry-After, and waits.
        let (a, b) = tokio::join!(
            sup.start(gpu_manifest(tmp.path(), &sshd, "a", "")),
            sup.start(gpu_manifest(tmp.path(), &sshd, "b", ""))
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!((a.state, b.state), (RunState::Running, RunState::Running));
        assert!(emu.log().iter().any(|l| l.ends_with("launch 429")), "{:?}", emu.log());
        assert_eq!(emu.live().len(), 2);

        // Two 500s on terminate: retried, then confirmed.
        emu.with(|s| s.behaviour.fail_terminates = 2);
        sup.stop("b_slow_job").await.unwrap();
        let Some(ResourceHandle::Instance { id: b_id, .. }) = b.resource.clone() else {
            panic!()
        };
        assert_eq!(emu.status(&b_id).as_deref(), Some("terminated"));

        // Terminate keeps failing: the stop fails and the row stays live
        // (the instance counts as billing) until the provider confirms.
        emu.with(|s| s.behaviour.fail_terminates = 1000);
        let e = sup.stop("a_slow_job").await.unwrap_err().to_string();
        assert!(e.contains("not confirmed gone") || e.contains("500"), "{e}");
        let Some(ResourceHandle::Instance { id: a_id, .. }) = a.resource.clone() else {
            panic!()
        };
        assert_eq!(emu.status(&a_id).as_deref(), Some("active"));
        let row = sup.with_ledger(|l| l.get(a.resource_id.unwrap()).unwrap().unwrap());
        assert!(row.ended_at.is_none(), "ended before the provider confirmed: {row:?}");
        // The provider recovers: gc ends it for good.
        emu.with(|s| s.behaviour.fail_terminates = 0);
        sup.shutdown().await.ok();
    });
    let mut ledger = Ledger::open(&DataDir::new(&data).ledger_path()).unwrap();
    let report = rt
        .block_on(plugboard_host::gc(
            &mut ledger,
            GcOptions {
                all: true,
                dry_run: false,
                grace: Duration::from_secs(1),
                ..Default::default()
            },
            None,
            &backends(&emu),
        ))
        .unwrap();
    assert!(emu.live().is_empty(), "{report:?}\n{:?}", emu.log());
    assert!(ledger.live().unwrap().is_empty());
}

#[test]
fn a_retry_adopts_the_instance_its_marker_names() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = LambdaEmulator::start(&tmp.path().join("emulator"), "127.0.0.1");
    let client = emu.client();
    let req = InstanceRequest {
        instance_type: "gpu_1x_a10".into(),
        image: None,
        ssh_key_name: Some("test-key".into()),
        user_data: None,
        tags: vec![],
        ..Default::default()
    };
    let regions = vec!["us-west-1".to_string()];
    let rt = host_runtime();
    let (first, second) = rt.block_on(async {
        let a = provision::acquire(
            &client,
            &regions,
            &req,
            "0123456789abcdef0123456789abcdef:5",
            None,
            &quick(),
        )
        .await
        .unwrap();
        let b = provision::acquire(
            &client,
            &regions,
            &req,
            "0123456789abcdef0123456789abcdef:5",
            None,
            &quick(),
        )
        .await
        .unwrap();
        (a, b)
    });
    assert!(!first.adopted && second.adopted);
    assert_eq!(first.instance.id, second.instance.id);
    assert_eq!(emu.live().len(), 1, "one instance for one marker");
}

#[test]
fn a_create_whose_answer_was_lost_is_adopted_not_repeated() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = LambdaEmulator::start(&tmp.path().join("emulator"), "127.0.0.1");
    emu.with(|sh| sh.behaviour.lose_launch_answers = 1);
    let client = emu.client();
    let req = InstanceRequest {
        instance_type: "gpu_1x_a10".into(),
        ssh_key_name: Some("test-key".into()),
        ..Default::default()
    };
    let regions = vec!["us-west-1".to_string()];
    let got = host_runtime()
        .block_on(provision::acquire(
            &client,
            &regions,
            &req,
            "0123456789abcdef0123456789abcdef:6",
            None,
            &quick(),
        ))
        .unwrap();
    assert!(got.adopted, "the retry found the instance the failed create made");
    assert_eq!(emu.live().len(), 1, "one instance, not two: {:?}", emu.log());
    // The emulator logs the one launch as created, then its lost answer.
    let launches = emu
        .log()
        .iter()
        .filter(|l| l.starts_with("POST /instance-operations/launch 200"))
        .count();
    assert_eq!(launches, 1, "the create was not sent again: {:?}", emu.log());
    assert!(
        emu.log().last().is_some_and(|l| l == "GET /instances"),
        "the retry looked first: {:?}",
        emu.log()
    );
}

/// The host that gets SIGKILLed: starts a Lambda GPU plugin and prints
/// "started" (or, in "launching" mode, is killed while the launch answer
/// is held back).
#[test]
fn cloud_host_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let parts: Vec<&str> = spec.split('|').collect();
    let (data, dir, sshd_dir, port, lease) = (parts[0], parts[1], parts[2], parts[3], parts[4]);
    let sshd = Sshd::attach(Path::new(sshd_dir), port.parse().unwrap());
    let rt = host_runtime();
    rt.block_on(async {
        // The built-in backends, reaching the emulator through the
        // environment (LAMBDA_API_KEY, PLUGBOARD_LAMBDA_API_URL).
        let sup = supervisor(Path::new(data));
        let m = gpu_manifest(Path::new(dir), &sshd, "child", &format!("lease_s = {lease}"));
        println!("launching");
        sup.start(m).await.unwrap();
        println!("started");
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

fn spawn_child(tmp: &Path, sshd: &Sshd, emu: &LambdaEmulator, lease: u64, wait_for: &str) -> std::process::Child {
    let spec = format!(
        "{}|{}|{}|{}|{lease}",
        tmp.join("data").display(),
        tmp.display(),
        sshd.dir.display(),
        sshd.port
    );
    // The child host reaches the emulator through its own environment.
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "cloud_host_child", "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_ENV, spec)
        .env("LAMBDA_API_KEY", &emu.key)
        .env("PLUGBOARD_LAMBDA_API_URL", &emu.url)
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let want = wait_for.to_owned();
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
            if String::from_utf8_lossy(&buf).contains(&want) {
                let _ = tx.send(());
            }
        }
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(90)).is_ok(),
        "the host child never printed {wait_for}"
    );
    child
}

#[test]
fn an_instance_created_before_its_host_was_killed_is_found_and_terminated() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(sshd) = Sshd::start(tmp.path()) else { return };
    let emu = LambdaEmulator::start(&tmp.path().join("emulator"), "127.0.0.1");
    // The instance exists at once, the launch answer comes 30 s later: the
    // host is killed in between, before it could write the instance down.
    emu.with(|s| s.behaviour.launch_answer_delay = Duration::from_secs(30));
    let mut host = spawn_child(tmp.path(), &sshd, &emu, 600, "launching");
    assert!(wait_until_blocking(Duration::from_secs(30), || emu.live().len() == 1));
    host.kill().unwrap();
    host.wait().unwrap();
    let (id, _, _) = emu.live().remove(0);
    let data = DataDir::new(tmp.path().join("data"));
    let mut ledger = Ledger::open(&data.ledger_path()).unwrap();
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
            &backends(&emu),
        ))
        .unwrap();
    assert_eq!(
        emu.status(&id).as_deref(),
        Some("terminated"),
        "{report:?}\n{:?}",
        emu.log()
    );
    assert!(ledger.live().unwrap().is_empty(), "{report:?}");
}

#[test]
fn the_lease_powers_off_an_instance_whose_host_died() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(sshd) = Sshd::start(tmp.path()) else { return };
    let emu = LambdaEmulator::start(&tmp.path().join("emulator"), "127.0.0.1");
    let mut host = spawn_child(tmp.path(), &sshd, &emu, 3, "started");
    let (id, _, _) = emu.live().remove(0);
    // Renewed while the host lives (a 3 s lease, 4 s of watching).
    std::thread::sleep(Duration::from_secs(4));
    assert!(!emu.powered_off(&id), "powered off while its host renewed the lease");
    host.kill().unwrap();
    host.wait().unwrap();
    let killed = Instant::now();
    assert!(
        wait_until_blocking(Duration::from_secs(20), || emu.powered_off(&id)),
        "the instance did not power itself off"
    );
    let after = killed.elapsed();
    assert!(
        after >= Duration::from_secs(2),
        "powered off {after:?} after the host died"
    );
    // Lambda keeps billing a powered-off instance: gc terminates it.
    let mut ledger = Ledger::open(&DataDir::new(tmp.path().join("data")).ledger_path()).unwrap();
    let rt = host_runtime();
    rt.block_on(plugboard_host::gc(
        &mut ledger,
        GcOptions {
            all: false,
            dry_run: false,
            grace: Duration::from_secs(1),
            ..Default::default()
        },
        None,
        &backends(&emu),
    ))
    .unwrap();
    assert_eq!(emu.status(&id).as_deref(), Some("terminated"));
}

#[path = "../examples/cloud_gpu_plugin.rs"]
#[allow(dead_code)]
mod cloud_gpu_plugin;

#[test]
fn the_seeds_mock_cloud_plugin_for_real() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = LambdaEmulator::start(&tmp.path().join("emulator"), "127.0.0.1");
    // The example reads its key from the data dir's secret store (no
    // environment change in a test process).
    let data = tmp.path().join("data");
    let mut store = plugboard_host::secrets::SecretStore::open(DataDir::new(&data).secrets_path()).unwrap();
    store.set("LAMBDA_API_KEY", &emu.key).unwrap();
    let opts = cloud_gpu_plugin::Options::parse(
        [
            "--region",
            "us-east-1",
            "--ssh-key-name",
            "test-key",
            "--data-dir",
            data.to_str().unwrap(),
            "--endpoint",
            &emu.url,
        ]
        .map(String::from),
    )
    .unwrap();
    let mut out = Vec::new();
    cloud_gpu_plugin::run(&opts, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    let id = emu.with(|s| s.instances.keys().next().cloned()).expect("one instance");
    let want = format!(
        "Implements protocol: True\n\nInitial status: not_provisioned\nResource info: None\n\
         Provisioning cloud GPU instance...\nProvisioned: gpu_4x_a100\n\nAfter provisioning:\n  Status: running\n\
         \x20 Provider: lambda_labs\n  GPUs: 4x A100 (40 GB SXM4)\n  Cost: $4.4/hour\n\nCost estimates:\n  1 hour: $4.40\n\
         \x20 8 hours: $35.20\nTerminating instance: {id}\n\nTermination successful: True\nFinal status: terminated\n"
    );
    assert_eq!(out, want);
    assert!(emu.live().is_empty());
    let ledger = Ledger::open(&DataDir::new(&data).ledger_path()).unwrap();
    assert!(ledger.live().unwrap().is_empty(), "the example's row is ended");
    assert!(!out.contains(&emu.key));
}
