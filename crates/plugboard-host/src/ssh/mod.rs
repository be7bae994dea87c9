//! The SSH launcher: run and watch processes on other machines, reached
//! with the system OpenSSH client, for the remote_ssh backend and for the
//! cloud backends that start workers on the instances they create.
//!
//! Why the system client: it brings the user's whole SSH setup for free
//! (`~/.ssh/config` host aliases, agents, certificates, `ProxyJump`, the
//! known_hosts format and its hashing) and it is the most audited SSH code
//! there is. Why not through the `openssh` crate: its control master is
//! started with `-f` and so daemonizes away from the host; a host killed
//! with SIGKILL would leave it (and its forwards) running. Here the master
//! and every multiplexed client are plain children of the host with a
//! parent-death signal, like process workers: when the host dies they die,
//! the connection closes, and the remote workers read EOF on stdin and
//! exit. Each connection is one `ssh -M -N` per destination ([`Master`]),
//! shared by every worker and command to that destination through its
//! control socket ([`Connections`]).
//!
//! Host keys are always checked (`StrictHostKeyChecking=yes`) and no prompt
//! is ever shown (`BatchMode=yes`); a refused key or login is an
//! [`SshError`] that says what to do. The one exception is a cloud instance
//! created a moment ago ([`Destination::accept_new_host_key`]): its key is
//! taken on first contact into a known_hosts file of its own and pinned.

pub mod master;
pub mod script;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

pub use master::{Connections, Master};

/// Where and how to reach a remote machine.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Host name, address or `~/.ssh/config` alias.
    pub host: String,
    /// Login name (else the config's or the local user's).
    pub user: Option<String>,
    /// Port (else the config's or 22).
    pub port: Option<u16>,
    /// Private key to use, alone (`IdentitiesOnly`).
    pub identity_file: Option<PathBuf>,
    /// known_hosts file to check the host key against (else the user's).
    pub known_hosts: Option<PathBuf>,
    /// A jump host, `[user@]host[:port]`, reached with the same
    /// known_hosts, identity and options (unlike `ssh -J`, whose inner
    /// connection reads only `~/.ssh/config`).
    pub jump_host: Option<String>,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// Keepalive interval: a silent connection is declared dropped after
    /// three missed answers.
    pub alive_interval: Duration,
    /// Trust the host key on first contact (`StrictHostKeyChecking=accept-new`)
    /// and pin it in `known_hosts` from then on: for a cloud instance
    /// created a moment ago, whose key no one could have known, with a
    /// known_hosts file of its own.
    pub accept_new_host_key: bool,
}

impl Destination {
    /// A destination with default settings (10 s to connect, keepalive every 2 s).
    pub fn new(host: impl Into<String>) -> Destination {
        Destination {
            host: host.into(),
            user: None,
            port: None,
            identity_file: None,
            known_hosts: None,
            jump_host: None,
            connect_timeout: Duration::from_secs(10),
            alive_interval: Duration::from_secs(2),
            accept_new_host_key: false,
        }
    }

    /// `user@host:port` for messages, with what is known.
    pub fn display(&self) -> String {
        let mut s = String::new();
        if let Some(u) = &self.user {
            s.push_str(u);
            s.push('@');
        }
        s.push_str(&self.host);
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s
    }

    /// How long a dropped connection can go unnoticed: three keepalives.
    pub fn drop_detection(&self) -> Duration {
        self.alive_interval * 3
    }

