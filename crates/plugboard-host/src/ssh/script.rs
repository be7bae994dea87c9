//! The shell scripts plugboard runs on a remote machine, and the parsing of
//! what they print.
//!
//! They are plain POSIX `sh` for any Linux (they read `/proc`; the marker
//! search uses `grep -z`, as GNU grep and BusyBox have it) and are pure
//! text here, so each one is tested by running it on this machine's own
//! `/bin/sh` against real processes, with no SSH in between.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::ledger::MARKER_ENV;

/// The first line a started remote worker's wrapper prints.
pub const STARTED_PREFIX: &str = "PLUGBOARD-REMOTE ";

/// Quotes `s` for a POSIX shell (single quotes; a `'` inside becomes `'\''`).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The command line to hand `ssh` for `script`: `/bin/sh` runs it whatever
/// the remote user's login shell is.
pub fn sh_c(script: &str) -> String {
    format!("exec /bin/sh -c {}", quote(script))
}

/// True for a name a shell accepts as an environment variable.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What the wrapper that starts a remote worker needs.
#[derive(Debug, Clone, PartialEq)]
pub struct StartSpec {
    /// The marker, exported as [`MARKER_ENV`].
    pub marker: String,
    /// Environment to export (names checked by [`is_env_name`]).
    pub env: BTreeMap<String, String>,
    /// Where to `cd` first, if anywhere.
    pub workdir: Option<String>,
    /// A socket path to remove before the start (a stale one from an earlier run).
    pub remove_first: Option<String>,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Environment variable that receives the first line of stdin (the
    /// bearer token: a secret never put on a remote command line).
    pub stdin_secret_env: Option<String>,
    /// Environment variable naming the descriptor a worker writes
    /// `READY=1` to (it is made a copy of stdout).
    pub notify_env: Option<String>,
}

/// The wrapper script that starts a remote worker: exports the marker and
/// the environment, reads the secret from stdin, prints one
/// [`STARTED_PREFIX`] line with the pid, process group, start time (clock
/// ticks since boot) and boot id, then `exec`s the worker, which so keeps
/// that pid and has the SSH channel as its stdin.
pub fn start_script(spec: &StartSpec) -> String {
    let mut s = String::from("umask 077\n");
    if let Some(var) = &spec.stdin_secret_env {
        let _ = writeln!(s, "IFS= read -r {var} || exit 125\nexport {var}");
    }
    let _ = writeln!(s, "export {MARKER_ENV}={}", quote(&spec.marker));
    for (k, v) in &spec.env {
        let _ = writeln!(s, "export {k}={}", quote(v));
    }
    if let Some(var) = &spec.notify_env {
        let _ = writeln!(s, "export {var}=3");
    }
    if let Some(dir) = &spec.workdir {
        let _ = writeln!(s, "cd {} || exit 125", quote(dir));
    }
    if let Some(p) = &spec.remove_first {
        let _ = writeln!(s, "rm -f {}", quote(p));
    }
    s.push_str(
        "st=$(cat /proc/$$/stat) || exit 125\n\
         st=${st##*) }\n\
         set -- $st\n\
         printf '%s%s %s %s %s\\n' 'PLUGBOARD-REMOTE ' \"$$\" \"$3\" \"${20}\" \"$(cat /proc/sys/kernel/random/boot_id)\"\n\
         exec 3>&1\n",
    );
    s.push_str("exec");
    for a in &spec.argv {
        s.push(' ');
        s.push_str(&quote(a));
    }
    s.push('\n');
    s
}

/// What the wrapper reported about a started worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// Its pid.
    pub pid: u32,
    /// Its process group.
    pub pgid: u32,
    /// Its start time, clock ticks since boot.
    pub start_time: u64,
    /// The remote machine's boot id.
    pub boot_id: String,
}

/// Parses the wrapper's [`STARTED_PREFIX`] line.
pub fn parse_started(line: &str) -> Option<Started> {
    let mut f = line.trim_end().strip_prefix(STARTED_PREFIX)?.split(' ');
    let started = Started {
        pid: f.next()?.parse().ok()?,
        pgid: f.next()?.parse().ok()?,
        start_time: f.next()?.parse().ok()?,
        boot_id: f.next().filter(|b| !b.is_empty())?.to_owned(),
    };
    f.next().is_none().then_some(started)
}

