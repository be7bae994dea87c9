//! cloud_serverless: a RunPod serverless endpoint called through the same
//! handle as every plugin, against an emulator of RunPod's documented
//! serverless API (the service cannot run here). The same calls as the
//! local workers' suite: execute, a failing input, streaming progress,
//! cancel mid-job (cancelled on the provider), and each job's cost in the
//! ledger.

mod common;
#[path = "common/runpod_serverless_emulator.rs"]
mod runpod_serverless_emulator;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use plugboard_core::ExecutionMode;
use plugboard_host::backend::serverless::ServerlessBackend;
use plugboard_host::cloud::ApiKey;
use plugboard_host::{Backends, DataDir, ResourceStatus, RunState, Supervisor, SupervisorConfig};
use plugboard_protocol::StreamEvent;
use runpod_serverless_emulator::ServerlessEmulator;
use serde_json::json;

fn supervisor_for(data: &std::path::Path, emu: &ServerlessEmulator) -> Supervisor {
    supervisor_ticking(data, emu, None)
}

fn supervisor_ticking(data: &std::path::Path, emu: &ServerlessEmulator, tick: Option<Duration>) -> Supervisor {
    let key = emu.key.clone();
    let mut b = Backends::builtin(None);
    b.register(
        Arc::new(
            ServerlessBackend::new(Arc::new(move |name: &str| {
                (name == "RUNPOD_API_KEY").then(|| ApiKey::new(key.clone()))
            }))
            .with_base_url(&emu.url)
            .with_retry_policy(plugboard_host::cloud::retry::RetryPolicy {
                base: Duration::from_millis(20),
                max_delay: Duration::from_millis(100),
                max_attempts: 4,
                max_retry_after: Duration::from_secs(1),
            }),
        ),
        &[ExecutionMode::CloudServerless],
    );
    let mut cfg = SupervisorConfig::new(DataDir::new(data));
    cfg.backends = Some(b);
    if let Some(t) = tick {
        cfg.governor_tick = t;
    }
    Supervisor::new(cfg).unwrap()
}

fn endpoint_manifest(dir: &std::path::Path, name: &str, endpoint: &str, extra: &str) -> Arc<plugboard_host::Manifest> {
    manifest_in(
        dir,
        name,
        &format!(
            "name = \"job\"\ncategory = \"{name}\"\nversion = \"1.0.0\"\nexecution_mode = \"cloud_serverless\"\n\
             [launch]\nprovider = \"runpod\"\nendpoint_id = \"{endpoint}\"\nprice_per_second = 0.0004\n{extra}\n"
        ),
    )
}

#[test]
fn a_serverless_endpoint_is_called_like_any_plugin() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = ServerlessEmulator::start();
    let rt = host_runtime();
    let sup = rt.block_on(async { supervisor_for(&tmp.path().join("data"), &emu) });
    rt.block_on(async {
        let st = sup
            .start(endpoint_manifest(tmp.path(), "sl", &emu.endpoint, "stream = true"))
            .await
            .unwrap();
        assert_eq!(st.state, RunState::Running);
        assert_eq!(st.backend.as_deref(), Some("serverless"));
        let h = sup.handle("sl_job").unwrap();

        // execute: a job submitted, polled, its output returned.
        assert_eq!(
            h.execute(json!({"steps": 3, "step_ms": 5})).await.unwrap(),
            json!({"steps_done": 3})
        );
        // A job that fails: the call fails with the endpoint's error.
        let e = h.execute(json!({"fail": "CUDA out of memory"})).await.unwrap_err();
        assert!(e.to_string().contains("CUDA out of memory"), "{e}");
        let e = h.execute(json!({"text": "no steps"})).await.unwrap_err();
        assert!(e.to_string().contains("steps"), "{e}");

        // Streaming: each streamed item is a progress event.
        let mut fractions = Vec::new();
        let out = h
            .execute_streaming(json!({"steps": 4, "step_ms": 30}), None)
            .await
            .unwrap()
            .finish(|ev| {
                if let StreamEvent::Progress { progress, .. } = ev {
                    fractions.push(*progress);
                }
            })
            .await
            .unwrap();
        assert_eq!(out, json!({"steps_done": 4}));
        assert_eq!(fractions, [0.25, 0.5, 0.75, 1.0]);

        // Cancel mid-job: the job is cancelled on the provider.
        let mut stream = h
            .execute_streaming(json!({"steps": 1000, "step_ms": 20}), Some("c1".into()))
            .await
            .unwrap();
        assert!(stream.next().await.unwrap().is_ok());
        assert!(h.cancel("c1").await.unwrap());
        let end = tokio::time::timeout(Duration::from_secs(10), stream.finish(|_| {}))
            .await
            .expect("cancel honoured");
        assert!(plugboard_host::handle::is_cancelled(&end.unwrap_err()));
        assert!(
            wait_until(Duration::from_secs(5), || emu
                .job_statuses()
                .iter()
                .any(|s| s == "CANCELLED"))
            .await,
            "{:?}",
            emu.log()
        );
        assert!(emu.log().iter().any(|l| l.starts_with("POST /cancel")));

        // Each finished job is charged: its execution time × the price.
        let rid = st.resource_id.unwrap();
        let row = sup.with_ledger(|l| l.get(rid).unwrap().unwrap());
        let want = 0.0004 * emu.execution_ms() as f64 / 1000.0;
        assert!(want > 0.0);
        assert!(
            (row.charges_usd - want).abs() < 1e-9,
            "charged {} for {} ms (want {want})",
            row.charges_usd,
            emu.execution_ms()
        );

        // Stop: the endpoint is not ours; only the adapter ends.
        sup.stop("sl_job").await.unwrap();
        let row = sup.with_ledger(|l| l.get(rid).unwrap().unwrap());
        assert!(!row.owned);
        assert!(
            matches!(row.status, ResourceStatus::Stopped | ResourceStatus::Detached),
            "{row:?}"
        );
        assert!(h.execute(json!({"steps": 1})).await.is_err(), "called after stop");
    });
}