    /// The options every `ssh` run for this destination gets (before the
    /// host argument).
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut opt = |s: String| {
            a.push("-o".into());
            a.push(s.into());
        };
        opt("BatchMode=yes".into());
        opt(format!("StrictHostKeyChecking={}", self.strict_host_key_checking()));
        opt(format!("ConnectTimeout={}", self.connect_timeout.as_secs().max(1)));
        opt(format!("ServerAliveInterval={}", self.alive_interval.as_secs().max(1)));
        opt("ServerAliveCountMax=3".into());
        opt("LogLevel=ERROR".into());
        if let Some(k) = &self.known_hosts {
            opt(format!("UserKnownHostsFile={}", k.display()));
        }
        if let Some(i) = &self.identity_file {
            opt("IdentitiesOnly=yes".into());
            a.push("-i".into());
            a.push(i.clone().into());
        }
        if let Some(p) = self.port {
            a.push("-p".into());
            a.push(p.to_string().into());
        }
        if let Some(u) = &self.user {
            a.push("-l".into());
            a.push(u.into());
        }
        if let Some(j) = self.jump_host.as_deref().and_then(parse_jump) {
            a.push("-o".into());
            a.push(format!("ProxyCommand={}", self.jump_command(&j)).into());
        }
        a
    }

    fn strict_host_key_checking(&self) -> &'static str {
        if self.accept_new_host_key { "accept-new" } else { "yes" }
    }

    /// The `ProxyCommand` that reaches the target through the jump host
    /// with this destination's own checks and key.
    fn jump_command(&self, jump: &Jump) -> String {
        // ssh expands `%` tokens in ProxyCommand: a literal one is `%%`.
        let q = |s: &str| script::quote(&s.replace('%', "%%"));
        let mut c = format!(
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout={} -o LogLevel=ERROR",
            self.connect_timeout.as_secs().max(1)
        );
        if let Some(k) = &self.known_hosts {
            c.push_str(&format!(" -o UserKnownHostsFile={}", q(&k.to_string_lossy())));
        }
        if let Some(i) = &self.identity_file {
            c.push_str(&format!(" -o IdentitiesOnly=yes -i {}", q(&i.to_string_lossy())));
        }
        if let Some(p) = jump.port {
            c.push_str(&format!(" -p {p}"));
        }
        if let Some(u) = &jump.user {
            c.push_str(&format!(" -l {}", q(u)));
        }
        c.push_str(&format!(" -W %h:%p -- {}", q(&jump.host)));
        c
    }

    /// What the ledger records about it (no secrets: paths, not keys).
    pub fn to_details(&self) -> Value {
        json!({
            "host": self.host,
            "user": self.user,
            "port": self.port,
            "identity_file": self.identity_file,
            "known_hosts": self.known_hosts,
            "jump_host": self.jump_host,
            "connect_timeout_s": self.connect_timeout.as_secs(),
            "alive_interval_s": self.alive_interval.as_secs(),
            "accept_new_host_key": self.accept_new_host_key,
        })
    }

    /// Reads back [`to_details`](Self::to_details) (from a ledger row).
    pub fn from_details(v: &Value) -> Result<Destination, String> {
        let host = v
            .get("host")
            .and_then(Value::as_str)
            .filter(|h| !h.is_empty())
            .ok_or("no SSH host is recorded")?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let mut d = Destination::new(host);
        d.user = s("user");
        d.port = v
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok());
        d.identity_file = s("identity_file").map(PathBuf::from);
        d.known_hosts = s("known_hosts").map(PathBuf::from);
        d.jump_host = s("jump_host");
        if let Some(t) = v.get("connect_timeout_s").and_then(Value::as_u64) {
            d.connect_timeout = Duration::from_secs(t.max(1));
        }
        if let Some(t) = v.get("alive_interval_s").and_then(Value::as_u64) {
            d.alive_interval = Duration::from_secs(t.max(1));
        }
        d.accept_new_host_key = v.get("accept_new_host_key").and_then(Value::as_bool).unwrap_or(false);
        Ok(d)
    }
}

/// A parsed jump host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jump {
    /// Its login, if given.
    pub user: Option<String>,
    /// Its host.
    pub host: String,
    /// Its port, if given.
    pub port: Option<u16>,
}

/// Parses `[user@]host[:port]` (one hop; `None` for anything else).
pub fn parse_jump(s: &str) -> Option<Jump> {
    if s.is_empty() || s.starts_with('-') || s.contains([',', ' ', '\t', '\'', '"']) {
        return None;
    }
    let (user, rest) = match s.split_once('@') {
        Some((u, r)) if !u.is_empty() => (Some(u.to_owned()), r),
        Some(_) => return None,
        None => (None, s),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().ok().filter(|p| *p > 0)?)),
        None => (rest, None),
    };
    (!host.is_empty() && !host.starts_with('-')).then(|| Jump {
        user,
        host: host.to_owned(),
        port,
    })
}

/// Errors of the SSH launcher, each naming the destination.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The host's key is not in known_hosts: refused, nothing started.
    #[error(
        "the host key of {destination} is not in {known_hosts}; check its fingerprint, then add it with `ssh-keyscan{port} {host} >> {known_hosts}`"
    )]
    UnknownHostKey {
        /// The destination.
        destination: String,
        /// `-p PORT` or nothing.
        port: String,
        /// The host to scan.
        host: String,
        /// The known_hosts file consulted.
        known_hosts: String,
    },
    /// The host's key differs from the one in known_hosts.
    #[error("the host key of {destination} does not match known_hosts (refused; it may be impersonated): {detail}")]
    HostKeyChanged {
        /// The destination.
        destination: String,
        /// What ssh said.
        detail: String,
    },
    /// The login was refused (wrong or missing key).
    #[error("{destination} refused the login: {detail}; check identity_file and the remote user's authorized_keys")]
    LoginRefused {
        /// The destination.
        destination: String,
        /// What ssh said.
        detail: String,
    },
    /// Connecting failed otherwise.
    #[error("cannot connect to {destination}: {detail}")]
    Connect {
        /// The destination.
        destination: String,
        /// What ssh said.
        detail: String,
    },
    /// A step did not finish in time.
    #[error("{destination}: {what} took longer than {secs:.0} s")]
    Timeout {
        /// The destination.
        destination: String,
        /// The step.
        what: String,
        /// The limit.
        secs: f64,
    },
    /// The ssh program could not be run.
    #[error("cannot run ssh: {0}")]
    Spawn(#[source] std::io::Error),
    /// A remote command failed.
    #[error("{destination}: {what} failed: {detail}")]
    Remote {
        /// The destination.
        destination: String,
        /// The command, in words.
        what: String,
        /// Its exit status and output.
        detail: String,
    },
}

