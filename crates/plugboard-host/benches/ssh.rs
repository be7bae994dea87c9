//! remote_ssh figures beside their references, same run: a remote worker's
//! start-to-ready next to `ssh host true` over the same multiplexed
//! connection (and next to the same worker as a subprocess), and a call
//! round trip through the forwarded socket next to a raw round trip through
//! the same forward (a one-byte echo on an open connection, and a fresh
//! connection per round trip, as a call opens one). Needs sshd (Debian
//! `openssh-server`); it starts its own on loopback and stops it at the end.
//!
//! `taskset -c 0 cargo bench -p plugboard-host --bench ssh`

#[path = "../tests/common/sshd.rs"]
mod sshd;

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;
use support::{pct, report};

use plugboard_core::ExecutionMode;
use plugboard_host::backend::remote_ssh::RemoteSshBackend;
use plugboard_host::ssh::Destination;
use plugboard_host::{Backends, DataDir, Manifest, Supervisor, SupervisorConfig};

const ROUNDS: usize = 7;
const CALLS: usize = 1000;
const PINGS: usize = 2000;

fn manifest(dir: &Path, sshd: Option<&sshd::Sshd>) -> Arc<Manifest> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap_or(root);
    let ex = root.join("examples/plugins/slow_job");
    let sdk = root.join("sdk/python");
    let (name, launch) = match sshd {
        Some(s) => (
            "remote",
            format!(
                "execution_mode = \"remote_ssh\"\n[launch]\n{}command = \"/usr/bin/python3\"\nargs = [\"-u\", \"{}/slow_job.py\"]\nenv = {{ PYTHONPATH = \"{}\" }}\n",
                s.launch_keys(),
                ex.display(),
                sdk.display()
            ),
        ),
        None => (
            "local",
            format!(
                "execution_mode = \"subprocess\"\n[launch]\ncommand = \"/usr/bin/python3\"\nargs = [\"-u\", \"{}/slow_job.py\"]\n",
                ex.display()
            ),
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

/// A one-byte echo server on a Unix socket (the far end of the raw forward).
fn echo_server(path: &Path) {
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { return };
            std::thread::spawn(move || {
                let mut b = [0u8; 1];
                while c.read_exact(&mut b).is_ok() {
                    if c.write_all(&b).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

fn main() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let Some(sshd) = sshd::Sshd::start(tmp.path()) else {
        println!("ssh bench needs /usr/sbin/sshd; skipped");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let remote = Arc::new(RemoteSshBackend::new());
    let mut backends = Backends::builtin(None);
    backends.register(remote.clone(), &[ExecutionMode::RemoteSsh]);
    let mut cfg = SupervisorConfig::new(DataDir::new(tmp.path().join("data")));
    cfg.backends = Some(backends);
    let sup = rt
        .block_on(async { Supervisor::new(cfg) })
        .unwrap_or_else(|e| panic!("{e}"));
    // The destination exactly as the manifest's launch keys give it, so the
    // pool hands out the connection the workers use.
    let mut dest = Destination::new("127.0.0.1");
    dest.port = Some(sshd.port);
    dest.identity_file = Some(sshd.identity.clone());
    dest.known_hosts = Some(sshd.known_hosts.clone());
    let master = rt
        .block_on(remote.connections().get(&dest))
        .unwrap_or_else(|e| panic!("{e}"));

    // Reference: `ssh host true` over the same multiplexed connection.
    let mut ssh_true = Vec::new();
    for _ in 0..ROUNDS * 3 {
        let mut cmd = master.client();
        cmd.arg("--").arg("true").stdin(Stdio::null()).stdout(Stdio::null());
        let t = Instant::now();
        let ok = rt.block_on(async { cmd.status().await.map(|s| s.success()) });
        assert!(matches!(ok, Ok(true)), "ssh true failed: {ok:?}");
        ssh_true.push(t.elapsed());
    }
    // Reference: fork+exec of /bin/true.
    let mut fork = Vec::new();
    for _ in 0..ROUNDS * 3 {
        let t = Instant::now();
        let _ = Command::new("/bin/true").status();
        fork.push(t.elapsed());
    }

    let run = |m: Arc<Manifest>| support::start_call_stop(&rt, &sup, m, ROUNDS, CALLS);
    let (mut local_start, mut local_call) = run(manifest(tmp.path(), None));
    let (mut remote_start, mut remote_call) = run(manifest(tmp.path(), Some(&sshd)));

    // Reference: raw round trips through a forward of the same connection.
    let far = tmp.path().join("echo.sock");
    let near = tmp.path().join("near.sock");
    echo_server(&far);
    rt.block_on(master.forward(&near, &far.to_string_lossy()))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut open_rtt = Vec::new();
    let mut c = UnixStream::connect(&near).unwrap_or_else(|e| panic!("{e}"));
    let mut b = [7u8; 1];
    for _ in 0..PINGS {
        let t = Instant::now();
        c.write_all(&b).unwrap_or_else(|e| panic!("{e}"));
        c.read_exact(&mut b).unwrap_or_else(|e| panic!("{e}"));
        open_rtt.push(t.elapsed());
    }
    let mut fresh_rtt = Vec::new();
    for _ in 0..CALLS {
        let t = Instant::now();
        let mut c = UnixStream::connect(&near).unwrap_or_else(|e| panic!("{e}"));
        c.write_all(&b).unwrap_or_else(|e| panic!("{e}"));
        c.read_exact(&mut b).unwrap_or_else(|e| panic!("{e}"));
        fresh_rtt.push(t.elapsed());
    }

    let ssh_true_p50 = pct(&mut ssh_true, 0.5);
    let fork_p50 = pct(&mut fork, 0.5);
    let local_start_p50 = pct(&mut local_start, 0.5);
    let open_p50 = pct(&mut open_rtt, 0.5);
    let fresh_p50 = pct(&mut fresh_rtt, 0.5);
    let local_call_p50 = pct(&mut local_call, 0.5);
    report("reference: fork+exec of /bin/true", &mut fork, None);
    report(
        "reference: `ssh host true` over the same connection",
        &mut ssh_true,
        Some(("/bin/true", fork_p50)),
    );
    report("start-to-ready, Python worker as a subprocess", &mut local_start, None);
    report(
        "start-to-ready, the same worker over SSH",
        &mut remote_start,
        Some(("ssh host true", ssh_true_p50)),
    );
    println!(
        "  remote start-to-ready beyond the subprocess's: {:.1} ms ({:.1}x `ssh host true`)",
        (pct(&mut remote_start, 0.5).as_secs_f64() - local_start_p50.as_secs_f64()) * 1e3,
        (pct(&mut remote_start, 0.5).as_secs_f64() - local_start_p50.as_secs_f64()) / ssh_true_p50.as_secs_f64()
    );
    report(
        "reference: 1-byte echo through the forward, open conn",
        &mut open_rtt,
        None,
    );
    report(
        "reference: 1-byte echo through the forward, new conn",
        &mut fresh_rtt,
        None,
    );
    report("call round trip, subprocess worker", &mut local_call, None);
    report(
        "call round trip, remote worker through the forward",
        &mut remote_call,
        Some(("raw new-conn echo", fresh_p50)),
    );
    println!(
        "  remote call vs subprocess call: {:.1}x; raw echo open conn: {:.3} ms",
        pct(&mut remote_call, 0.5).as_secs_f64() / local_call_p50.as_secs_f64(),
        open_p50.as_secs_f64() * 1e3
    );
    drop(master);
    drop(sshd);
}
