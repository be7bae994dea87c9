//! The real `plugboard` binary: every command, both output forms, each exit
//! code, bad input, and an end-to-end run of a host.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/plugins")
        .canonicalize()
        .unwrap()
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn configs(&self) -> PathBuf {
        self.dir.path().join("configs")
    }
    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("plugboard").unwrap();
        c.env_remove("PLUGBOARD_PLUGINS")
            .env_remove("PLUGBOARD_CONFIG_DIR")
            .env_remove("PLUGBOARD_DATA_DIR")
            .env("NO_COLOR", "1")
            .arg("--plugins")
            .arg(examples())
            .arg("--config-dir")
            .arg(self.configs())
            .arg("--data-dir")
            .arg(self.data());
        c
    }
    fn json(&self, args: &[&str]) -> Value {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

#[test]
fn list_human_and_json_with_filters() {
    let e = Env::new();
    e.cmd()
        .arg("list")
        .assert()
        .success()
        .stdout(predicate::str::contains("ID").and(predicate::str::contains("text_word_count")))
        .stdout(predicate::str::contains("in_process"));
    let all = e.json(&["list", "--json"]);
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["unique_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"demo_process_tree") && ids.contains(&"text_reverse"),
        "{ids:?}"
    );
    let first = &all[0];
    for key in [
        "name",
        "category",
        "title",
        "config_schema",
        "execution_mode",
        "is_configured",
        "spawned_pids",
        "remote_resource",
    ] {
        assert!(first.get(key).is_some(), "{key} missing from {first}");
    }
    let text = e.json(&["list", "--json", "--category", "text"]);
    assert_eq!(text.as_array().unwrap().len(), 2);
    let inproc = e.json(&["list", "--json", "--mode", "in_process"]);
    assert_eq!(inproc[0]["unique_id"], "text_reverse");
    assert_eq!(e.json(&["list", "--json", "--configured"]).as_array().unwrap().len(), 0);
    e.cmd()
        .args(["list", "--mode", "gpu"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("in_process").and(predicate::str::contains("kubernetes")));
    e.cmd()
        .args(["list", "--configured", "--unconfigured"])
        .assert()
        .code(2);
}

#[test]
fn a_missing_plugins_dir_is_a_usage_error() {
    let e = Env::new();
    Command::cargo_bin("plugboard")
        .unwrap()
        .args(["--plugins", "/definitely/not/here", "--data-dir"])
        .arg(e.data())
        .arg("list")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "plugins directory /definitely/not/here does not exist",
        ));
}

