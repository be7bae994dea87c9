//! Cost governance against real workers: budgets stop what they cover
//! within one governor tick, refuse starts by their projection, idle
//! plugins stop, a call starts a start-on-demand plugin, and a deadline a
//! hung host left is enforced by anyone's gc.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use plugboard_host::budget::{Budget, BudgetStore, Level, Period, Scope};
use plugboard_host::{
    DataDir, GcOptions, Host, HostConfig, HostError, Ledger, Manifest, ResourceStatus, RunState, Supervisor,
    SupervisorConfig,
};
use serde_json::json;

const CHILD_ENV: &str = "PLUGBOARD_TEST_GOVERNED_HOST";

fn governed(data: &Path) -> Supervisor {
    let mut cfg = SupervisorConfig::new(DataDir::new(data));
    cfg.governor_tick = Duration::from_millis(20);
    Supervisor::new(cfg).unwrap()
}

/// A plugin that bills `price` USD/h: a plain process, ready at once.
fn priced(dir: &Path, name: &str, price: f64, lifecycle: &str) -> Arc<Manifest> {
    manifest_in(
        dir,
        name,
        &format!(
            "name = \"{name}\"\ncategory = \"gpu\"\nexecution_mode = \"subprocess\"\nready = \"none\"\nstop_grace_s = 1\n\
             {lifecycle}\n[resources]\nestimated_cost_per_hour = {price}\n[launch]\ncommand = \"sleep\"\nargs = [\"300\"]\n"
        ),
    )
}

/// The Python slow job, callable, with a `[lifecycle]` table.
fn slow_job(dir: &Path, category: &str, lifecycle: &str) -> Arc<Manifest> {
    let ex = workspace_root().join("examples/plugins/slow_job");
    manifest_in(
        dir,
        category,
        &format!(
            "name = \"slow_job\"\ncategory = \"{category}\"\nversion = \"0.1.0\"\nexecution_mode = \"subprocess\"\nready_timeout_s = 20\n\
             stop_grace_s = 1\nconfig_schema_file = \"{schema}\"\n{lifecycle}\n[launch]\ncommand = \"python3\"\nargs = [\"-u\", \"{py}\"]\n",
            schema = ex.join("schema.json").display(),
            py = ex.join("slow_job.py").display(),
        ),
    )
}

fn budget(scope: Scope, max_usd: Option<f64>, max_rate: Option<f64>) -> Budget {
    Budget {
        scope,
        max_usd,
        period: Period::All,
        max_usd_per_hour: max_rate,
    }
}