/// The shell function `marked` (pids whose environment carries exactly
/// `MARKER=marker`) and `members` (pids in the process group given).
fn finders(marker: &str) -> String {
    format!(
        "m={m}\n\
         marked() {{ for f in $(grep -lzxF \"{MARKER_ENV}=$m\" /proc/[0-9]*/environ 2>/dev/null); do \
           p=${{f#/proc/}}; p=${{p%/environ}}; [ \"$p\" = \"$$\" ] || echo \"$p\"; done; }}\n\
         members() {{ for f in /proc/[0-9]*/stat; do \
           {{ read -r s < \"$f\"; }} 2>/dev/null || continue; s=${{s##*) }}; set -- $s; \
           p=${{f#/proc/}}; p=${{p%/stat}}; \
           [ \"$3\" = \"$g\" ] && [ \"$1\" != Z ] && [ \"$p\" != \"$$\" ] && echo \"$p\"; done; }}\n",
        m = quote(marker)
    )
}

/// The recorded identity of a remote worker's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootIdentity {
    /// Root pid.
    pub pid: u32,
    /// Its process group.
    pub pgid: u32,
    /// Its start time.
    pub start_time: u64,
    /// The machine's boot id when it started.
    pub boot_id: String,
}

/// Shell that sets `root_ok=1` when the recorded root still is the same
/// process on the same boot and has not exited (a zombie has).
fn root_check(root: Option<&RootIdentity>) -> String {
    match root {
        None => "root_ok=0\ng=\n".into(),
        Some(r) => format!(
            "root_ok=0\ng={pgid}\n\
             read -r b < /proc/sys/kernel/random/boot_id\n\
             if [ \"$b\" = {boot} ] && {{ read -r s < /proc/{pid}/stat; }} 2>/dev/null; then \
               s=${{s##*) }}; set -- $s; [ \"$1\" != Z ] && [ \"${{20}}\" = {start} ] && root_ok=1; fi\n",
            pgid = r.pgid,
            boot = quote(&r.boot_id),
            pid = r.pid,
            start = r.start_time,
        ),
    }
}

/// Ends a remote worker's tree: everything carrying the marker, and the
/// recorded process group while its root still is the recorded process
/// (never a reused pid); SIGTERM, up to `grace`, SIGKILL, then a check.
/// Prints `TERM pids…`, `KILL pids…` and, when something survived,
/// `LEFT pids…` (exit status 3).
pub fn stop_script(marker: &str, root: Option<&RootIdentity>, grace: Duration) -> String {
    let rounds = (grace.as_millis() / 50).max(1);
    format!(
        "{finders}{check}\
         all() {{ marked; [ \"$root_ok\" = 1 ] && members; }}\n\
         list=$(all | sort -un | tr '\\n' ' ')\n\
         echo \"TERM $list\"\n\
         [ -n \"$list\" ] && kill -TERM $list 2>/dev/null\n\
         i=0\n\
         while [ $i -lt {rounds} ]; do list=$(all | sort -un | tr '\\n' ' '); [ -z \"$list\" ] && exit 0; sleep 0.05; i=$((i+1)); done\n\
         list=$(all | sort -un | tr '\\n' ' ')\n\
         echo \"KILL $list\"\n\
         [ -n \"$list\" ] && kill -KILL $list 2>/dev/null\n\
         i=0\n\
         while [ $i -lt 40 ]; do list=$(all | sort -un | tr '\\n' ' '); [ -z \"$list\" ] && exit 0; sleep 0.05; i=$((i+1)); done\n\
         echo \"LEFT $list\"\n\
         exit 3\n",
        finders = finders(marker),
        check = root_check(root),
    )
}

/// What a stop script reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Pids sent SIGTERM.
    pub termed: Vec<u32>,
    /// Pids that needed SIGKILL.
    pub killed: Vec<u32>,
    /// Pids still there after SIGKILL.
    pub left: Vec<u32>,
}