impl SshError {
    /// Classifies what a failed `ssh` printed on stderr.
    pub fn from_stderr(dest: &Destination, stderr: &str) -> SshError {
        let destination = dest.display();
        let detail = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let detail = if detail.is_empty() {
            "ssh exited without saying why".to_owned()
        } else {
            detail
        };
        if detail.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || detail.contains("key for") && detail.contains("has changed")
        {
            SshError::HostKeyChanged { destination, detail }
        } else if detail.contains("host key is known for") || detail.contains("Host key verification failed") {
            let known_hosts = dest
                .known_hosts
                .as_ref()
                .map(|k| k.display().to_string())
                .unwrap_or_else(|| "~/.ssh/known_hosts".into());
            SshError::UnknownHostKey {
                destination,
                port: dest.port.map(|p| format!(" -p {p}")).unwrap_or_default(),
                host: dest.host.clone(),
                known_hosts,
            }
        } else if detail.contains("Permission denied") || detail.contains("Too many authentication failures") {
            SshError::LoginRefused { destination, detail }
        } else {
            SshError::Connect { destination, detail }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_round_trip_through_the_ledger_details() {
        let mut d = Destination::new("gpu-box");
        d.user = Some("me".into());
        d.port = Some(2222);
        d.identity_file = Some("/k/id".into());
        d.known_hosts = Some("/k/known".into());
        d.jump_host = Some("bastion".into());
        d.alive_interval = Duration::from_secs(5);
        assert_eq!(Destination::from_details(&d.to_details()), Ok(d.clone()));
        assert_eq!(d.display(), "me@gpu-box:2222");
        assert!(Destination::from_details(&json!({})).is_err());
    }

    #[test]
    fn the_options_never_allow_a_prompt_or_an_unknown_key() {
        let a: Vec<String> = Destination::new("h")
            .args()
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert!(a.contains(&"BatchMode=yes".to_string()));
        assert!(a.contains(&"StrictHostKeyChecking=yes".to_string()));
    }

    #[test]
    fn jump_hosts_are_parsed_strictly() {
        assert_eq!(
            parse_jump("me@bastion:2200"),
            Some(Jump {
                user: Some("me".into()),
                host: "bastion".into(),
                port: Some(2200)
            })
        );
        assert_eq!(parse_jump("bastion").map(|j| j.port), Some(None));
        for bad in ["", "-oProxyCommand=x", "a,b", "@h", "h:0", "h:x", "h o", "h'"] {
            assert_eq!(parse_jump(bad), None, "{bad}");
        }
        let mut d = Destination::new("target");
        d.jump_host = Some("me@bastion:2200".into());
        d.known_hosts = Some("/k/known 100%".into());
        let args: Vec<String> = d.args().iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let proxy = args.iter().find(|a| a.starts_with("ProxyCommand=")).expect("proxy");
        assert!(
            proxy.contains("-W %h:%p -- 'bastion'") && proxy.contains("'/k/known 100%%'"),
            "{proxy}"
        );
    }

    #[test]
    fn ssh_failures_are_classified_with_advice() {
        let mut d = Destination::new("127.0.0.1");
        d.port = Some(2222);
        d.known_hosts = Some("/tmp/kh".into());
        let e = SshError::from_stderr(
            &d,
            "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\r\nHost key verification failed.\r\n",
        );
        assert!(matches!(e, SshError::UnknownHostKey { .. }), "{e}");
        assert!(
            e.to_string().contains("ssh-keyscan -p 2222 127.0.0.1 >> /tmp/kh"),
            "{e}"
        );
        let e = SshError::from_stderr(&d, "me@127.0.0.1: Permission denied (publickey).");
        assert!(matches!(e, SshError::LoginRefused { .. }), "{e}");
        let e = SshError::from_stderr(&d, "ssh: connect to host 127.0.0.1 port 2222: Connection refused");
        assert!(matches!(e, SshError::Connect { .. }), "{e}");
        let e = SshError::from_stderr(&d, "");
        assert!(e.to_string().contains("without saying why"));
    }
}
