//! A backend for tests only (cargo feature `test-backend`): resources are
//! entries in memory that a test can crash, lose, bring back, or make
//! refuse to stop, so the supervisor's and gc's generic paths are proved
//! without processes or timing luck.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::watch;

use super::{Backend, BackendError, ExitInfo, LaunchContext, Launched, Marked, Observation, Plan, Stopped, Target};
use crate::endpoint::Endpoint;
use crate::error::HostError;
use crate::ledger::{Ledger, ResourceHandle, ResourceKind, ResourceStatus};
use crate::manifest::Manifest;

/// One in-memory resource.
#[derive(Debug)]
pub struct TestResource {
    /// The marker it carries.
    pub marker: String,
    /// False once stopped or crashed.
    pub alive: bool,
    /// True while it "does not answer".
    pub lost: bool,
    exit: watch::Sender<Option<ExitInfo>>,
}

/// What the backend saw and what it is told to do.
#[derive(Debug, Default)]
pub struct TestWorld {
    /// Resources by id (`t1`, `t2`…).
    pub resources: BTreeMap<String, TestResource>,
    /// For each launch: whether its ledger row existed (status `starting`)
    /// when the launch began.
    pub intent_seen: Vec<bool>,
    /// Stops to refuse (each refusal counts down).
    pub refuse_stops: u32,
    /// Stop calls made.
    pub stop_calls: u32,
    /// Create the resource, then fail the launch.
    pub fail_after_create: bool,
    next: u32,
}

/// The test backend; clones share one world.
#[derive(Debug, Clone)]
pub struct TestBackend {
    world: Arc<Mutex<TestWorld>>,
    ledger: PathBuf,
}

impl TestBackend {
    /// A backend checking intents in the ledger at `ledger`.
    pub fn new(ledger: PathBuf) -> Self {
        TestBackend {
            world: Arc::default(),
            ledger,
        }
    }

    /// The world, locked.
    pub fn world(&self) -> MutexGuard<'_, TestWorld> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resources still alive.
    pub fn alive(&self) -> usize {
        self.world().resources.values().filter(|r| r.alive).count()
    }

    fn find(&self, target: &Target) -> Option<String> {
        let w = self.world();
        match &target.handle {
            Some(ResourceHandle::Test { id }) => Some(id.clone()),
            _ => w
                .resources
                .iter()
                .find(|(_, r)| r.marker == target.marker)
                .map(|(id, _)| id.clone()),
        }
    }

    /// Makes the resource of `marker` exit by itself with `code`.
    pub fn crash(&self, marker: &str, code: i32) {
        let mut w = self.world();
        if let Some(r) = w.resources.values_mut().find(|r| r.marker == marker) {
            r.alive = false;
            let _ = r.exit.send(Some(ExitInfo {
                code: Some(code),
                signal: None,
            }));
        }
    }

    /// Makes the resource of `marker` stop (or start again) answering.
    pub fn set_lost(&self, marker: &str, lost: bool) {
        if let Some(r) = self.world().resources.values_mut().find(|r| r.marker == marker) {
            r.lost = lost;
        }
    }
}

#[async_trait]
impl Backend for TestBackend {
    fn name(&self) -> &'static str {
        "test"
    }

    fn plan(&self, _manifest: &Manifest, _vars: &BTreeMap<String, String>) -> Result<Plan, HostError> {
        Ok(Plan {
            kind: ResourceKind::Test,
            owned: true,
            price: None,
            details: json!({"test": true}),
            budget: crate::backend::BudgetHints::default(),
            spec: Box::new(()),
        })
    }

    async fn launch(&self, _plan: &Plan, ctx: &LaunchContext) -> Result<Launched, HostError> {
        let seen = Ledger::open(&self.ledger)
            .ok()
            .and_then(|l| l.get(ctx.resource_id).ok().flatten())
            .is_some_and(|r| r.status == ResourceStatus::Starting && r.marker == ctx.marker);
        let (tx, rx) = watch::channel(None);
        let mut w = self.world();
        w.intent_seen.push(seen);
        w.next += 1;
        let id = format!("t{}", w.next);
        w.resources.insert(
            id.clone(),
            TestResource {
                marker: ctx.marker.clone(),
                alive: true,
                lost: false,
                exit: tx,
            },
        );
        if w.fail_after_create {
            return Err(HostError::Internal(
                "test backend failed after creating its resource".into(),
            ));
        }
        Ok(Launched {
            handle: ResourceHandle::Test { id },
            endpoint: Endpoint::Unix(ctx.listen.clone()),
            token: None,
            output: Vec::new(),
            notify: None,
            exit: Some(rx),
            keepalive: None,
            lost: None,
            price: None,
        })
    }

    async fn stop(&self, target: &Target, _grace: Duration) -> Result<Stopped, BackendError> {
        let id = self.find(target);
        let mut w = self.world();
        w.stop_calls += 1;
        if w.refuse_stops > 0 {
            w.refuse_stops -= 1;
            return Err(BackendError::NotGone {
                what: format!("test resource {}", id.unwrap_or_default()),
                reason: "the test backend refused this stop".into(),
            });
        }
        let Some(id) = id else { return Ok(Stopped::default()) };
        if let Some(r) = w.resources.get_mut(&id) {
            r.alive = false;
            let _ = r.exit.send(Some(ExitInfo {
                code: None,
                signal: Some(15),
            }));
        }
        Ok(Stopped {
            ended: vec![id],
            ..Default::default()
        })
    }

    async fn observe(&self, target: &Target) -> Observation {
        let Some(id) = self.find(target) else {
            return Observation::Unknown;
        };
        match self.world().resources.get(&id) {
            Some(r) if !r.alive => Observation::Exited(ExitInfo {
                code: None,
                signal: None,
            }),
            Some(r) if r.lost => Observation::Lost("the test resource does not answer".into()),
            Some(_) => Observation::Alive,
            None => Observation::Unknown,
        }
    }

    fn polls(&self) -> bool {
        true
    }

    async fn sweep(&self, ledger_id: &str, _recorded: &[serde_json::Value]) -> Result<Vec<Marked>, BackendError> {
        let prefix = format!("{ledger_id}:");
        let w = self.world();
        let mut out: HashMap<i64, Vec<String>> = HashMap::new();
        for (id, r) in w.resources.iter().filter(|(_, r)| r.alive) {
            if let Some(row) = r.marker.strip_prefix(&prefix).and_then(|s| s.parse::<i64>().ok()) {
                out.entry(row).or_default().push(id.clone());
            }
        }
        let mut v: Vec<Marked> = out
            .into_iter()
            .map(|(resource_id, ids)| Marked {
                resource_id,
                description: ids.join(", "),
            })
            .collect();
        v.sort_by_key(|m| m.resource_id);
        Ok(v)
    }
}