#[test]
fn an_endpoint_that_does_not_exist_fails_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = ServerlessEmulator::start();
    let rt = host_runtime();
    let sup = rt.block_on(async { supervisor_for(&tmp.path().join("data"), &emu) });
    rt.block_on(async {
        let e = sup
            .start(endpoint_manifest(tmp.path(), "missing", "nope999", ""))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("endpoint not found") && e.contains("404"), "{e}");
        let e = sup
            .start(endpoint_manifest(tmp.path(), "badid", "no/slash", ""))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("endpoint_id"), "{e}");
    });
}

#[test]
fn a_transient_error_while_a_job_runs_is_retried_and_a_lasting_one_cancels_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = ServerlessEmulator::start();
    let rt = host_runtime();
    let sup = rt.block_on(async { supervisor_for(&tmp.path().join("data"), &emu) });
    rt.block_on(async {
        let schema =
            "[config_schema]\ntype = \"object\"\n[config_schema.properties.step_ms]\ntype = \"integer\"\nminimum = 0\n";
        sup.start(endpoint_manifest(tmp.path(), "tr", &emu.endpoint, schema))
            .await
            .unwrap();
        let h = sup.handle("tr_job").unwrap();
        // Config is checked against the manifest's schema, as by any worker.
        let v = h.validate_config(&json!({"step_ms": -5})).await.unwrap();
        assert!(v.len() == 1 && v[0].pointer.contains("step_ms"), "{v:?}");
        assert!(h.validate_config(&json!({"step_ms": 5})).await.unwrap().is_empty());
        // Two 503s on the status reads: retried, the job's output returned.
        lock_shared(&emu).fail_reads = 2;
        assert_eq!(
            h.execute(json!({"steps": 3, "step_ms": 5})).await.unwrap(),
            json!({"steps_done": 3})
        );
        assert_eq!(
            emu.log().iter().filter(|l| l.ends_with(" 503")).count(),
            2,
            "{:?}",
            emu.log()
        );
        // More 503s than the policy's attempts: the call fails naming the
        // answer, and the job is cancelled rather than left running unseen.
        lock_shared(&emu).fail_reads = 4;
        let e = h.execute(json!({"steps": 1000, "step_ms": 20})).await.unwrap_err();
        assert!(e.to_string().contains("cancelled"), "{e}");
        assert!(emu.job_statuses().iter().any(|s| s == "CANCELLED"), "{:?}", emu.log());
        sup.stop("tr_job").await.unwrap();
    });
}

fn lock_shared(emu: &ServerlessEmulator) -> std::sync::MutexGuard<'_, runpod_serverless_emulator::Shared> {
    emu.shared.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_plugin_charged_per_call_counts_against_budgets() {
    use plugboard_host::budget::{Budget, BudgetStore, Period, Scope};
    let tmp = tempfile::tempdir().unwrap();
    let emu = ServerlessEmulator::start();
    let data = tmp.path().join("data");
    let rt = host_runtime();
    let sup = rt.block_on(async { supervisor_ticking(&data, &emu, Some(Duration::from_millis(20))) });
    rt.block_on(async {
        let store = BudgetStore::new(DataDir::new(&data).budgets_path());
        // Any charge at all spends this budget.
        store
            .set(Budget {
                scope: Scope::Category("pc".into()),
                max_usd: Some(1e-9),
                period: Period::All,
                max_usd_per_hour: None,
            })
            .unwrap();
        sup.start(endpoint_manifest(tmp.path(), "pc", &emu.endpoint, ""))
            .await
            .unwrap();
        let h = sup.handle("pc_job").unwrap();
        h.execute(json!({"steps": 2, "step_ms": 20})).await.unwrap();
        // No hourly rate, yet the charge exceeds the budget: stopped.
        assert!(
            wait_until(Duration::from_secs(5), || sup
                .status("pc_job")
                .is_some_and(|s| s.state == RunState::Stopped))
            .await,
            "{:?}",
            sup.status("pc_job")
        );
        let note = sup.status("pc_job").and_then(|s| s.note).unwrap_or_default();
        assert!(note.contains("pc") && note.contains("exceeded"), "{note}");
        // And a new start is refused, naming the budget.
        let e = sup
            .start(endpoint_manifest(tmp.path(), "pc", &emu.endpoint, ""))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("charged per call"), "{e}");
    });
}