#[test]
fn a_budget_crossed_mid_run_stops_what_it_covers_within_a_tick() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let rt = host_runtime();
    rt.block_on(async {
        let sup = governed(&data);
        let store = BudgetStore::new(DataDir::new(&data).budgets_path());
        // 3600 USD/h: a dollar a second. A free plugin runs beside it.
        let st = sup.start(priced(tmp.path(), "burner", 3600.0, "")).await.unwrap();
        let rid = st.resource_id.unwrap();
        let free = sup.start(priced(tmp.path(), "free", 0.0, "")).await.unwrap();
        let free_pid = free.pid.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // A budget that the burner crosses 0.4 s from now.
        let spent = sup.with_ledger(|l| {
            l.get(rid)
                .unwrap()
                .unwrap()
                .accrued_usd(plugboard_host::ledger::now_ms())
        });
        store
            .set(budget(Scope::Category("gpu".into()), Some(spent + 0.4), None))
            .unwrap();
        let set_at = Instant::now();
        // It warns first (80 %), then stops the burner.
        assert!(
            wait_until(Duration::from_secs(3), || sup
                .budget_status()
                .iter()
                .any(|s| s.level == Level::Warning))
            .await,
            "{:?}",
            sup.budget_status()
        );
        assert!(
            wait_until(Duration::from_secs(5), || sup
                .status("gpu_burner")
                .is_some_and(|s| s.state == RunState::Stopped))
            .await,
            "{:?}",
            sup.status("gpu_burner")
        );
        let took = set_at.elapsed();
        assert!(!alive(st.pid.unwrap()));
        let row = sup.with_ledger(|l| l.get(rid).unwrap().unwrap());
        assert_eq!(row.status, ResourceStatus::Stopped);
        let note = row.note.unwrap_or_default();
        assert!(note.contains("budget category:gpu exceeded"), "{note}");
        assert!(
            sup.status("gpu_burner")
                .unwrap()
                .note
                .unwrap_or_default()
                .contains("budget")
        );
        // Billing ended with the row; the free plugin was not touched.
        assert!(row.billing.iter().all(|b| b.end_ms.is_some()));
        assert!(alive(free_pid));
        eprintln!("stopped {took:?} after the budget was set (crossing due after 400 ms)");

        // A start that would exceed a budget is refused with its projection.
        let e = sup.start(priced(tmp.path(), "burner", 3600.0, "")).await.unwrap_err();
        assert!(matches!(e, HostError::BudgetRefused { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("budget category:gpu would be exceeded") && msg.contains("$3600.00/h"),
            "{msg}"
        );
        // Nothing was written for the refused start.
        assert_eq!(sup.with_ledger(|l| l.for_plugin("gpu_burner", 10).unwrap().len()), 1);
        // A rate cap: a 10 USD/h start under a 5 USD/h cap.
        store.delete(&Scope::Category("gpu".into())).unwrap();
        store.set(budget(Scope::Global, None, Some(5.0))).unwrap();
        let e = sup
            .start(priced(tmp.path(), "pricey", 10.0, ""))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("budget global would be exceeded") && e.contains("limit $5.00/h"),
            "{e}"
        );
        sup.stop("gpu_free").await.unwrap();
    });
}

#[test]
fn a_price_change_after_launch_keeps_what_was_accrued() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let rt = host_runtime();
    rt.block_on(async {
        let sup = governed(&data);
        let st = sup.start(priced(tmp.path(), "repriced", 36.0, "")).await.unwrap();
        let rid = st.resource_id.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (before, at) = sup.with_ledger(|l| {
            let now = plugboard_host::ledger::now_ms();
            l.set_price(rid, 36_000.0, plugboard_host::ledger::PriceSource::Provider)
                .unwrap();
            (l.get(rid).unwrap().unwrap(), now)
        });
        let after = sup.with_ledger(|l| l.get(rid).unwrap().unwrap());
        // What accrued up to the change is the same under the new price.
        assert_eq!(after.accrued_usd(at), before.accrued_usd(at));
        assert!(before.accrued_usd(at) > 0.0);
        assert_eq!(after.billing.len(), 2);
        assert_eq!(after.burn_rate(), 36_000.0);
        sup.stop("gpu_repriced").await.unwrap();
    });
}

