//! The cloud backend's provision-to-callable overhead above the provider's
//! own create→running, same run: against the Lambda Cloud emulator of the
//! tests (instances "boot" at once: their first read says active, their
//! address is this machine, where a real sshd listens).
//!
//! Three figures, each a median over rounds:
//! * reference: create→running as the provider client sees it (launch,
//!   reads until active, terminate not included);
//! * reference: the same worker started over SSH as a remote_ssh plugin
//!   (what any instance needs once it runs);
//! * a cloud_gpu plugin's start-to-ready (intent row, find by marker,
//!   quote, launch, wait, SSH connect with a new host key, lease start,
//!   worker start, readiness) and its overhead above the first reference.
//!
//! `taskset -c 0 cargo bench -p plugboard-host --bench cloud`

#[path = "../tests/common/lambda_emulator.rs"]
mod lambda_emulator;
#[path = "../tests/common/sshd.rs"]
mod sshd;

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{pct, report};

use plugboard_core::ExecutionMode;
use plugboard_host::backend::cloud::{CloudBackend, Providers};
use plugboard_host::cloud::retry::RetryPolicy;
use plugboard_host::cloud::{InstanceRequest, Provider, provision};
use plugboard_host::{Backends, DataDir, Manifest, Supervisor, SupervisorConfig};

const ROUNDS: usize = 7;

fn manifest(dir: &Path, name: &str, launch: &str) -> Arc<Manifest> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap_or(root);
    let ex = root.join("examples/plugins/slow_job");
    let sdk = root.join("sdk/python");
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    let p = d.join("plugin.toml");
    std::fs::write(
        &p,
        format!(
            "name = \"slow_job\"\ncategory = \"{name}\"\nversion = \"0.1.0\"\nstop_grace_s = 1\nconfig_schema_file = \"{schema}\"\n{launch}\
             command = \"/usr/bin/python3\"\nargs = [\"-u\", \"{ex}/slow_job.py\"]\nenv = {{ PYTHONPATH = \"{sdk}\" }}\n",
            schema = ex.join("schema.json").display(),
            ex = ex.display(),
            sdk = sdk.display(),
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Arc::new(Manifest::load(&p).unwrap_or_else(|e| panic!("{e}")))
}

fn user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".into())
}

fn main() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let Some(sshd) = sshd::Sshd::start(tmp.path()) else {
        println!("cloud bench needs /usr/sbin/sshd; skipped");
        return;
    };
    let emu = lambda_emulator::LambdaEmulator::start(&tmp.path().join("emulator"), "127.0.0.1");
    emu.with(|s| {
        s.behaviour.boot_polls = 0;
        s.behaviour.terminate_polls = 0;
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let providers = Arc::new(Providers::new(Arc::new(|_: &str| None)));
    providers.insert(Arc::new(emu.client()));
    let mut backends = Backends::builtin(None);
    backends.register(Arc::new(CloudBackend::new(providers)), &[ExecutionMode::CloudGpu]);
    let mut cfg = SupervisorConfig::new(DataDir::new(tmp.path().join("data")));
    cfg.backends = Some(backends);
    let sup = rt
        .block_on(async { Supervisor::new(cfg) })
        .unwrap_or_else(|e| panic!("{e}"));

    // Reference: the provider's own create→running, through its client.
    let client = emu.client();
    let policy = RetryPolicy::default();
    let req = InstanceRequest {
        instance_type: "gpu_1x_a10".into(),
        image: None,
        ssh_key_name: Some("test-key".into()),
        user_data: None,
        tags: vec![],
        ..Default::default()
    };
    let regions = vec!["us-west-1".to_string()];
    let mut create_running = Vec::new();
    for round in 0..ROUNDS * 3 {
        let marker = format!("0123456789abcdef0123456789abcdef:{}", 1000 + round);
        let t = Instant::now();
        let got = rt
            .block_on(provision::acquire(&client, &regions, &req, &marker, None, &policy))
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(provision::wait_running(
            &client,
            &got.instance.region,
            &got.instance.id,
            Duration::from_secs(30),
            &policy,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        create_running.push(t.elapsed());
        rt.block_on(client.terminate(&got.instance.region, &got.instance.id))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    let remote = manifest(
        tmp.path(),
        "remote",
        &format!("execution_mode = \"remote_ssh\"\n[launch]\n{}", sshd.launch_keys()),
    );
    let cloud = manifest(
        tmp.path(),
        "cloud",
        &format!(
            "execution_mode = \"cloud_gpu\"\n[launch]\nprovider = \"lambda_labs\"\nregions = [\"us-west-1\"]\n\
             instance_type = \"gpu_1x_a10\"\nssh_key_name = \"test-key\"\nssh_user = \"{}\"\nssh_port = {}\nidentity_file = \"{}\"\n",
            user(),
            sshd.port,
            sshd.identity.display()
        ),
    );
    let (mut remote_start, _) = support::start_call_stop(&rt, &sup, remote, ROUNDS, 0);
    let (mut cloud_start, mut cloud_call) = support::start_call_stop(&rt, &sup, cloud, ROUNDS, 200);

    let reference = pct(&mut create_running, 0.5);
    report(
        "reference: provider create→running (emulator)",
        &mut create_running,
        None,
    );
    report(
        "reference: the same worker over SSH (remote_ssh)",
        &mut remote_start,
        None,
    );
    report(
        "cloud_gpu start-to-ready (provision → SSH → ready)",
        &mut cloud_start,
        Some(("create→running", reference)),
    );
    let cloud_p50 = pct(&mut cloud_start, 0.5);
    let remote_p50 = pct(&mut remote_start, 0.5);
    let overhead = cloud_p50.saturating_sub(reference);
    println!(
        "  overhead above create→running: {:.1} ms ({:.2}x the remote_ssh start of the same worker)",
        overhead.as_secs_f64() * 1e3,
        overhead.as_secs_f64() / remote_p50.as_secs_f64()
    );
    report("call round trip, worker on the instance", &mut cloud_call, None);
    rt.block_on(sup.shutdown()).unwrap_or_else(|e| panic!("{e}"));
    drop(emu);
    drop(sshd);
}
