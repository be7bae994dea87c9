//! A read-only view of the process table, from `/proc`.
//!
//! The seed left "children of children" as a comment; plugboard needs the
//! whole live tree under a plugin to report and end it, and needs a process's
//! start time so that a pid the kernel has since reused is never mistaken for
//! the one that was recorded. Only `/proc` is read here; signalling lives in
//! the host crate. On systems without `/proc` every query sees no processes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;

/// One process as `/proc/PID/stat` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Process group id.
    pub pgid: u32,
    /// Session id.
    pub sid: u32,
    /// Start time in clock ticks since boot (field 22): with the pid, the
    /// process's identity.
    pub start_time: u64,
    /// State letter (`R`, `S`, `Z`…).
    pub state: char,
}

impl ProcessInfo {
    /// True unless the process is a zombie (or dead, `X`): it still runs code.
    pub fn is_live(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

/// Parses the content of a `/proc/PID/stat` file.
///
/// The command name may hold spaces and parentheses, so fields are counted
/// from the last `)`.
///
/// ```
/// use plugboard_core::process::parse_stat;
///
/// let line = "42 (my (odd) name) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 123456 0 0";
/// let p = parse_stat(line).unwrap();
/// assert_eq!((p.pid, p.ppid, p.pgid, p.sid, p.start_time, p.state), (42, 1, 42, 42, 123456, 'S'));
/// ```
pub fn parse_stat(content: &str) -> Option<ProcessInfo> {
    let open = content.find('(')?;
    let close = content.rfind(')')?;
    let pid: u32 = content.get(..open)?.trim().parse().ok()?;
    let rest = content.get(close + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field N is fields[N - 3].
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let pgid = fields.get(2)?.parse().ok()?;
    let sid = fields.get(3)?.parse().ok()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some(ProcessInfo {
        pid,
        ppid,
        pgid,
        sid,
        start_time,
        state,
    })
}

/// Reads one process, or `None` when it does not exist (or cannot be read).
pub fn read_process(pid: u32) -> Option<ProcessInfo> {
    let content = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&content)
}

/// True when `pid` exists, is not a zombie, and (when given) started at
/// `start_time`: the test that keeps a reused pid from being taken for ours.
pub fn is_same_live_process(pid: u32, start_time: Option<u64>) -> bool {
    match read_process(pid) {
        Some(p) => p.is_live() && start_time.is_none_or(|t| t == p.start_time),
        None => false,
    }
}

/// Every process visible in `/proc` right now.
pub fn snapshot() -> Vec<ProcessInfo> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_process)
        .collect()
}

/// The live processes among `roots` and all their live descendants, found by
/// following parent links in one snapshot; roots first, then breadth-first.
///
/// A descendant whose parent has exited was re-parented (to init or to a
/// subreaper) and is no longer linked; the host keeps such processes linked by
/// being a subreaper itself, and finds the rest by their marker.
pub fn live_tree(roots: &[u32]) -> Vec<u32> {
    live_tree_in(&snapshot(), roots)
}

/// [`live_tree`] over a snapshot taken earlier.
pub fn live_tree_in(procs: &[ProcessInfo], roots: &[u32]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let mut live: HashSet<u32> = HashSet::new();
    for p in procs {
        if p.is_live() {
            live.insert(p.pid);
        }
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut queue: VecDeque<u32> = roots.iter().copied().collect();
    while let Some(pid) = queue.pop_front() {
        if !seen.insert(pid) {
            continue;
        }
        if live.contains(&pid) {
            out.push(pid);
        }
        if let Some(kids) = children.get(&pid) {
            queue.extend(kids.iter().copied());
        }
    }
    out
}

/// The value of `key` in a process's environment, if readable and present.
///
/// Used to find processes by the marker the host puts in their environment.
pub fn environ_var(pid: u32, key: &str) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/environ")).ok()?;
    raw.split(|b| *b == 0).find_map(|entry| {
        let rest = entry.strip_prefix(key.as_bytes())?.strip_prefix(b"=")?;
        Some(String::from_utf8_lossy(rest).into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, ppid: u32, state: char) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid,
            pgid: pid,
            sid: pid,
            start_time: 1,
            state,
        }
    }

    #[test]
    fn tree_follows_parents_and_skips_zombies() {
        let procs = [
            p(1, 0, 'S'),
            p(10, 1, 'S'),
            p(11, 10, 'S'),
            p(12, 11, 'Z'),
            p(13, 12, 'R'),
            p(20, 1, 'S'),
        ];
        assert_eq!(live_tree_in(&procs, &[10]), vec![10, 11, 13]);
        assert_eq!(live_tree_in(&procs, &[99]), Vec::<u32>::new());
    }

    #[test]
    fn stat_garbage_is_none() {
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("x (y) S"), None);
        assert_eq!(parse_stat("1 (y) S 1 2"), None);
    }

    #[test]
    fn own_process_is_seen() {
        let me = std::process::id();
        let info = read_process(me).expect("own /proc entry");
        assert!(is_same_live_process(me, Some(info.start_time)));
        assert!(!is_same_live_process(me, Some(info.start_time + 1)));
        assert!(live_tree(&[me]).contains(&me));
    }
}
