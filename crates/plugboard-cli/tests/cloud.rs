//! A cloud_gpu plugin through the `plugboard` binary, against the Lambda
//! Cloud emulator of the host's tests and a real sshd: the key goes in with
//! `plugboard secret set` and must come out of no output channel — no
//! command's stdout or stderr (`--json` included), not the host's own log
//! output at debug level, not the plugin's log, the ledger or any file of
//! the data dir, not the API and not the dashboard's pages.

#[path = "../../plugboard-host/tests/common/lambda_emulator.rs"]
mod lambda_emulator;
#[path = "../../plugboard-host/tests/common/sshd.rs"]
mod sshd;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Host {
    child: Child,
    stderr: PathBuf,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            Command::new("id")
                .arg("-un")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "root".into())
}

fn python_available() -> bool {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "python3 is required under CI");
        eprintln!("SKIP: python3 not found");
    }
    ok
}

/// A raw HTTP GET (the dashboard speaks HTTP/1.1 on loopback).
fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn all_text(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.push((p.display().to_string(), String::from_utf8_lossy(&b).into_owned()));
            }
        }
    }
    out
}

#[test]
fn a_cloud_plugin_through_the_cli_never_shows_its_key() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(sshd) = sshd::Sshd::start(tmp.path()) else {
        return;
    };
    let emu = lambda_emulator::LambdaEmulator::start(&tmp.path().join("emulator"), "127.0.0.1");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap();
    let ex = root.join("examples/plugins/slow_job");
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(plugins.join("gpu")).unwrap();
    std::fs::write(
        plugins.join("gpu/plugin.toml"),
        format!(
            "name = \"slow_job\"\ncategory = \"gpu\"\nversion = \"0.1.0\"\nexecution_mode = \"cloud_gpu\"\nprovision_timeout_s = 60\n\
             stop_grace_s = 1\nconfig_schema_file = \"{schema}\"\n[launch]\nprovider = \"lambda_labs\"\nregion = \"us-east-1\"\n\
             instance_type = \"gpu_1x_a10\"\nssh_key_name = \"test-key\"\nssh_user = \"{user}\"\nssh_port = {port}\n\
             identity_file = \"{identity}\"\ncommand = \"python3\"\nargs = [\"-u\", \"{ex}/slow_job.py\"]\n\
             env = {{ PYTHONPATH = \"{sdk}\" }}\n",
            schema = ex.join("schema.json").display(),
            user = user(),
            port = sshd.port,
            identity = sshd.identity.display(),
            ex = ex.display(),
            sdk = root.join("sdk/python").display(),
        ),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let configs = tmp.path().join("configs");
    let key = emu.key.clone();
    let mut outputs: Vec<(String, String)> = Vec::new();
    let cmd = || {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("plugboard"));
        c.env("NO_COLOR", "1")
            .env_remove("LAMBDA_API_KEY")
            .env("PLUGBOARD_LAMBDA_API_URL", &emu.url)
            .arg("--plugins")
            .arg(&plugins)
            .arg("--config-dir")
            .arg(&configs)
            .arg("--data-dir")
            .arg(&data);
        c
    };
    let run = |args: &[&str], stdin: Option<&str>, outputs: &mut Vec<(String, String)>| -> String {
        let mut c = cmd();
        c.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "plugboard {args:?}: {stdout}\n{stderr}");
        outputs.push((format!("stdout of {args:?}"), stdout.clone()));
        outputs.push((format!("stderr of {args:?}"), stderr));
        stdout
    };

    run(
        &["secret", "set", "LAMBDA_API_KEY"],
        Some(&format!("{key}\n")),
        &mut outputs,
    );
    let listed: Value = serde_json::from_str(&run(&["secret", "list", "--json"], None, &mut outputs)).unwrap();
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "LAMBDA_API_KEY")
        .unwrap();
    assert_eq!(row["set"], true);
    assert_eq!(row["source"], "secret store");

    // The host, logging at debug level to a file we read afterwards.
    let stderr_path = tmp.path().join("host.stderr");
    let mut serve = cmd();
    serve
        .env("RUST_LOG", "debug")
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    let mut child = serve.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let host = Host {
        child,
        stderr: stderr_path,
    };
    let addr = {
        use std::io::BufRead;
        let mut addr = None;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(url) = line.trim().strip_prefix("dashboard:") {
                addr = Some(
                    url.trim()
                        .trim_start_matches("http://")
                        .trim_end_matches('/')
                        .to_owned(),
                );
            }
            if line.starts_with("press Ctrl-C") {
                break;
            }
        }
        addr.expect("no dashboard address printed")
    };

    run(&["start", "gpu_slow_job"], None, &mut outputs);
    let call = run(
        &["call", "gpu_slow_job", "--input", "{\"steps\": 2, \"step_ms\": 1}"],
        None,
        &mut outputs,
    );
    assert!(call.contains("steps_done"), "{call}");
    let status: Value = serde_json::from_str(&run(&["status", "gpu_slow_job", "--json"], None, &mut outputs)).unwrap();
    assert_eq!(status["state"], "running");
    assert_eq!(status["backend"], "cloud");
    for args in [
        vec!["ps", "--json"],
        vec!["ps"],
        vec!["status", "gpu_slow_job"],
        vec!["show", "gpu_slow_job", "--json"],
        vec!["logs", "gpu_slow_job"],
        vec!["cost", "--json"],
        vec!["gc", "--dry-run", "--json"],
    ] {
        run(&args, None, &mut outputs);
    }
    for path in [
        "/plugins/gpu_slow_job",
        "/running",
        "/cost",
        "/api/v1/plugins/gpu_slow_job",
        "/api/v1/ps",
        "/api/v1/plugins/gpu_slow_job/status",
        "/api/v1/plugins/gpu_slow_job/logs",
        "/api/v1/secrets",
        "/api/v1/cost",
    ] {
        let answer = http_get(&addr, path);
        assert!(answer.starts_with("HTTP/1.1 200"), "GET {path}: {answer}");
        outputs.push((format!("GET {path}"), answer));
    }
    let cost = http_get(&addr, "/cost");
    let keys = cost.split("id=\"provider-keys\"").nth(1).unwrap_or_default();
    assert!(
        keys.contains("LAMBDA_API_KEY") && keys.contains("secret store"),
        "the cost page lists the key as set: {keys}"
    );
    let page = http_get(&addr, "/plugins/gpu_slow_job");
    assert!(page.contains("lambda_labs"), "the page shows the instance's provider");
    run(&["stop", "gpu_slow_job"], None, &mut outputs);
    assert!(emu.live().is_empty(), "{:?}", emu.log());
    let stderr_path = host.stderr.clone();
    drop(host);
    outputs.push((
        "the host's stderr (RUST_LOG=debug)".into(),
        std::fs::read_to_string(&stderr_path).unwrap(),
    ));
    // Every file of the data dir but the secret store itself.
    outputs.extend(all_text(&data).into_iter().filter(|(p, _)| !p.contains("secrets.json")));
    outputs.extend(all_text(&configs));
    assert!(outputs.len() > 30, "too few outputs checked: {}", outputs.len());
    for (what, text) in &outputs {
        assert!(!text.contains(&key), "the API key is in {what}");
    }
    // The store itself holds it, mode 0600; nothing else under the data dir.
    use std::os::unix::fs::PermissionsExt;
    let secrets = data.join("secrets.json");
    let mode = std::fs::metadata(&secrets).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
