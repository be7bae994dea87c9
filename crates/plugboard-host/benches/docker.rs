//! docker mode figures beside their references, same run: container
//! start-to-ready and a call round trip through the container's endpoint,
//! next to the same Python worker as a subprocess and next to the engine's
//! own create + start + wait of the same image. Needs podman (as root); it
//! starts its own service on a private socket and stops it at the end.
//!
//! `taskset -c 0 cargo bench -p plugboard-host --bench docker`

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{pct, report};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateImageOptionsBuilder, RemoveContainerOptionsBuilder};
use futures_util::StreamExt;
use plugboard_host::{DataDir, Manifest, Supervisor, SupervisorConfig};

const ROUNDS: usize = 7;
const CALLS: usize = 2000;
const BINDS: [&str; 4] = ["/usr:/usr:ro", "/lib:/lib:ro", "/lib64:/lib64:ro", "/bin:/bin:ro"];

/// Podman's storage in `dir` (vfs: nothing to unmount afterwards).
fn storage_args(dir: &Path) -> Vec<String> {
    let d = |s: &str| dir.join(s).display().to_string();
    vec![
        "--root".into(),
        d("root"),
        "--runroot".into(),
        d("runroot"),
        "--tmpdir".into(),
        d("tmp"),
        "--storage-driver".into(),
        "vfs".into(),
    ]
}

struct Podman(Child, PathBuf);
impl Drop for Podman {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(storage_args(&self.1))
            .args(["rm", "-af", "-t", "0"])
            .env("CONTAINERS_CONF", self.1.join("containers.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn podman(dir: &Path) -> Podman {
    let conf = dir.join("containers.conf");
    std::fs::write(
        &conf,
        "[containers]\ndefault_ulimits = [\"nofile=4096:4096\", \"nproc=4096:4096\"]\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let sock = dir.join("podman.sock");
    let child = Command::new("podman")
        .args(storage_args(dir))
        .args(["system", "service", "--time=0"])
        .arg(format!("unix://{}", sock.display()))
        .env("CONTAINERS_CONF", &conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("podman: {e}"));
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "podman did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Podman(child, dir.to_path_buf())
}

fn manifest(dir: &Path, docker_image: Option<&str>) -> Arc<Manifest> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap_or(root);
    let ex = root.join("examples/plugins/slow_job");
    let sdk = root.join("sdk/python");
    let name = if docker_image.is_some() { "in_box" } else { "in_proc" };
    let launch = match docker_image {
        Some(image) => format!(
            "execution_mode = \"docker\"\n[launch]\nimage = \"{image}\"\npull = \"never\"\ncommand = \"/usr/bin/python3\"\nargs = [\"-u\", \"{ex}/slow_job.py\"]\nenv = {{ PYTHONPATH = \"{sdk}\" }}\nvolumes = [{}, \"{ex}:{ex}:ro\", \"{sdk}:{sdk}:ro\"]\n",
            BINDS.iter().map(|b| format!("{b:?}")).collect::<Vec<_>>().join(", "),
            ex = ex.display(),
            sdk = sdk.display()
        ),
        None => format!(
            "execution_mode = \"subprocess\"\n[launch]\ncommand = \"/usr/bin/python3\"\nargs = [\"-u\", \"{}/slow_job.py\"]\n",
            ex.display()
        ),
    };
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    let p = d.join("plugin.toml");
    std::fs::write(
        &p,
        format!(
            "name = \"slow_job\"\ncategory = \"{name}\"\nversion = \"0.1.0\"\nstop_grace_s = 1\nconfig_schema_file = \"{}\"\n{launch}",
            ex.join("schema.json").display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Arc::new(Manifest::load(&p).unwrap_or_else(|e| panic!("{e}")))
}

fn main() {
    if unsafe { nix::libc::geteuid() } != 0 || Command::new("podman").arg("--version").output().is_err() {
        println!("docker bench needs podman as root; skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pod = podman(tmp.path());
    let sock = tmp.path().join("podman.sock");
    // SAFETY: single-threaded here, before any runtime or client exists.
    unsafe { std::env::set_var("DOCKER_HOST", format!("unix://{}", sock.display())) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let docker = Docker::connect_with_unix(&sock.display().to_string(), 60, bollard::API_DEFAULT_VERSION)
        .unwrap_or_else(|e| panic!("{e}"));
    let image = rt.block_on(async {
        let opts = CreateImageOptionsBuilder::new()
            .from_src("-")
            .repo("plugboard-bench-empty")
            .build();
        let mut s = docker.create_image(Some(opts), Some(bollard::body_full(vec![0u8; 1024].into())), None);
        let mut id = String::new();
        while let Some(Ok(i)) = s.next().await {
            if let Some(st) = i.status.filter(|s| s.starts_with("sha256:")) {
                id = st.trim_start_matches("sha256:").to_owned();
            }
        }
        id
    });

    // Reference: the engine's own create + start + wait of the same image.
    let mut raw = Vec::new();
    let mut raw_start = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        rt.block_on(async {
            let body = ContainerCreateBody {
                image: Some(image.clone()),
                cmd: Some(vec!["/bin/true".into()]),
                host_config: Some(HostConfig {
                    binds: Some(BINDS.iter().map(|b| b.to_string()).collect()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let id = docker
                .create_container(None, body)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .id;
            docker
                .start_container(&id, None)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            raw_start.push(t.elapsed());
            let _ = docker.wait_container(&id, None).next().await;
            raw.push(t.elapsed());
            let _ = docker
                .remove_container(&id, Some(RemoveContainerOptionsBuilder::new().force(true).build()))
                .await;
        });
    }

    let sup = rt
        .block_on(async { Supervisor::new(SupervisorConfig::new(DataDir::new(tmp.path().join("data")))) })
        .unwrap_or_else(|e| panic!("{e}"));
    let run = |m: Arc<Manifest>| support::start_call_stop(&rt, &sup, m, ROUNDS, CALLS);
    let (mut sub_start, mut sub_call) = run(manifest(tmp.path(), None));
    let (mut box_start, mut box_call) = run(manifest(tmp.path(), Some(&image)));
    let raw_p50 = pct(&mut raw, 0.5);
    let sub_start_p50 = pct(&mut sub_start, 0.5);
    let sub_call_p50 = pct(&mut sub_call, 0.5);
    let raw_start_p50 = pct(&mut raw_start, 0.5);
    report("reference: engine create+start of /bin/true", &mut raw_start, None);
    report("reference: engine create+start+wait of /bin/true", &mut raw, None);
    report("start-to-ready, Python worker as a subprocess", &mut sub_start, None);
    report(
        "start-to-ready, the same worker in a container",
        &mut box_start,
        Some(("subprocess", sub_start_p50)),
    );
    println!(
        "  container start-to-ready beyond the subprocess's: {:.1} ms (the engine's own create+start: {:.1} ms; +wait: {:.1} ms)",
        (pct(&mut box_start, 0.5).as_secs_f64() - sub_start_p50.as_secs_f64()) * 1e3,
        raw_start_p50.as_secs_f64() * 1e3,
        raw_p50.as_secs_f64() * 1e3
    );
    report("call round trip, subprocess worker", &mut sub_call, None);
    report(
        "call round trip, container worker (same socket dir)",
        &mut box_call,
        Some(("subprocess", sub_call_p50)),
    );
    drop(pod);
}
