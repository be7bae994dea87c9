//! Containment by cgroup: every process plugin gets its own cgroup where
//! the system allows it, so a stop ends *everything* in it, even a process
//! that cleared its environment and left its group and session.
//!
//! * cgroup v2 (a `cgroup.controllers` file at the root): one directory,
//!   ended by writing `1` to `cgroup.kill` (Linux ≥ 5.14), else frozen and
//!   killed pid by pid.
//! * cgroup v1 (as root): a directory in the `freezer` hierarchy (frozen,
//!   killed, thawed, so nothing forks during the kill) and in `pids`
//!   (also holding the tree); `memory` and `cpu` ones when limits are given.
//!
//! Directories are named `plugboard/{ledger id}-{row id}`, which is the
//! marker again: gc finds them after a crash. Where no hierarchy is
//! writable the host falls back to process group, parent links and the
//! marker env var (docs/architecture.md says which guarantee holds where).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The cgroup file-system root.
pub const ROOT: &str = "/sys/fs/cgroup";
const PARENT: &str = "plugboard";

/// Resource limits applied through the cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU limit in cores (e.g. 0.5).
    pub cpus: Option<f64>,
}

/// One plugin's cgroup: a directory per hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    v2: bool,
}

fn is_v2(root: &Path) -> bool {
    root.join("cgroup.controllers").is_file()
}

/// The directory name for a marker (`{ledger id}:{row}` → `{ledger id}-{row}`).
pub fn dir_name(marker: &str) -> String {
    marker.replace(':', "-")
}

impl Cgroup {
    /// Creates the cgroup for `marker` with `limits`; `None` (with a debug
    /// log) where no hierarchy is writable.
    pub fn create(marker: &str, limits: Limits) -> Option<Cgroup> {
        Cgroup::create_in(Path::new(ROOT), marker, limits)
    }