#[test]
fn show_stats_and_exit_codes() {
    let e = Env::new();
    e.cmd()
        .args(["show", "text_word_count"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Word counter"));
    let m = e.json(&["show", "text_word_count", "--json"]);
    assert_eq!(m["execution_mode"], "subprocess");
    assert_eq!(m["config_schema"]["title"], "Word counter settings");
    e.cmd()
        .args(["show", "text_nope"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("unknown plugin \"text_nope\""));
    e.cmd()
        .args(["show", "../../etc/passwd"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("path separator"));
    let s = e.json(&["stats", "--json"]);
    assert_eq!(s["total"], 5);
    assert_eq!(s["by_category"]["demo"], 3);
    assert_eq!(s["by_category"]["text"], 2);
    e.cmd()
        .args(["stats"])
        .assert()
        .success()
        .stdout(predicate::str::contains("category Demo"));
    e.cmd().args(["frobnicate"]).assert().code(2);
}

#[test]
fn config_set_get_validate_delete() {
    let e = Env::new();
    let file = e.configs().join("text_word_count.json");
    // Every violation is listed; nothing is written.
    e.cmd()
        .args([
            "config",
            "set",
            "text_word_count",
            "--json",
            r#"{"min_length": 0, "lowercase": "yes", "extra": 1}"#,
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("3 violations"))
        .stderr(predicate::str::contains("/min_length"))
        .stderr(predicate::str::contains("/lowercase"))
        .stderr(predicate::str::contains("extra"));
    assert!(!file.exists());
    e.cmd()
        .args(["config", "set", "text_word_count", "--json", "{not json"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not valid JSON"));
    e.cmd()
        .args(["config", "set", "text_word_count", "--json", "[1]"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("must be a JSON object"));
    e.cmd()
        .args(["config", "set", "../escape", "--json", "{}"])
        .assert()
        .code(2);
    e.cmd()
        .args(["config", "set", "text_nope", "--json", "{}"])
        .assert()
        .code(3);
    // A valid one is saved and read back with defaults.
    e.cmd()
        .args(["config", "set", "text_word_count", "min_length=3"])
        .assert()
        .success();
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved, serde_json::json!({"min_length": 3}));
    let got = e.json(&["config", "get", "text_word_count"]);
    assert_eq!(got, serde_json::json!({"min_length": 3, "lowercase": true}));
    e.cmd()
        .args(["config", "set", "text_word_count", "lowercase=false"])
        .assert()
        .success();
    assert_eq!(e.json(&["config", "get", "text_word_count"])["lowercase"], false);
    let before = std::fs::read(&file).unwrap();
    e.cmd()
        .args(["config", "set", "text_word_count", "min_length=500"])
        .assert()
        .code(1);
    assert_eq!(std::fs::read(&file).unwrap(), before);
    assert_eq!(e.json(&["list", "--json", "--configured"]).as_array().unwrap().len(), 1);
    // validate
    e.cmd()
        .args([
            "config",
            "validate",
            "text_word_count",
            "--json",
            r#"{"min_length": 2}"#,
        ])
        .assert()
        .success()
        .stdout("valid\n");
    e.cmd()
        .args([
            "config",
            "validate",
            "text_word_count",
            "--json",
            r#"{"min_length": -2}"#,
        ])
        .assert()
        .code(1);
    let f = e.dir.path().join("c.json");
    std::fs::write(&f, r#"{"lowercase": true}"#).unwrap();
    e.cmd()
        .args(["config", "set", "text_word_count", "--file"])
        .arg(&f)
        .assert()
        .success();
    // delete
    e.cmd()
        .args(["config", "delete", "text_word_count"])
        .assert()
        .success()
        .stdout(predicate::str::contains("deleted"));
    assert!(!file.exists());
    e.cmd()
        .args(["config", "delete", "text_word_count"])
        .assert()
        .success()
        .stdout(predicate::str::contains("no saved config"));
}

#[test]
fn config_edit_revalidates_before_saving() {
    let e = Env::new();
    let script = e.dir.path().join("edit.sh");
    std::fs::write(&script, "#!/bin/sh\nprintf '{\"min_length\": 7}' > \"$1\"\n").unwrap();
    let bad = e.dir.path().join("bad.sh");
    std::fs::write(&bad, "#!/bin/sh\nprintf '{\"min_length\": \"seven\"}' > \"$1\"\n").unwrap();
    for s in [&script, &bad] {
        let mut p = std::fs::metadata(s).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
        std::fs::set_permissions(s, p).unwrap();
    }
    e.cmd()
        .env("VISUAL", &script)
        .args(["config", "edit", "text_word_count"])
        .assert()
        .success();
    assert_eq!(e.json(&["config", "get", "text_word_count"])["min_length"], 7);
    e.cmd()
        .env("VISUAL", &bad)
        .args(["config", "edit", "text_word_count"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("/min_length").and(predicate::str::contains("your edit is kept")));
    assert_eq!(e.json(&["config", "get", "text_word_count"])["min_length"], 7);
}

#[test]
fn ledger_commands_work_without_a_host() {
    let e = Env::new();
    e.cmd()
        .arg("ps")
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing is running"));
    assert_eq!(e.json(&["ps", "--json"]), serde_json::json!([]));
    e.cmd()
        .arg("gc")
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing to reap"));
    let g = e.json(&["gc", "--dry-run", "--json"]);
    assert_eq!(g["dry_run"], true);
    let c = e.json(&["cost", "--hours", "24", "--json"]);
    assert_eq!(c["total_projected_usd"], 0.0);
    assert_eq!(c["hours"], 24.0);
    e.cmd().args(["cost", "--hours", "-1"]).assert().code(2);
    e.cmd()
        .args(["logs", "text_word_count"])
        .assert()
        .success()
        .stderr(predicate::str::contains("no log yet"));
    e.cmd().args(["logs", "text_nope"]).assert().code(3);
    for args in [
        vec!["start", "text_word_count"],
        vec!["status", "text_word_count"],
        vec!["call", "text_word_count"],
    ] {
        e.cmd()
            .args(&args)
            .assert()
            .code(1)
            .stderr(predicate::str::contains("no plugboard host is running"));
    }
    e.cmd()
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("plugboard"));
}

struct Host {
    child: Child,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(e: &Env) -> Host {
    let bin = assert_cmd::cargo::cargo_bin("plugboard");
    let child = StdCommand::new(bin)
        .env("NO_COLOR", "1")
        .arg("--plugins")
        .arg(examples())
        .arg("--config-dir")
        .arg(e.configs())
        .arg("--data-dir")
        .arg(e.data())
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = e.data().join("host.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "the host did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Host { child }
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("Z");
        state != "Z" && state != "X"
    })
}

fn tree_pids(call: &Value) -> Vec<u64> {
    let mut v = vec![call["worker"].as_u64().unwrap()];
    for k in ["children", "stubborn"] {
        v.extend(call[k].as_array().unwrap().iter().filter_map(Value::as_u64));
    }
    v
}

#[test]
fn end_to_end_serve_start_call_stop_and_crash_recovery() {
    let ok = StdCommand::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "python3 is required under CI");
        eprintln!("SKIP: python3 not found");
        return;
    }
    let e = Env::new();
    let mut host = serve(&e);
    // A second host on the same data dir is refused.
    e.cmd()
        .arg("serve")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("already serving data dir"));

    e.cmd()
        .args(["start", "demo_process_tree"])
        .assert()
        .success()
        .stdout(predicate::str::contains("started demo_process_tree"));
    e.cmd()
        .args(["start", "demo_process_tree"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("already running"));
    let call = e.json(&["call", "demo_process_tree"]);
    assert_eq!(call["processes"], 9);
    let pids = tree_pids(&call);
    assert!(pids.iter().all(|p| alive(*p)));
    let ps = e.json(&["ps", "--json"]);
    assert_eq!(ps.as_array().unwrap().len(), 1);
    assert_eq!(ps[0]["plugin_id"], "demo_process_tree");
    assert_eq!(ps[0]["status"], "running");
    e.cmd()
        .args(["ps"])
        .assert()
        .success()
        .stdout(predicate::str::contains("demo_process_tree"));
    let st = e.json(&["status", "demo_process_tree", "--json"]);
    assert_eq!(st["state"], "running");
    e.cmd()
        .args(["status", "demo_process_tree"])
        .assert()
        .success()
        .stdout(predicate::str::contains("running"));
    e.cmd()
        .args(["logs", "demo_process_tree", "-n", "2"])
        .assert()
        .success()
        .stdout(predicate::str::contains("tree ready"));

    // Calls through the host: plain, streaming, errors.
    e.cmd().args(["start", "text_word_count"]).assert().success();
    let wc = e.json(&["call", "text_word_count", "--input", r#"{"text": "a b c"}"#]);
    assert_eq!(wc["words"], 3);
    e.cmd()
        .args(["call", "text_word_count", "--input", r#"{"txt": 1}"#])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("input must be"));
    e.cmd()
        .args(["call", "text_word_count", "--input", "{oops"])
        .assert()
        .code(2);
    e.cmd().args(["start", "text_reverse"]).assert().success();
    assert_eq!(
        e.json(&["call", "text_reverse", "--input", r#"{"text": "abc"}"#])["text"],
        "cba"
    );
    e.cmd().args(["start", "demo_slow_job"]).assert().success();
    e.cmd()
        .args([
            "call",
            "demo_slow_job",
            "--stream",
            "--input",
            r#"{"steps": 2, "step_ms": 10}"#,
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"steps_done\": 2"))
        .stderr(predicate::str::contains("step 2 of 2"));
    e.cmd().args(["start", "text_nope"]).assert().code(3);

    // Restart gives a new worker process.
    let before = e.json(&["status", "demo_process_tree", "--json"])["pid"]
        .as_u64()
        .unwrap();
    e.cmd()
        .args(["restart", "demo_process_tree"])
        .assert()
        .success()
        .stdout(predicate::str::contains("restarted"));
    let after = e.json(&["status", "demo_process_tree", "--json"])["pid"]
        .as_u64()
        .unwrap();
    assert_ne!(before, after);
    assert!(!alive(before));
    let pids = tree_pids(&e.json(&["call", "demo_process_tree"]));

    // Stop: the whole tree is gone and ps shows nothing of it.
    e.cmd().args(["stop", "demo_process_tree"]).assert().success();
    assert!(pids.iter().all(|p| !alive(*p)), "survivors after stop");
    let live: Vec<Value> = e.json(&["ps", "--json"]).as_array().unwrap().clone();
    assert!(live.iter().all(|r| r["plugin_id"] != "demo_process_tree"));
    e.cmd()
        .args(["stop", "demo_process_tree"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not running"));

    // Start again, SIGKILL the host: gc leaves nothing.
    e.cmd().args(["start", "demo_process_tree"]).assert().success();
    let pids = tree_pids(&e.json(&["call", "demo_process_tree"]));
    let _ = host.child.kill();
    let _ = host.child.wait();
    let g = e.json(&["gc", "--json"]);
    assert!(!g["reaped"].as_array().unwrap().is_empty(), "{g}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "processes survived the host's death and gc"
    );
    assert_eq!(e.json(&["ps", "--json"]), serde_json::json!([]));
    // The dead host's lock is taken over by a new host.
    let host2 = serve(&e);
    drop(host2);
}

#[test]
fn serve_stops_its_plugins_on_sigterm() {
    let ok = StdCommand::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "python3 is required under CI");
        return;
    }
    let e = Env::new();
    let mut host = serve(&e);
    e.cmd().args(["start", "demo_process_tree"]).assert().success();
    let pids = tree_pids(&e.json(&["call", "demo_process_tree"]));
    let pid = nix::unistd::Pid::from_raw(host.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = host.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(pids.iter().all(|p| !alive(*p)));
    let rows = {
        let l = plugboard_host::Ledger::open(&e.data().join("ledger.sqlite")).unwrap();
        l.all().unwrap()
    };
    assert!(
        rows.iter().all(|r| r.status == plugboard_host::ResourceStatus::Stopped),
        "{rows:?}"
    );
    assert!(!e.data().join("host.sock").exists());
}

#[test]
fn logs_follow_prints_new_lines() {
    let e = Env::new();
    let log = e.data().join("logs/text_word_count.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, "out| first\n").unwrap();
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("plugboard"))
        .arg("--plugins")
        .arg(examples())
        .arg("--data-dir")
        .arg(e.data())
        .args(["logs", "text_word_count", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    use std::io::{Read, Write};
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(b"out| second\n")
        .unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 256];
    while !seen.contains("second") && Instant::now() < deadline {
        let n = out.read(&mut buf).unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("out| first") && seen.contains("out| second"), "{seen}");
}

#[test]
fn demo_serves_the_bundled_examples_and_stops_on_sigint() {
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("plugboard"))
        .env_remove("PLUGBOARD_PLUGINS")
        .args(["demo", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(30);
    use std::io::Read;
    while !seen.contains("press Ctrl-C") && Instant::now() < deadline {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("plugboard host: 5 plugin(s)"), "{seen}");
    let url = seen
        .lines()
        .find_map(|l| l.trim().strip_prefix("dashboard:"))
        .unwrap()
        .trim()
        .to_owned();
    let addr = url.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    use std::io::Write;
    s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("Demo") && page.contains("Text"),
        "{page}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// `plugboard serve` on loopback port 0, its stdout read until it is
/// ready: the child and the dashboard's address.
fn serve_http(e: &Env) -> (Host, String) {
    use std::io::BufRead;
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("plugboard"))
        .env("NO_COLOR", "1")
        .arg("--plugins")
        .arg(examples())
        .arg("--config-dir")
        .arg(e.configs())
        .arg("--data-dir")
        .arg(e.data())
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let host = Host { child };
    let mut addr = None;
    for line in out.lines() {
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
    (host, addr.expect("no dashboard address printed"))
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigint_stops_the_host_while_an_event_stream_is_open_defect_3() {
    use std::io::{Read, Write};
    let e = Env::new();
    let (mut host, addr) = serve_http(&e);
    e.cmd().args(["start", "text_word_count"]).assert().success();
    let worker = e.json(&["status", "text_word_count", "--json"])["pid"]
        .as_u64()
        .unwrap();
    assert!(alive(worker));
    // A client that keeps the live list open (`curl -N .../events/running`).
    let mut sse = std::net::TcpStream::connect(&addr).unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(sse, "GET /events/running HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("event: running") {
        let n = sse.read(&mut buf).unwrap();
        assert!(n > 0, "the stream closed early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // And one that sent half a request and went quiet.
    let mut idle = std::net::TcpStream::connect(&addr).unwrap();
    idle.write_all(b"GET / HT").unwrap();
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(host.child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_exit(&mut host.child, Duration::from_secs(10)).unwrap_or_else(|| {
        panic!(
            "the host still runs {:?} after SIGINT with a client connected",
            started.elapsed()
        )
    });
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(worker) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(worker), "the plugin outlived its host");
    // The stream ended rather than hanging.
    let mut rest = Vec::new();
    let _ = sse.read_to_end(&mut rest);
}

#[test]
fn serve_reports_a_directory_at_the_socket_path_defect_13() {
    let e = Env::new();
    let sock = e.data().join("host.sock");
    std::fs::create_dir_all(&sock).unwrap();
    e.cmd()
        .args(["serve", "--no-http"])
        .timeout(Duration::from_secs(30))
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains(sock.display().to_string())
                .and(predicate::str::contains("a directory is at that path"))
                .and(predicate::str::contains("Address already in use").not()),
        );
    assert!(sock.is_dir(), "the directory was touched");
}

#[test]
fn demo_try_commands_work_as_printed() {
    use std::io::BufRead;
    let home = tempfile::tempdir().unwrap();
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("plugboard"))
        .env_remove("PLUGBOARD_PLUGINS")
        .env_remove("PLUGBOARD_DATA_DIR")
        .env_remove("PLUGBOARD_CONFIG_DIR")
        .args(["demo", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut demo = Host { child };
    let mut commands = Vec::new();
    let mut in_try = false;
    for line in out.lines() {
        let line = line.unwrap();
        if line.starts_with("press Ctrl-C") {
            break;
        }
        if let Some(c) = line.strip_prefix("try:") {
            in_try = true;
            commands.push(c.trim().to_owned());
        } else if in_try && line.starts_with("      ") {
            commands.push(line.trim().to_owned());
        }
    }
    assert!(commands.len() >= 3, "{commands:?}");
    let mut outputs = Vec::new();
    for c in &commands {
        assert!(!c.starts_with("plugboard "), "not on PATH after cargo run: {c}");
        // As a user would paste it: in a shell whose PATH has no plugboard,
        // with no plugboard environment.
        let out = StdCommand::new("sh")
            .arg("-c")
            .arg(c)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", home.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{c}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let all = outputs.join("\n");
    assert!(all.contains("text_word_count") && all.contains("\"words\""), "{all}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_exit(&mut demo.child, Duration::from_secs(15)).expect("the demo did not stop");
    assert!(status.success(), "{status}");
}

#[test]
fn list_uses_the_plugin_dirs_of_the_host_running_on_the_data_dir() {
    let e = Env::new();
    let home = tempfile::tempdir().unwrap();
    let bare = || {
        let mut c = Command::cargo_bin("plugboard").unwrap();
        c.env_remove("PLUGBOARD_PLUGINS")
            .env_remove("PLUGBOARD_CONFIG_DIR")
            .env_remove("PLUGBOARD_DATA_DIR")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .env("HOME", home.path())
            .env("NO_COLOR", "1")
            .arg("--data-dir")
            .arg(e.data());
        c
    };
    // No host: it says where it looked and how to point it.
    bare()
        .arg("list")
        .assert()
        .success()
        .stderr(predicate::str::contains("no plugins found in").and(predicate::str::contains("--plugins")));
    let host = serve(&e);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !e.data().join("host.json").exists() {
        assert!(Instant::now() < deadline, "the host wrote no host.json");
        std::thread::sleep(Duration::from_millis(20));
    }
    bare()
        .arg("list")
        .assert()
        .success()
        .stdout(predicate::str::contains("text_word_count").and(predicate::str::contains("demo_process_tree")));
    // Configs go where the host reads them.
    bare()
        .args(["config", "set", "text_word_count", "min_length=3"])
        .assert()
        .success();
    assert!(e.configs().join("text_word_count.json").exists());
    // Explicit dirs still win.
    bare()
        .args(["--plugins"])
        .arg(home.path())
        .arg("list")
        .assert()
        .success()
        .stdout(predicate::str::contains("text_word_count").not());
    drop(host);
    // A host that is gone lends nothing, even if its host.json stayed.
    bare()
        .arg("list")
        .assert()
        .success()
        .stdout(predicate::str::contains("text_word_count").not());
}

#[test]
fn ps_table_ends_with_a_newline() {
    let e = Env::new();
    let host = serve(&e);
    e.cmd().args(["start", "text_word_count"]).assert().success();
    let out = e.cmd().arg("ps").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("text_word_count"), "{text}");
    assert!(text.ends_with('\n'), "{text:?}");
    drop(host);
}

#[test]
fn concurrent_config_sets_of_different_keys_all_land_defect_7() {
    let e = Env::new();
    let plugins = e.dir.path().join("plugins/many");
    std::fs::create_dir_all(&plugins).unwrap();
    let props: Vec<String> = (0..8).map(|i| format!("k{i} = {{ type = \"integer\" }}")).collect();
    std::fs::write(
        plugins.join("plugin.toml"),
        format!(
            "name = \"many\"\ncategory = \"cfg\"\n[config_schema]\ntype = \"object\"\n[config_schema.properties]\n{}\n",
            props.join("\n")
        ),
    )
    .unwrap();
    let bin = assert_cmd::cargo::cargo_bin("plugboard");
    for round in 0..3 {
        let children: Vec<Child> = (0..8)
            .map(|i| {
                StdCommand::new(&bin)
                    .arg("--plugins")
                    .arg(e.dir.path().join("plugins"))
                    .arg("--config-dir")
                    .arg(e.configs())
                    .arg("--data-dir")
                    .arg(e.data())
                    .args(["config", "set", "cfg_many", &format!("k{i}={}", round * 10 + i)])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success());
        }
        let saved: Value =
            serde_json::from_str(&std::fs::read_to_string(e.configs().join("cfg_many.json")).unwrap()).unwrap();
        for i in 0..8 {
            assert_eq!(saved[format!("k{i}")], round * 10 + i, "round {round}: {saved}");
        }
    }
}

#[test]
fn budget_set_show_delete_and_cost() {
    let e = Env::new();
    e.cmd()
        .args(["budget", "set", "global", "--max-usd", "5", "--period", "day"])
        .assert()
        .success()
        .stdout(predicate::str::contains("budget global set"));
    e.cmd()
        .args([
            "budget",
            "set",
            "category:gpu",
            "--max-usd-per-hour",
            "2.5",
            "--period",
            "2026-11-01",
        ])
        .assert()
        .success();
    // Bad scopes, periods and empty budgets are usage errors naming the value.
    e.cmd()
        .args(["budget", "set", "a b", "--max-usd", "1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("\"a b\" is not a budget scope"));
    e.cmd()
        .args(["budget", "set", "global", "--max-usd", "1", "--period", "week"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a period"));
    e.cmd()
        .args(["budget", "set", "global"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("caps nothing"));
    e.cmd()
        .args(["budget", "set", "global", "--max-usd", "-3"])
        .assert()
        .code(2);
    let out = e.cmd().args(["budget", "show", "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let scopes: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["budget"]["scope"].as_str().unwrap())
        .collect();
    assert_eq!(scopes, ["global", "category:gpu"]);
    assert_eq!(v[1]["budget"]["period"], "since:2026-11-01");
    assert_eq!(v[0]["level"], "ok");
    e.cmd()
        .args(["budget", "show"])
        .assert()
        .success()
        .stdout(predicate::str::contains("$0.00 / $5.00 per day").and(predicate::str::contains("category:gpu")));
    e.cmd().args(["budget", "delete", "global"]).assert().success();
    e.cmd().args(["budget", "delete", "global"]).assert().code(3);
    let out = e.cmd().args(["cost", "--since", "month", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total_accrued_usd"], 0.0);
    assert!(v["since_ms"].as_i64().is_some());
    e.cmd().args(["cost", "--since", "yesterday"]).assert().code(2);
    // The file is plain JSON in the data dir, no secrets.
    let text = std::fs::read_to_string(e.data().join("budgets.json")).unwrap();
    assert!(text.contains("category:gpu"));
}