fn pids(s: &str) -> Vec<u32> {
    s.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// Parses a stop script's output.
pub fn parse_stop(out: &str) -> StopReport {
    let mut r = StopReport::default();
    for line in out.lines() {
        if let Some(p) = line.strip_prefix("TERM") {
            r.termed = pids(p);
        } else if let Some(p) = line.strip_prefix("KILL") {
            r.killed = pids(p);
        } else if let Some(p) = line.strip_prefix("LEFT") {
            r.left = pids(p);
        }
    }
    r
}

/// Prints `ALIVE` when the recorded root still runs (same start time, same
/// boot), `GONE` otherwise, then the pids carrying the marker.
pub fn check_script(marker: &str, root: Option<&RootIdentity>) -> String {
    format!(
        "{finders}{check}\
         if [ \"$root_ok\" = 1 ]; then echo ALIVE; else echo GONE; fi\n\
         echo \"MARKED $(marked | sort -un | tr '\\n' ' ')\"\n",
        finders = finders(marker),
        check = root_check(root),
    )
}

/// What a check script reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// The recorded root still runs.
    pub root_alive: bool,
    /// Pids carrying the marker.
    pub marked: Vec<u32>,
}

/// Parses a check script's output; `None` when it is not one.
pub fn parse_check(out: &str) -> Option<CheckReport> {
    let mut lines = out.lines();
    let root_alive = match lines.next()? {
        "ALIVE" => true,
        "GONE" => false,
        _ => return None,
    };
    let marked = pids(lines.next()?.strip_prefix("MARKED")?);
    Some(CheckReport { root_alive, marked })
}

/// Lists processes carrying a marker of `ledger_id`: one `PID ROW` line each.
pub fn sweep_script(ledger_id: &str) -> String {
    format!(
        "l={l}\n\
         for f in $(grep -lzF \"{MARKER_ENV}=$l:\" /proc/[0-9]*/environ 2>/dev/null); do \
           p=${{f#/proc/}}; p=${{p%/environ}}; [ \"$p\" = \"$$\" ] && continue; \
           r=$(tr '\\0' '\\n' < \"$f\" 2>/dev/null | grep \"^{MARKER_ENV}=$l:[0-9][0-9]*$\" | head -n 1); \
           [ -n \"$r\" ] && echo \"$p ${{r##*:}}\"; done\n\
         exit 0\n",
        l = quote(ledger_id)
    )
}

