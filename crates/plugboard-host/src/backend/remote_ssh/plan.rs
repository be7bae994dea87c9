//! The remote_ssh `[launch]` table, checked before anything is created:
//! the destination, the worker's command, its environment and workdir,
//! uploads and the remote socket.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::HostError;
use crate::manifest::Manifest;
use crate::ssh::Destination;
use crate::ssh::script;

const KEYS: &str = "host, user, port, identity_file, known_hosts, jump_host, workdir, upload, remote_socket, connect_timeout_s, alive_interval_s";

/// The longest Unix socket path the remote side can bind.
pub(super) const SOCKET_PATH_MAX: usize = 103;

/// A checked remote_ssh launch.
pub(crate) struct RemoteSpec {
    pub dest: Destination,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    pub uploads: Vec<(PathBuf, String)>,
    pub remote_socket: Option<String>,
}

/// The default remote socket of a resource: `/tmp/plugboard-LEDGER-ROW.sock`.
pub fn default_remote_socket(marker: &str) -> String {
    format!("/tmp/plugboard-{}.sock", marker.replace(':', "-"))
}

/// `raw` as a local path: `~/` is the home directory, a relative path is
/// relative to the manifest's directory.
pub(crate) fn expand_path(dir: &Path, raw: &str) -> PathBuf {
    if let Some(rest) = raw.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    let p = PathBuf::from(raw);
    if p.is_absolute() { p } else { dir.join(p) }
}

/// Reads and checks the manifest's `[launch]` for remote_ssh.
pub(super) fn plan_spec(m: &Manifest, vars: &BTreeMap<String, String>) -> Result<RemoteSpec, HostError> {
    let bad = |key: &str, reason: String| HostError::BadLaunch {
        plugin: m.unique_id(),
        manifest: m.path.clone(),
        key: key.to_owned(),
        reason,
    };
    let undefined = |name: String| HostError::UndefinedVariable {
        plugin: m.unique_id(),
        name,
        manifest: m.path.clone(),
    };
    let expand = |s: &str| crate::launch::expand(s, vars).map_err(undefined);
    let l = &m.launch;
    if l.cwd.is_some() {
        return Err(bad(
            "cwd",
            "is not used by remote_ssh plugins; use launch.workdir (a directory on the remote machine)".into(),
        ));
    }
    if l.conda_env.is_some() {
        return Err(bad("conda_env", format!("is not a remote_ssh launch key ({KEYS})")));
    }
    for key in l.extra.keys() {
        if !KEYS.split(", ").any(|k| k == key) {
            return Err(bad(key, format!("is not a remote_ssh launch key ({KEYS})")));
        }
    }
    let string = |key: &str| -> Result<Option<String>, HostError> {
        match l.extra.get(key) {
            None => Ok(None),
            Some(v) => match v.as_str().filter(|s| !s.is_empty()) {
                Some(s) => Ok(Some(expand(s)?)),
                None => Err(bad(key, "must be a non-empty string".into())),
            },
        }
    };
    let seconds = |key: &str, default: u64| -> Result<Duration, HostError> {
        match l.extra.get(key) {
            None => Ok(Duration::from_secs(default)),
            Some(v) => v
                .as_integer()
                .filter(|s| (1..=3600).contains(s))
                .map(|s| Duration::from_secs(s as u64))
                .ok_or_else(|| bad(key, "must be a whole number of seconds from 1 to 3600".into())),
        }
    };
    let host = string("host")?.ok_or_else(|| HostError::MissingLaunch {
        plugin: m.unique_id(),
        field: "host",
        mode: m.execution_mode,
        manifest: m.path.clone(),
    })?;
    if host.starts_with('-') || host.chars().any(char::is_whitespace) {
        return Err(bad("host", format!("{host:?} is not a host name")));
    }
    let mut dest = Destination::new(host);
    dest.user = string("user")?;
    if let Some(u) = &dest.user
        && (u.starts_with('-') || u.contains(char::is_whitespace))
    {
        return Err(bad("user", format!("{u:?} is not a login name")));
    }
    dest.port = match l.extra.get("port") {
        None => None,
        Some(v) => Some(
            v.as_integer()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("port", "must be a port number from 1 to 65535".into()))?,
        ),
    };
    for key in ["identity_file", "known_hosts"] {
        let Some(raw) = string(key)? else { continue };
        let p = expand_path(&m.dir, &raw);
        if !p.is_file() {
            return Err(bad(key, format!("{} is not a readable file", p.display())));
        }
        if key == "identity_file" {
            dest.identity_file = Some(p);
        } else {
            dest.known_hosts = Some(p);
        }
    }
    dest.jump_host = string("jump_host")?;
    if let Some(j) = &dest.jump_host
        && crate::ssh::parse_jump(j).is_none()
    {
        return Err(bad(
            "jump_host",
            format!(
                "{j:?} is not one [user@]host[:port] (a chain of jump hosts belongs in ~/.ssh/config as ProxyJump)"
            ),
        ));
    }
    dest.connect_timeout = seconds("connect_timeout_s", 10)?;
    dest.alive_interval = seconds("alive_interval_s", 2)?;
    let w = worker_parts(m, vars)?;
    Ok(RemoteSpec {
        dest,
        argv: w.argv,
        env: w.env,
        workdir: w.workdir,
        uploads: w.uploads,
        remote_socket: w.remote_socket,
    })
}

