//! docker mode against a real engine: Podman's Docker-compatible API
//! service, started here on a private socket with its own storage (vfs)
//! and the containers.conf settings these machines need, stopped (and its
//! containers removed) by pid at the end. Images are built locally by
//! importing an empty root file system; the host's /usr, /lib, /lib64 and
//! /bin are bind-mounted read-only, so the Python SDK worker runs inside.
//!
//! One test walks every scenario in order, because the engine address
//! (`DOCKER_HOST`) is process-wide.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::CreateImageOptionsBuilder;
use common::*;
use futures_util::StreamExt;
use plugboard_host::backend::docker::{LABEL_LEDGER, LABEL_MARKER};
use plugboard_host::ledger::{Intent, ResourceKind, ResourceStatus};
use plugboard_host::{DataDir, GcOptions, Ledger, Manifest, RunState};
use serde_json::json;

const CHILD_ENV: &str = "PLUGBOARD_TEST_DOCKER_HOST";

struct Podman {
    service: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Podman {
    fn args(&self) -> Vec<String> {
        let d = |s: &str| self.dir.join(s).display().to_string();
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

    fn start(dir: &Path) -> Option<Podman> {
        let have = Command::new("podman")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !have || unsafe { nix::libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("CI").is_none(),
                "podman (as root) is required under CI"
            );
            eprintln!("SKIP: podman not installed or not root");
            return None;
        }
        let conf = dir.join("containers.conf");
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=4096:4096\", \"nproc=4096:4096\"]\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        let socket = dir.join("podman.sock");
        let mut p = Podman {
            service: Command::new("true").spawn().unwrap(),
            dir: dir.to_path_buf(),
            socket: socket.clone(),
        };
        let _ = p.service.wait();
        p.service = Command::new("podman")
            .args(p.args())
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .env("CONTAINERS_CONF", &conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            wait_until_blocking(Duration::from_secs(30), || std::os::unix::net::UnixStream::connect(
                &socket
            )
            .is_ok()),
            "the podman service did not listen"
        );
        Some(p)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(self.args())
            .args(["rm", "-af", "-t", "0"])
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.service.kill();
        let _ = self.service.wait();
    }
}

/// An image with an empty root file system, imported into the engine.
async fn empty_image(docker: &Docker) -> String {
    let tar = vec![0u8; 1024]; // two zero blocks: an empty tar archive
    let opts = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo("plugboard-test-empty")
        .tag("1")
        .build();
    let mut s = docker.create_image(Some(opts), Some(bollard::body_full(tar.into())), None);
    let mut id = None;
    while let Some(item) = s.next().await {
        let info = item.unwrap();
        if let Some(st) = info.status.filter(|s| s.starts_with("sha256:")) {
            id = Some(st.trim_start_matches("sha256:").to_owned());
        }
    }
    id.expect("the engine returned no image id")
}

/// Containers labelled with this ledger (read as plain JSON, as gc does:
/// Podman's "stopped" state breaks typed listing).
async fn ours(_docker: &Docker, ledger_id: &str) -> Vec<String> {
    plugboard_host::backend::docker::list_by_label(LABEL_LEDGER, ledger_id)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

const HOST_BINDS: &str = "\"/usr:/usr:ro\", \"/lib:/lib:ro\", \"/lib64:/lib64:ro\", \"/bin:/bin:ro\"";

fn worker_manifest(dir: &Path, image: &str) -> Arc<Manifest> {
    let ex = workspace_root().join("examples/plugins/slow_job");
    let sdk = workspace_root().join("sdk/python");
    manifest_in(
        dir,
        "slow_job",
        &format!(
            r#"name = "slow_job"
category = "box"
version = "0.1.0"
execution_mode = "docker"
ready_timeout_s = 30
stop_grace_s = 2
config_schema_file = "{schema}"
[launch]
image = "{image}"
pull = "never"
command = "/usr/bin/python3"
args = ["-u", "{ex}/slow_job.py"]
env = {{ PYTHONPATH = "{sdk}" }}
volumes = [{HOST_BINDS}, "{ex}:{ex}:ro", "{sdk}:{sdk}:ro"]
"#,
            schema = ex.join("schema.json").display(),
            ex = ex.display(),
            sdk = sdk.display(),
        ),
    )
}

fn sh_manifest(dir: &Path, name: &str, image: &str, script: &str, extra: &str) -> Arc<Manifest> {
    manifest_in(
        dir,
        name,
        &format!(
            "name = \"{name}\"\ncategory = \"box\"\nexecution_mode = \"docker\"\nready = \"none\"\nstop_grace_s = 1\n{extra}\n[launch]\nimage = \"{image}\"\npull = \"never\"\ncommand = \"/bin/sh\"\nargs = [\"-c\", {script:?}]\nvolumes = [{HOST_BINDS}]\n"
        ),
    )
}

/// The host that gets SIGKILLed: starts a container plugin, prints "started".
#[test]
fn docker_host_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let (data, rest) = spec.split_once('|').unwrap();
    let (dir, image) = rest.split_once('|').unwrap();
    let rt = host_runtime();
    rt.block_on(async {
        let sup = supervisor(Path::new(data));
        sup.start(worker_manifest(Path::new(dir), image)).await.unwrap();
        println!("started");
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

#[test]
fn docker_mode_end_to_end_on_a_real_engine() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(podman) = Podman::start(tmp.path()) else {
        return;
    };
    let address = format!("unix://{}", podman.socket.display());
    // SAFETY: the only test of this binary that runs in this process, set
    // before any thread reads it.
    unsafe { std::env::set_var("DOCKER_HOST", &address) };
    let rt = host_runtime();
    let docker =
        Docker::connect_with_unix(&podman.socket.display().to_string(), 60, bollard::API_DEFAULT_VERSION).unwrap();
    let image = rt.block_on(empty_image(&docker));
    let data = tmp.path().join("data");
    let sup = rt.block_on(async { supervisor(&data) });
    let ledger_id = sup.with_ledger(|l| l.ledger_id().to_owned());

    // 1. A protocol worker in a container: start, call, stream, stop, nothing left.
    rt.block_on(async {
        let st = sup.start(worker_manifest(tmp.path(), &image)).await.unwrap();
        assert_eq!(st.state, RunState::Running);
        assert_eq!(st.backend.as_deref(), Some("docker"));
        let Some(plugboard_host::ResourceHandle::Container { id }) = &st.resource else {
            panic!("{st:?}")
        };
        let meta = sup.metadata(&Manifest::load(&tmp.path().join("slow_job/plugin.toml")).unwrap());
        assert_eq!(meta.container_id.as_deref(), Some(id.as_str()));
        let labels = docker
            .inspect_container(id, None)
            .await
            .unwrap()
            .config
            .unwrap()
            .labels
            .unwrap();
        assert_eq!(
            labels.get(LABEL_MARKER),
            Some(&format!("{ledger_id}:{}", st.resource_id.unwrap()))
        );
        let h = sup.handle("box_slow_job").unwrap();
        assert_eq!(
            h.execute(json!({"steps": 2, "step_ms": 1})).await.unwrap(),
            json!({"steps_done": 2})
        );
        let row = sup.with_ledger(|l| l.get(st.resource_id.unwrap()).unwrap().unwrap());
        assert_eq!(row.kind, ResourceKind::Container);
        sup.stop("box_slow_job").await.unwrap();
        assert!(
            ours(&docker, &ledger_id).await.is_empty(),
            "a container is left after stop"
        );
        let row = sup.with_ledger(|l| l.get(st.resource_id.unwrap()).unwrap().unwrap());
        assert_eq!(row.status, ResourceStatus::Stopped);
    });

    // 2. A missing image with pull = "never": a clear error, nothing created.
    rt.block_on(async {
        let m = sh_manifest(tmp.path(), "missing", "plugboard-no-such-image:9", "true", "");
        let e = sup.start(m).await.unwrap_err().to_string();
        assert!(e.contains("not present") && e.contains("never"), "{e}");
        assert!(ours(&docker, &ledger_id).await.is_empty());
    });

    // 3. A container exiting with code 3: a crash, restarted by on-failure.
    rt.block_on(async {
        let m = sh_manifest(
            tmp.path(),
            "crasher",
            &image,
            "echo crash-coming; echo on-stderr >&2; sleep 0.3; exit 3",
            "[restart]\npolicy = \"on-failure\"\nmax_restarts = 1\nbackoff_ms = 10",
        );
        let first = sup.start(m).await.unwrap().resource_id.unwrap();
        assert!(
            wait_until(Duration::from_secs(20), || sup
                .status("box_crasher")
                .is_some_and(|s| s.restarts == 1))
            .await,
            "{:?}",
            sup.status("box_crasher")
        );
        let row = sup.with_ledger(|l| l.get(first).unwrap().unwrap());
        assert_eq!((row.status, row.exit_code), (ResourceStatus::Crashed, Some(3)));
        // The container's stdout and stderr are in the plugin's log.
        let log = std::fs::read_to_string(DataDir::new(&data).log_path("box_crasher")).unwrap();
        assert!(
            log.contains("out| crash-coming") && log.contains("err| on-stderr"),
            "{log}"
        );
        let _ = sup.stop("box_crasher").await;
        assert!(
            wait_until(Duration::from_secs(20), || sup
                .status("box_crasher")
                .is_some_and(|s| !s.state.is_active()))
            .await
        );
        // The crashed containers are removed too (the monitor ends what a crash leaves).
        assert!(wait_until(Duration::from_secs(10), || rt_list_empty(&docker, &ledger_id)).await);
    });

    // 4. An unreachable engine: one clear error naming the address.
    rt.block_on(async {
        unsafe { std::env::set_var("DOCKER_HOST", "unix:///nonexistent/docker.sock") };
        let e = sup
            .start(sh_manifest(tmp.path(), "nowhere", &image, "true", ""))
            .await
            .unwrap_err()
            .to_string();
        unsafe { std::env::set_var("DOCKER_HOST", &address) };
        assert!(e.contains("/nonexistent/docker.sock"), "{e}");
    });

    // 5. The host SIGKILLed with a container running: the next gc removes it.
    let data2 = tmp.path().join("data2");
    let spec = format!("{}|{}|{image}", data2.display(), tmp.path().display());
    let mut host = child_host("docker_host_child", (CHILD_ENV, std::ffi::OsStr::new(&spec)), "started");
    host.kill().unwrap();
    host.wait().unwrap();
    let mut ledger2 = Ledger::open(&DataDir::new(&data2).ledger_path()).unwrap();
    let ledger2_id = ledger2.ledger_id().to_owned();
    let left = rt.block_on(ours(&docker, &ledger2_id));
    assert_eq!(left.len(), 1);
    // The attach connection died with the host: the engine closed the
    // container's stdin and the SDK worker exited by itself.
    assert!(
        wait_until_blocking(Duration::from_secs(20), || {
            match rt.block_on(docker.inspect_container(&left[0], None)) {
                Ok(c) => c.state.unwrap().running != Some(true),
                // Podman reports a stopped container's status as "stopped",
                // which the Docker API (and so bollard) does not know.
                Err(e) => e.to_string().contains("`stopped`"),
            }
        }),
        "the worker in the container outlived its host"
    );
    let report = run_gc(&mut ledger2, GcOptions::default(), None).unwrap();
    assert_eq!(report.unconfirmed, 0, "{report:?}");
    assert!(
        rt.block_on(ours(&docker, &ledger2_id)).is_empty(),
        "gc left a container: {report:?}"
    );

    // 6. A container created before its row got the id (the crash window),
    //    and one plugboard did not create: the first is found by label and
    //    removed, the second is never touched.
    let dead = ledger2.register_host(4_999_990, 1, "another-boot").unwrap();
    let row = ledger2
        .intent(dead.id, &Intent::new(ResourceKind::Container, "docker", "box_window"))
        .unwrap();
    let marker = ledger2.marker(row);
    let (window, foreign) = rt.block_on(async {
        let mk = |labels: Option<HashMap<String, String>>| ContainerCreateBody {
            image: Some(image.clone()),
            cmd: Some(vec!["/bin/sh".into(), "-c".into(), "exec sleep 1000".into()]),
            labels,
            host_config: Some(bollard::models::HostConfig {
                binds: Some(vec![
                    "/usr:/usr:ro".into(),
                    "/lib:/lib:ro".into(),
                    "/lib64:/lib64:ro".into(),
                    "/bin:/bin:ro".into(),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let w = docker
            .create_container(
                None,
                mk(Some(HashMap::from([
                    (LABEL_LEDGER.to_owned(), ledger2_id.clone()),
                    (LABEL_MARKER.to_owned(), marker.clone()),
                ]))),
            )
            .await
            .unwrap()
            .id;
        docker.start_container(&w, None).await.unwrap();
        let f = docker.create_container(None, mk(None)).await.unwrap().id;
        docker.start_container(&f, None).await.unwrap();
        (w, f)
    });
    let report = run_gc(&mut ledger2, GcOptions::default(), None).unwrap();
    assert!(
        report.reaped.iter().any(|r| r.resource_id == Some(row) && r.confirmed),
        "{report:?}"
    );
    rt.block_on(async {
        assert!(
            docker.inspect_container(&window, None).await.is_err(),
            "the crash-window container is still there"
        );
        let f = docker.inspect_container(&foreign, None).await.unwrap();
        assert_eq!(
            f.state.unwrap().running,
            Some(true),
            "a container plugboard did not create was touched"
        );
    });
    assert_eq!(ledger2.get(row).unwrap().unwrap().status, ResourceStatus::Reaped);
    rt.block_on(async { sup.shutdown().await.unwrap() });
    drop(podman);
}

fn rt_list_empty(docker: &Docker, ledger_id: &str) -> bool {
    let docker = docker.clone();
    let ledger_id = ledger_id.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(ours(&docker, &ledger_id)).is_empty()
    })
    .join()
    .unwrap()
}