/// Parses a sweep script's output into (pid, row) pairs.
pub fn parse_sweep(out: &str) -> Vec<(u32, i64)> {
    out.lines()
        .filter_map(|l| {
            let (p, r) = l.split_once(' ')?;
            Some((p.parse().ok()?, r.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::process::CommandExt as _;
    use std::process::{Command, Stdio};

    use super::*;

    fn sh(script: &str) -> std::process::Output {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .output()
            .expect("run /bin/sh")
    }

    #[test]
    fn quoting_survives_the_shell() {
        for s in ["plain", "it's", "a b\tc", "$HOME `id` \\n \"q\"", "'", "", "ünïcode"] {
            let out = sh(&format!("printf '%s' {}", quote(s)));
            assert_eq!(String::from_utf8_lossy(&out.stdout), s);
            // Twice quoted, as sent through `ssh host exec /bin/sh -c '...'`.
            let out = sh(&sh_c(&format!("printf '%s' {}", quote(s))));
            assert_eq!(String::from_utf8_lossy(&out.stdout), s);
        }
    }

    #[test]
    fn env_names_are_checked() {
        assert!(is_env_name("A_1"));
        assert!(is_env_name("_x"));
        assert!(!is_env_name("1A"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name(""));
        assert!(!is_env_name("A B"));
    }

    fn spec(marker: &str, argv: &[&str]) -> StartSpec {
        StartSpec {
            marker: marker.into(),
            env: [("GREETING".to_string(), "it's \"here\"".to_string())].into(),
            workdir: Some("/tmp".into()),
            remove_first: None,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            stdin_secret_env: Some("SECRET".into()),
            notify_env: Some("NOTIFY".into()),
        }
    }

    #[test]
    fn the_start_wrapper_reports_the_pid_it_execs_into() {
        let script = start_script(&spec(
            "test-ledger:7",
            &[
                "/bin/sh",
                "-c",
                "echo \"$$ $SECRET $GREETING $NOTIFY $(pwd) $PLUGBOARD_RESOURCE_ID\"; echo READY=1 >&3",
            ],
        ));
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(sh_c(&script))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"s3cret\n")
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let started = parse_started(lines.next().expect("first line")).expect("started line");
        assert!(started.pgid > 0);
        assert_eq!(started.boot_id.len(), 36, "{started:?}");
        let own = lines.next().expect("second line");
        assert_eq!(
            own,
            format!("{} s3cret it's \"here\" 3 /tmp test-ledger:7", started.pid),
            "the worker runs as the reported pid"
        );
        assert_eq!(lines.next(), Some("READY=1"));
        // The secret is not on any command line: it came through stdin.
        assert!(!script.contains("s3cret"));
    }

    #[test]
    fn started_lines_are_parsed_strictly() {
        assert_eq!(
            parse_started("PLUGBOARD-REMOTE 10 9 123 abc\n"),
            Some(Started {
                pid: 10,
                pgid: 9,
                start_time: 123,
                boot_id: "abc".into()
            })
        );
        for bad in [
            "PLUGBOARD-REMOTE 10 9 123",
            "PLUGBOARD-REMOTE x 9 123 abc",
            "PLUGBOARD-REMOTE 10 9 123 abc extra",
            "hello",
        ] {
            assert_eq!(parse_started(bad), None, "{bad}");
        }
    }

    fn spawn_marked(marker: &str, ignore_term: bool) -> std::process::Child {
        let body = if ignore_term {
            "trap '' TERM; while :; do sleep 0.05; done"
        } else {
            "sleep 30 & wait"
        };
        Command::new("/bin/sh")
            .arg("-c")
            .arg(body)
            .env(MARKER_ENV, marker)
            .spawn()
            .expect("spawn")
    }

    fn ledger() -> String {
        format!("script-test-{}", std::process::id())
    }

    #[test]
    fn stop_ends_everything_carrying_the_marker_and_only_that() {
        let marker = format!("{}:1", ledger());
        let mut a = spawn_marked(&marker, false);
        let mut stubborn = spawn_marked(&marker, true);
        let mut other = spawn_marked(&format!("{}:2", ledger()), false);
        std::thread::sleep(Duration::from_millis(100));
        let found = parse_sweep(&String::from_utf8_lossy(&sh(&sweep_script(&ledger())).stdout));
        assert!(found.contains(&(a.id(), 1)), "{found:?}");
        assert!(found.contains(&(other.id(), 2)), "{found:?}");
        let out = sh(&stop_script(&marker, None, Duration::from_millis(300)));
        let report = parse_stop(&String::from_utf8_lossy(&out.stdout));
        assert!(out.status.success(), "{report:?}");
        assert!(
            report.termed.contains(&a.id()) && report.termed.contains(&stubborn.id()),
            "{report:?}"
        );
        assert!(report.killed.contains(&stubborn.id()), "{report:?}");
        assert!(report.left.is_empty());
        assert!(a.wait().is_ok() && stubborn.wait().is_ok());
        let check = parse_check(&String::from_utf8_lossy(&sh(&check_script(&marker, None)).stdout)).expect("check");
        assert!(check.marked.is_empty() && !check.root_alive);
        // The other marker's process was not touched.
        assert!(other.try_wait().expect("try_wait").is_none());
        let _ = other.kill();
        let _ = other.wait();
    }

    #[test]
    fn a_recorded_root_is_only_trusted_while_its_identity_holds() {
        let marker = format!("{}:3", ledger());
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg("sleep 30")
            .env_remove(MARKER_ENV)
            .process_group(0)
            .spawn()
            .expect("spawn");
        let pid = child.id();
        let p = plugboard_core::process::read_process(pid).expect("read");
        let boot = crate::ledger::boot_id();
        let root = RootIdentity {
            pid,
            pgid: pid,
            start_time: p.start_time,
            boot_id: boot.clone(),
        };
        let check = parse_check(&String::from_utf8_lossy(
            &sh(&check_script(&marker, Some(&root))).stdout,
        ));
        assert_eq!(check.map(|c| c.root_alive), Some(true));
        // Another start time: a reused pid, never signalled.
        let reused = RootIdentity {
            start_time: p.start_time + 1,
            ..root.clone()
        };
        let out = sh(&stop_script(&marker, Some(&reused), Duration::from_millis(100)));
        assert!(parse_stop(&String::from_utf8_lossy(&out.stdout)).termed.is_empty());
        assert!(child.try_wait().expect("try_wait").is_none());
        // The right identity: the group is ended though nothing carries the marker.
        let out = sh(&stop_script(&marker, Some(&root), Duration::from_millis(500)));
        let report = parse_stop(&String::from_utf8_lossy(&out.stdout));
        assert!(report.termed.contains(&pid), "{report:?}");
        assert!(child.wait().is_ok());
    }
}