#[test]
fn an_idle_plugin_stops_and_a_call_starts_it_on_demand() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    slow_job(
        &plugins,
        "demo",
        "[lifecycle]\nidle_stop_s = 0.6\nstart_on_demand = true",
    );
    slow_job(&plugins, "plain", "");
    let rt = host_runtime();
    rt.block_on(async {
        let host = Host::open(HostConfig {
            plugin_dirs: vec![plugins.clone()],
            config_dir: tmp.path().join("config"),
            data: DataDir::new(tmp.path().join("data")),
            launch_vars: Default::default(),
            reap_all_orphans: false,
        })
        .unwrap();
        let id = "demo_slow_job";
        // A call to the stopped plugin starts it and is answered.
        let t = Instant::now();
        let h = host.call_handle(id).await.unwrap();
        assert_eq!(
            h.execute(json!({"steps": 1, "step_ms": 1})).await.unwrap(),
            json!({"steps_done": 1})
        );
        eprintln!("started on demand and answered in {:?}", t.elapsed());
        // Calls every 0.2 s keep it running past the idle timeout…
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            h.execute(json!({"steps": 0})).await.unwrap();
        }
        // …and so does one long call in flight.
        let long = h.execute(json!({"steps": 1, "step_ms": 1200}));
        assert_eq!(long.await.unwrap(), json!({"steps_done": 1}));
        assert_eq!(host.status(id).unwrap().state, RunState::Running);
        // Without calls it stops by itself, saying why.
        assert!(
            wait_until(Duration::from_secs(5), || host
                .status(id)
                .is_some_and(|s| s.state == RunState::Stopped))
            .await
        );
        assert!(host.status(id).unwrap().note.unwrap_or_default().contains("idle"));
        // A plugin without start_on_demand is not started by a call.
        let e = host.call_handle("plain_slow_job").await.unwrap_err();
        assert!(matches!(e, HostError::NotRunning { .. }), "{e}");
        assert!(
            host.status("plain_slow_job")
                .is_none_or(|s| s.state != RunState::Running)
        );
    });
}

/// A host that starts a priced plugin with a deadline one second away, then
/// prints "started" (the test freezes it before it can enforce).
#[test]
fn governed_host_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let (data, dir) = spec.split_once('|').unwrap();
    let rt = host_runtime();
    rt.block_on(async {
        let sup = governed(Path::new(data));
        let st = sup
            .start(priced(Path::new(dir), "timed", 1.0, "[lifecycle]\nmax_duration_s = 1"))
            .await
            .unwrap();
        // The deadline is in the ledger after a tick.
        let rid = st.resource_id.unwrap();
        assert!(
            wait_until(Duration::from_secs(5), || sup.with_ledger(|l| l
                .get(rid)
                .unwrap()
                .unwrap()
                .deadline_at
                .is_some()))
            .await
        );
        println!("started {}", st.pid.unwrap());
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

#[test]
fn a_deadline_a_hung_host_left_is_enforced_by_anyones_gc() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let spec = format!("{}|{}", data.display(), tmp.path().display());
    let mut host = child_host(
        "governed_host_child",
        (CHILD_ENV, std::ffi::OsStr::new(&spec)),
        "started",
    );
    let pid = host.id() as i32;
    // Freeze the host: alive, but its governor cannot act.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGSTOP).unwrap();
    let mut ledger = Ledger::open(&DataDir::new(&data).ledger_path()).unwrap();
    let row = ledger.live().unwrap().pop().unwrap();
    let worker = row.pid().unwrap();
    let deadline = row.deadline_at.unwrap();
    assert!(row.deadline_reason.as_deref().unwrap_or("").contains("max_duration_s"));
    // Before the deadline gc keeps it (its host is alive).
    let early = run_gc(&mut ledger, GcOptions::default(), None).unwrap();
    assert!(early.reaped.is_empty(), "{early:?}");
    while plugboard_host::ledger::now_ms() <= deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(alive(worker), "the frozen host did not stop it");
    // Within the deadline grace the host's own governor may still act
    // (its deadline may lag a call that began since): gc keeps it.
    let within = run_gc(&mut ledger, GcOptions::default(), None).unwrap();
    assert!(within.reaped.is_empty(), "{within:?}");
    assert!(alive(worker));
    let report = run_gc(
        &mut ledger,
        GcOptions {
            grace: Duration::from_millis(200),
            deadline_grace: Duration::ZERO,
            ..Default::default()
        },
        None,
    )
    .unwrap();
    assert_eq!(report.reaped.len(), 1, "{report:?}");
    assert!(
        report.reaped[0].confirmed && report.reaped[0].reason.contains("deadline"),
        "{report:?}"
    );
    assert!(!alive(worker));
    assert_eq!(ledger.get(row.id).unwrap().unwrap().status, ResourceStatus::Reaped);
    host.kill().unwrap();
    host.wait().unwrap();
}
