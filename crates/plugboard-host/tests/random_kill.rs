//! A host SIGKILLed at random points while it starts, restarts and stops a
//! process tree (a worker, children, grandchildren, a setsid daemon and a
//! SIGTERM-ignorer): after the parent-death signal and one gc, nothing
//! marked by that ledger is alive and no cgroup of it holds a process.
//!
//! Rounds: `PLUGBOARD_KILL_ROUNDS` (default 8); the seed is printed so a
//! failing round can be replayed with `PLUGBOARD_KILL_SEED`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use plugboard_host::cgroup::Cgroup;
use plugboard_host::{Backends, DataDir, GcOptions, Ledger, Manifest, gc};

const CHILD_ENV: &str = "PLUGBOARD_TEST_KILL_HOST";

/// The host that gets killed: cycles start / restart / stop of the tree
/// until it is.
#[test]
fn cycling_host_child() {
    let Ok(data) = std::env::var(CHILD_ENV) else { return };
    let rt = host_runtime();
    rt.block_on(async {
        let sup = supervisor(std::path::Path::new(&data));
        let mut m = Manifest::load(&example("process_tree")).unwrap();
        m.stop_grace_s = 0.2;
        let m = Arc::new(m);
        println!("ready");
        loop {
            let _ = sup.start(Arc::clone(&m)).await;
            let _ = sup.restart(Arc::clone(&m)).await;
            let _ = sup.stop("demo_process_tree").await;
        }
    });
}

/// xorshift64*: enough randomness for kill points, replayable by seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn a_host_killed_at_random_points_leaves_nothing_after_gc() {
    if !python_available() {
        return;
    }
    let rounds: u32 = std::env::var("PLUGBOARD_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("PLUGBOARD_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("kill seed {seed}, {rounds} rounds");
    let mut rng = Rng(seed);
    let mut total_reaped = 0;
    for round in 0..rounds {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let mut host = child_host("cycling_host_child", (CHILD_ENV, data.as_os_str()), "ready");
        // Somewhere in the first few cycles (a cycle is a few hundred ms).
        let delay = Duration::from_millis(20 + rng.next() % 1500);
        std::thread::sleep(delay);
        host.kill().unwrap();
        host.wait().unwrap();

        let mut ledger = Ledger::open(&DataDir::new(&data).ledger_path()).unwrap();
        let ledger_id = ledger.ledger_id().to_owned();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let report = rt
            .block_on(gc(
                &mut ledger,
                GcOptions {
                    grace: Duration::from_millis(200),
                    ..Default::default()
                },
                None,
                &Backends::builtin(None),
            ))
            .unwrap();
        assert_eq!(report.unconfirmed, 0, "round {round} (seed {seed}): {report:?}");
        total_reaped += report.reaped.len();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let marked = marked_alive(&ledger_id);
            let in_cgroups: Vec<u32> = Cgroup::list(&ledger_id).iter().flat_map(|(_, c)| c.pids()).collect();
            if marked.is_empty() && in_cgroups.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round} (seed {seed}, kill after {delay:?}): survivors {marked:?}, in cgroups {in_cgroups:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            ledger.live().unwrap().is_empty(),
            "round {round}: live rows left after gc"
        );
    }
    println!("{rounds} kill points tried, {total_reaped} resources reaped, 0 survivors");
}
