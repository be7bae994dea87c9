//! The dead-man lease: a watchdog the instance runs from its first boot
//! (cloud-init user data) that powers the instance off when its host has
//! not renewed the lease for `lease` seconds. The host renews it over SSH
//! while it supervises the worker ([`renew_script`]); a host that dies,
//! loses the network or never comes back stops renewing, and the instance
//! ends itself even if no plugboard ever runs again.
//!
//! On EC2 the instance is created with shutdown behaviour `terminate`, so
//! the power-off ends the instance and its billing. Providers with no such
//! setting (Lambda Cloud keeps billing a powered-off instance until it is
//! terminated) get the power-off (the workload stops) and the sweep of the
//! next `plugboard gc` terminates it.
//!
//! The lease starts at boot, so the time to reach the instance over SSH is
//! covered too. The scripts are plain `/bin/sh` text; their tests run them
//! on the local shell against a stand-in `poweroff`.

use std::time::Duration;

use crate::ssh::script::quote;

/// The lease file on the instance for `marker`.
pub fn lease_file(marker: &str) -> String {
    format!("/var/tmp/{}.lease", super::marker_name(marker))
}

/// How often the watchdog looks at the lease: a third of it, between 1 s
/// and 30 s.
pub fn check_interval(lease: Duration) -> Duration {
    (lease / 3).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// How often the host renews: a quarter of the lease, at least every
/// second, so two renewals can be lost before it lapses.
pub fn renew_interval(lease: Duration) -> Duration {
    (lease / 4).max(Duration::from_secs(1))
}

/// The boot script (user data) starting the watchdog for `marker`.
///
/// It creates the lease file (writable by the SSH user, who renews it),
/// then checks its age every [`check_interval`]; past `lease` it logs why
/// and runs `shutdown -h now` (or `poweroff`). With `max_lifetime` it also
/// powers off that long after boot, renewed or not.
pub fn boot_script(marker: &str, lease: Duration, max_lifetime: Option<Duration>) -> String {
    let file = quote(&lease_file(marker));
    let secs = lease.as_secs().max(1);
    let every = check_interval(lease).as_secs();
    let life = max_lifetime.map(|d| d.as_secs().max(1)).unwrap_or(0);
    format!(
        "#!/bin/sh\n\
         # plugboard lease watchdog: this instance powers itself off when the\n\
         # plugboard host that created it stops renewing its lease.\n\
         lease={file}\n\
         touch \"$lease\" && chmod 666 \"$lease\"\n\
         (\n\
         trap '' HUP\n\
         born=$(date +%s)\n\
         while sleep {every}; do\n\
         \x20 now=$(date +%s)\n\
         \x20 last=$(stat -c %Y \"$lease\" 2>/dev/null || echo 0)\n\
         \x20 why=\n\
         \x20 [ $((now - last)) -gt {secs} ] && why=\"lease $lease not renewed for {secs} s\"\n\
         \x20 [ {life} -gt 0 ] && [ $((now - born)) -ge {life} ] && why=\"max_lifetime_s = {life} reached\"\n\
         \x20 if [ -n \"$why\" ]; then\n\
         \x20   echo \"plugboard: $why: powering off\" | logger -t plugboard 2>/dev/null\n\
         \x20   shutdown -h now 2>/dev/null || poweroff\n\
         \x20   exit 0\n\
         \x20 fi\n\
         done\n\
         ) </dev/null >/dev/null 2>&1 &\n"
    )
}

/// The command the host runs over SSH to renew the lease of `marker`.
pub fn renew_script(marker: &str) -> String {
    format!("touch {}\n", quote(&lease_file(marker)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Instant;

    #[test]
    fn intervals_scale_with_the_lease() {
        assert_eq!(check_interval(Duration::from_secs(600)), Duration::from_secs(30));
        assert_eq!(check_interval(Duration::from_secs(3)), Duration::from_secs(1));
        assert_eq!(renew_interval(Duration::from_secs(600)), Duration::from_secs(150));
        assert_eq!(renew_interval(Duration::from_secs(2)), Duration::from_secs(1));
    }

    /// Runs the boot script with a stand-in `shutdown` that records the
    /// power-off in `dir`.
    fn boot(dir: &std::path::Path, marker: &str, lease: Duration) {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        let off = dir.join("powered-off");
        for name in ["shutdown", "poweroff"] {
            let p = bin.join(name);
            std::fs::write(&p, format!("#!/bin/sh\necho \"$0 $*\" >> {}\n", off.display())).expect("stub");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let status = Command::new("sh")
            .arg("-c")
            .arg(boot_script(marker, lease, None))
            .env("PATH", path)
            .status()
            .expect("sh runs");
        assert!(status.success());
    }

    fn wait_for(path: &std::path::Path, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if path.exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        path.exists()
    }

    #[test]
    fn an_unrenewed_lease_powers_the_machine_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = format!("leasetest{}:1", std::process::id());
        boot(dir.path(), &marker, Duration::from_secs(2));
        let file = lease_file(&marker);
        assert!(std::path::Path::new(&file).exists(), "the lease starts at boot");
        assert!(
            wait_for(&dir.path().join("powered-off"), Duration::from_secs(10)),
            "no power-off within 10 s of a 2 s lease"
        );
        let said = std::fs::read_to_string(dir.path().join("powered-off")).unwrap_or_default();
        assert!(said.contains("shutdown -h now"), "{said}");
        let _ = std::fs::remove_file(file);
    }

    #[test]
    fn a_renewed_lease_keeps_the_machine_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = format!("leasetest{}:2", std::process::id());
        boot(dir.path(), &marker, Duration::from_secs(3));
        let renew = renew_script(&marker);
        let end = Instant::now() + Duration::from_secs(7);
        while Instant::now() < end {
            let ok = Command::new("sh").arg("-c").arg(&renew).status().expect("sh");
            assert!(ok.success());
            std::thread::sleep(Duration::from_millis(500));
        }
        assert!(
            !dir.path().join("powered-off").exists(),
            "powered off though renewed every 0.5 s"
        );
        // Stop renewing: it powers off.
        assert!(wait_for(&dir.path().join("powered-off"), Duration::from_secs(10)));
        let _ = std::fs::remove_file(lease_file(&marker));
    }
}
