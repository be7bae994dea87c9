//! A real OpenSSH server on loopback for the remote_ssh tests and bench:
//! throwaway host and user keys, its own known_hosts, a free port; stopped
//! by pid. Standalone (the ssh bench includes it too).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn wait_until_blocking(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while !cond() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

pub struct Sshd {
    pub port: u16,
    pub identity: PathBuf,
    pub known_hosts: PathBuf,
    pub dir: PathBuf,
    child: Option<Child>,
}

fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ssh-keygen failed for {}", path.display());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_sshd(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sshd")
}

impl Sshd {
    /// Starts sshd in `dir`, or returns `None` (printing why) when there is
    /// none here; under CI a missing sshd fails the test instead.
    pub fn start(dir: &Path) -> Option<Sshd> {
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.exists() {
            if std::env::var_os("CI").is_some() {
                panic!("/usr/sbin/sshd is required under CI (apt-get install openssh-server)");
            }
            eprintln!("SKIP: /usr/sbin/sshd not found (apt-get install openssh-server)");
            return None;
        }
        let dir = dir.join("sshd");
        std::fs::create_dir_all(&dir).unwrap();
        // Privilege separation wants this directory when run as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let host_key = dir.join("host_key");
        let identity = dir.join("id_user");
        keygen(&host_key);
        keygen(&identity);
        std::fs::copy(dir.join("id_user.pub"), dir.join("authorized_keys")).unwrap();
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nListenAddress 127.0.0.2\nPort {port}\nHostKey {hk}\nPidFile {dir}/sshd.pid\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n\
                 AllowTcpForwarding yes\nAllowStreamLocalForwarding yes\nStreamLocalBindUnlink yes\n\
                 StrictModes no\nMaxSessions 100\nMaxStartups 100\nLogLevel ERROR\n",
                hk = host_key.display(),
                dir = dir.display(),
            ),
        )
        .unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        let pubkey = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let mut fields = pubkey.split_whitespace();
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, {
            let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
            // 127.0.0.2 is the same server, for going through a jump host.
            format!("[127.0.0.1]:{port} {kind} {key}\n[127.0.0.2]:{port} {kind} {key}\n")
        })
        .unwrap();
        let up = wait_until_blocking(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            up,
            "sshd did not listen: {}",
            std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
        );
        Some(Sshd {
            port,
            identity,
            known_hosts,
            dir,
            child: Some(child),
        })
    }

    /// The server another process started in `dir` (its `sshd` folder), on `port`.
    pub fn attach(dir: &Path, port: u16) -> Sshd {
        Sshd {
            port,
            identity: dir.join("id_user"),
            known_hosts: dir.join("known_hosts"),
            dir: dir.to_path_buf(),
            child: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILLs every connection's sshd processes (the listener stays):
    /// connections drop as if the network had, and the sessions' pipes close.
    pub fn kill_connections(&self) -> usize {
        let procs = plugboard_core::process::snapshot();
        let mut ours = vec![self.pid()];
        let mut n = 0;
        // Descendants of the listener that are sshd (monitor and session
        // processes), not the programs they run.
        loop {
            let next: Vec<u32> = procs
                .iter()
                .filter(|p| ours.contains(&p.ppid) && !ours.contains(&p.pid) && is_sshd(p.pid))
                .map(|p| p.pid)
                .collect();
            if next.is_empty() {
                break;
            }
            ours.extend(next);
        }
        for pid in &ours[1..] {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            n += 1;
        }
        n
    }

    /// The `[launch]` keys that reach this server.
    pub fn launch_keys(&self) -> String {
        format!(
            "host = \"127.0.0.1\"\nport = {}\nidentity_file = \"{}\"\nknown_hosts = \"{}\"\n",
            self.port,
            self.identity.display(),
            self.known_hosts.display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