    fn create_in(root: &Path, marker: &str, limits: Limits) -> Option<Cgroup> {
        let name = dir_name(marker);
        let v2 = is_v2(root);
        let mut hierarchies: Vec<PathBuf> = if v2 {
            vec![root.to_path_buf()]
        } else {
            vec![root.join("freezer"), root.join("pids")]
        };
        if !v2 {
            if limits.memory_bytes.is_some() {
                hierarchies.push(root.join("memory"));
            }
            if limits.cpus.is_some() {
                hierarchies.push(root.join("cpu"));
            }
        }
        let mut dirs = Vec::new();
        for h in hierarchies {
            let dir = h.join(PARENT).join(&name);
            match std::fs::create_dir_all(&dir) {
                Ok(()) => dirs.push(dir),
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "no cgroup here");
                    if dirs.is_empty() && (v2 || h.ends_with("freezer")) {
                        return None;
                    }
                }
            }
        }
        let cg = Cgroup { dirs, v2 };
        cg.apply(limits);
        Some(cg)
    }

    /// A cgroup from the directories recorded in the ledger.
    pub fn from_dirs(dirs: &[String]) -> Option<Cgroup> {
        if dirs.is_empty() {
            return None;
        }
        let dirs: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
        let v2 = dirs
            .first()
            .and_then(|d| d.parent())
            .and_then(|p| p.parent())
            .is_some_and(is_v2);
        Some(Cgroup { dirs, v2 })
    }

    /// The directories, for the ledger.
    pub fn dirs(&self) -> Vec<String> {
        self.dirs.iter().map(|d| d.to_string_lossy().into_owned()).collect()
    }

    fn apply(&self, limits: Limits) {
        for d in &self.dirs {
            let write = |file: &str, value: String| {
                if let Err(e) = std::fs::write(d.join(file), value.as_bytes()) {
                    tracing::warn!(dir = %d.display(), file, error = %e, "cannot apply a cgroup limit");
                }
            };
            if let Some(m) = limits.memory_bytes {
                if self.v2 {
                    write("memory.max", m.to_string());
                } else if d.starts_with(Path::new(ROOT).join("memory")) {
                    write("memory.limit_in_bytes", m.to_string());
                }
            }
            if let Some(c) = limits.cpus {
                let period = 100_000u64;
                let quota = ((c * period as f64).round() as u64).max(1000);
                if self.v2 {
                    write("cpu.max", format!("{quota} {period}"));
                } else if d.starts_with(Path::new(ROOT).join("cpu")) {
                    write("cpu.cfs_period_us", period.to_string());
                    write("cpu.cfs_quota_us", quota.to_string());
                }
            }
        }
    }

    /// The `cgroup.procs` files a child writes `0` to (before exec) to join.
    pub fn procs_files(&self) -> Vec<CString> {
        self.dirs
            .iter()
            .filter_map(|d| CString::new(d.join("cgroup.procs").into_os_string().into_encoded_bytes()).ok())
            .collect()
    }

    /// The pids in it now.
    pub fn pids(&self) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        for d in &self.dirs {
            if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
                out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        }
        out.sort_unstable();
        out.dedup();
        out.retain(|p| plugboard_core::process::read_process(*p).is_some_and(|i| i.is_live()));
        out
    }

    /// Sends `sig` to everything in it (frozen first on v1, so nothing forks
    /// in between).
    pub fn signal_all(&self, sig: Signal) -> Vec<u32> {
        let freezer = self
            .dirs
            .iter()
            .find(|d| d.starts_with(Path::new(ROOT).join("freezer")));
        if sig == Signal::SIGKILL {
            if self.v2
                && let Some(d) = self.dirs.first()
                && std::fs::write(d.join("cgroup.kill"), b"1").is_ok()
            {
                return self.pids();
            }
            if let Some(f) = freezer {
                let _ = std::fs::write(f.join("freezer.state"), b"FROZEN");
            }
        }
        let pids = self.pids();
        for &p in &pids {
            if let Ok(raw) = i32::try_from(p) {
                let _ = kill(Pid::from_raw(raw), sig);
            }
        }
        if sig == Signal::SIGKILL
            && let Some(f) = freezer
        {
            let _ = std::fs::write(f.join("freezer.state"), b"THAWED");
        }
        pids
    }

    /// Removes the directories once empty (waits up to `limit`). Returns
    /// false when something was still inside.
    pub fn remove(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let mut left = false;
            for d in &self.dirs {
                if d.exists() && std::fs::remove_dir(d).is_err() {
                    left = true;
                }
            }
            if !left {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The cgroups of `ledger_id` that exist now, with their row ids.
    pub fn list(ledger_id: &str) -> Vec<(i64, Cgroup)> {
        let root = Path::new(ROOT);
        let v2 = is_v2(root);
        let hierarchies: Vec<PathBuf> = if v2 {
            vec![root.to_path_buf()]
        } else {
            ["freezer", "pids", "memory", "cpu"]
                .iter()
                .map(|h| root.join(h))
                .collect()
        };
        let prefix = format!("{ledger_id}-");
        let mut by_row: std::collections::BTreeMap<i64, Vec<PathBuf>> = Default::default();
        for h in hierarchies {
            let Ok(entries) = std::fs::read_dir(h.join(PARENT)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(row) = name.strip_prefix(&prefix).and_then(|r| r.parse::<i64>().ok()) {
                    by_row.entry(row).or_default().push(e.path());
                }
            }
        }
        by_row
            .into_iter()
            .map(|(row, dirs)| (row, Cgroup { dirs, v2 }))
            .collect()
    }
}

/// Joins the cgroups whose `cgroup.procs` paths are given. Runs in a forked
/// child before exec: only async-signal-safe calls (open, write, close).
///
/// # Safety
///
/// Must only be called between fork and exec (as in `pre_exec`).
pub unsafe fn join_in_child(procs_files: &[CString]) {
    for f in procs_files {
        // SAFETY: a valid NUL-terminated path; plain syscalls.
        unsafe {
            let fd = nix::libc::open(f.as_ptr(), nix::libc::O_WRONLY | nix::libc::O_CLOEXEC);
            if fd >= 0 {
                let _ = nix::libc::write(fd, b"0".as_ptr().cast(), 1);
                nix::libc::close(fd);
            }
        }
    }
}