/// The worker's part of a launch table (shared with the cloud backends,
/// which start their workers over SSH): `command`/`args`, `env`,
/// `workdir`, `upload`, `remote_socket`.
pub(crate) struct WorkerParts {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    pub uploads: Vec<(PathBuf, String)>,
    pub remote_socket: Option<String>,
}

/// Reads the worker's part of a launch table (see [`WorkerParts`]).
pub(crate) fn worker_parts(m: &Manifest, vars: &BTreeMap<String, String>) -> Result<WorkerParts, HostError> {
    let bad = |key: &str, reason: String| HostError::BadLaunch {
        plugin: m.unique_id(),
        manifest: m.path.clone(),
        key: key.to_owned(),
        reason,
    };
    let undefined = |name: String| HostError::UndefinedVariable {
        plugin: m.unique_id(),
        name,
        manifest: m.path.clone(),
    };
    let expand = |s: &str| crate::launch::expand(s, vars).map_err(undefined);
    let l = &m.launch;
    let string = |key: &str| -> Result<Option<String>, HostError> {
        match l.extra.get(key) {
            None => Ok(None),
            Some(v) => match v.as_str().filter(|s| !s.is_empty()) {
                Some(s) => Ok(Some(expand(s)?)),
                None => Err(bad(key, "must be a non-empty string".into())),
            },
        }
    };
    let command = l.command.as_deref().ok_or_else(|| HostError::MissingLaunch {
        plugin: m.unique_id(),
        field: "command",
        mode: m.execution_mode,
        manifest: m.path.clone(),
    })?;
    let mut argv = vec![expand(command)?];
    for a in &l.args {
        argv.push(expand(a)?);
    }
    let mut env = BTreeMap::new();
    for (k, v) in &l.env {
        if !script::is_env_name(k) {
            return Err(bad("env", format!("{k:?} is not an environment variable name")));
        }
        env.insert(k.clone(), expand(v)?);
    }
    let workdir = string("workdir")?;
    let mut uploads = Vec::new();
    if let Some(v) = l.extra.get("upload") {
        let shape = || bad("upload", "must be a list of \"LOCAL[:REMOTE]\" file paths".into());
        for item in v.as_array().ok_or_else(shape)? {
            let s = expand(item.as_str().ok_or_else(shape)?)?;
            let (local, remote) = match s.split_once(':') {
                Some((l, r)) if !r.is_empty() => (l.to_owned(), r.to_owned()),
                _ => {
                    let name = Path::new(&s)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .ok_or_else(|| bad("upload", format!("{s:?} names no file")))?;
                    (s.clone(), name)
                }
            };
            let local = expand_path(&m.dir, &local);
            if !local.is_file() {
                return Err(bad(
                    "upload",
                    format!("{} is not a file (directories are not uploaded)", local.display()),
                ));
            }
            uploads.push((local, remote));
        }
    }
    let remote_socket = string("remote_socket")?;
    if let Some(s) = &remote_socket
        && (!s.starts_with('/') || s.contains(':') || s.len() > SOCKET_PATH_MAX)
    {
        return Err(bad(
            "remote_socket",
            format!("must be an absolute path without ':' of at most {SOCKET_PATH_MAX} bytes"),
        ));
    }
    Ok(WorkerParts {
        argv,
        env,
        workdir,
        uploads,
        remote_socket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(launch: &str) -> Result<RemoteSpec, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("key"), "k").map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("worker.py"), "print()").map_err(|e| e.to_string())?;
        let text = format!("name = \"r\"\ncategory = \"test\"\nexecution_mode = \"remote_ssh\"\n[launch]\n{launch}\n");
        let path = dir.path().join("plugin.toml");
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        let m = Manifest::load(&path).map_err(|e| e.to_string())?;
        plan_spec(&m, &BTreeMap::new()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_launch_table_plans() {
        let s = manifest(
            "host = \"gpu-box\"\nuser = \"me\"\nport = 2222\nidentity_file = \"key\"\njump_host = \"bastion\"\n\
             command = \"python3\"\nargs = [\"worker.py\"]\nenv = { MODEL = \"small\" }\nworkdir = \"/srv/w\"\n\
             upload = [\"worker.py\", \"worker.py:lib/w.py\"]\nremote_socket = \"/run/user/1000/w.sock\"\n\
             connect_timeout_s = 5\nalive_interval_s = 1",
        )
        .expect("plans");
        assert_eq!(s.dest.display(), "me@gpu-box:2222");
        assert!(s.dest.identity_file.as_ref().is_some_and(|p| p.ends_with("key")));
        assert_eq!(s.argv, vec!["python3", "worker.py"]);
        assert_eq!(s.uploads.len(), 2);
        assert_eq!(s.uploads[0].1, "worker.py");
        assert_eq!(s.uploads[1].1, "lib/w.py");
        assert_eq!(s.dest.alive_interval, Duration::from_secs(1));
        assert_eq!(s.remote_socket.as_deref(), Some("/run/user/1000/w.sock"));
    }

    #[test]
    fn bad_launch_tables_name_the_key() {
        for (launch, key) in [
            ("command = \"w\"", "host"),
            ("host = \"h\"", "command"),
            ("host = \"h\"\ncommand = \"w\"\nport = 70000", "port"),
            (
                "host = \"h\"\ncommand = \"w\"\nidentity_file = \"missing\"",
                "identity_file",
            ),
            (
                "host = \"h\"\ncommand = \"w\"\nknown_hosts = \"missing\"",
                "known_hosts",
            ),
            ("host = \"h\"\ncommand = \"w\"\nupload = [\"missing.py\"]", "upload"),
            ("host = \"h\"\ncommand = \"w\"\nupload = \"worker.py\"", "upload"),
            ("host = \"h\"\ncommand = \"w\"\nenv = { \"A-B\" = \"1\" }", "env"),
            (
                "host = \"h\"\ncommand = \"w\"\nremote_socket = \"rel.sock\"",
                "remote_socket",
            ),
            (
                "host = \"h\"\ncommand = \"w\"\nalive_interval_s = 0",
                "alive_interval_s",
            ),
            ("host = \"-oProxyCommand=x\"\ncommand = \"w\"", "host"),
            ("host = \"h\"\ncommand = \"w\"\ncwd = \"x\"", "cwd"),
            ("host = \"h\"\ncommand = \"w\"\njump_host = \"a,b\"", "jump_host"),
            ("host = \"h\"\ncommand = \"w\"\nimage = \"x\"", "image"),
        ] {
            let e = match manifest(launch) {
                Ok(_) => panic!("{launch} planned"),
                Err(e) => e,
            };
            assert!(e.contains(key), "{launch}: {e}");
        }
    }

    #[test]
    fn the_default_remote_socket_is_short_and_has_no_colon() {
        let s = default_remote_socket("0123456789abcdef0123456789abcdef:12345");
        assert!(!s.contains(':') && s.len() <= SOCKET_PATH_MAX, "{s}");
    }
}
