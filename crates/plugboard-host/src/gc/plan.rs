//! The gc plan: what gc will end and why, decided from the ledger, host
//! liveness and what the backends' sweeps found, with no side effects, so
//! `--dry-run` prints exactly what a real run would do.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::backend::{Marked, Target};
use crate::ledger::{HostRecord, ResourceRecord};

/// Why gc acts on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GcReason {
    /// The host that owns its live row is gone.
    HostGone,
    /// `gc --all`: every live resource, even of running hosts.
    All,
    /// It carries a marker of a row that has ended.
    MarkedAfterEnd,
    /// It carries a marker of a row that does not exist.
    MarkedWithoutRow,
    /// Its host runs, but its deadline (budget, `max_duration_s`, idle)
    /// passed and it was not stopped: enforced by whoever runs gc.
    DeadlinePassed,
}

/// What gc does to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GcOp {
    /// Stop it through its backend; end the row once confirmed gone.
    End,
    /// Not owned (an external service): end the row, touch nothing.
    Detach,
    /// Found by marker only: stop it through the backend that found it.
    Sweep,
}

/// One planned action.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GcAction {
    /// The ledger row, when there is one.
    pub resource_id: Option<i64>,
    /// The plugin, when known.
    pub plugin_id: Option<String>,
    /// The backend that stops it.
    pub backend: String,
    /// The resource kind (as the ledger or the sweep knows it).
    pub kind: String,
    /// Why.
    pub reason: GcReason,
    /// What.
    pub op: GcOp,
    /// What identifies it.
    pub target: Target,
    /// What the sweep found carrying its marker, if anything.
    pub found: Option<String>,
    /// Why an earlier gc could not end it, if one tried.
    pub earlier_failure: Option<String>,
}

/// What gc will do.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct GcPlan {
    /// The actions, rows first (oldest first), then marker-only finds.
    pub actions: Vec<GcAction>,
    /// Hosts found gone, to be marked ended.
    pub hosts_to_end: Vec<i64>,
    /// Live resources left alone because their host runs.
    pub kept: usize,
}

/// Builds the plan. `live` are the ledger's live rows, `ended` the rows
/// (by id) that exist but have ended, `swept` what each backend found
/// carrying a marker of this ledger (`swept_ok` names the backends whose
/// sweep succeeded: for their rows, finding nothing is knowledge),
/// `self_host` the calling host (its
/// resources are kept unless `all`).
#[allow(clippy::too_many_arguments)]
pub fn plan(
    ledger_id: &str,
    hosts: &[HostRecord],
    host_alive: impl Fn(&HostRecord) -> bool,
    live: &[ResourceRecord],
    ended: &HashSet<i64>,
    swept: &[(String, Marked)],
    swept_ok: &HashSet<String>,
    self_host: Option<i64>,
    all: bool,
) -> GcPlan {
    plan_at(
        ledger_id,
        hosts,
        host_alive,
        live,
        ended,
        swept,
        swept_ok,
        self_host,
        all,
        i64::MIN,
    )
}

/// [`plan`] at `now_ms`: a live resource of another running host whose
/// recorded deadline has passed is ended too ([`GcReason::DeadlinePassed`]);
/// the calling host's own deadlines are its governor's.
#[allow(clippy::too_many_arguments)]
pub fn plan_at(
    ledger_id: &str,
    hosts: &[HostRecord],
    host_alive: impl Fn(&HostRecord) -> bool,
    live: &[ResourceRecord],
    ended: &HashSet<i64>,
    swept: &[(String, Marked)],
    swept_ok: &HashSet<String>,
    self_host: Option<i64>,
    all: bool,
    now_ms: i64,
) -> GcPlan {
    let alive: HashMap<i64, bool> = hosts
        .iter()
        .map(|h| (h.id, Some(h.id) == self_host || (h.ended_at.is_none() && host_alive(h))))
        .collect();
    let mut found: BTreeMap<i64, Vec<&(String, Marked)>> = BTreeMap::new();
    for s in swept {
        found.entry(s.1.resource_id).or_default().push(s);
    }
    let mut out = GcPlan::default();
    let live_ids: HashSet<i64> = live.iter().map(|r| r.id).collect();
    for r in live {
        let host_alive = alive.get(&r.host_id).copied().unwrap_or(false);
        let overdue = r.owned && Some(r.host_id) != self_host && r.deadline_at.is_some_and(|d| d <= now_ms);
        if host_alive && !all && !overdue {
            out.kept += 1;
            continue;
        }
        let reason = match (host_alive, overdue) {
            (false, _) => GcReason::HostGone,
            (true, true) => GcReason::DeadlinePassed,
            (true, false) => GcReason::All,
        };
        let what = found.get(&r.id).map(|v| {
            v.iter()
                .map(|(_, m)| m.description.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        });
        out.actions.push(GcAction {
            resource_id: Some(r.id),
            plugin_id: Some(r.plugin_id.clone()),
            backend: r.backend.clone(),
            kind: r.kind.to_string(),
            reason,
            op: if r.owned { GcOp::End } else { GcOp::Detach },
            target: Target {
                resource_id: Some(r.id),
                marker: r.marker.clone(),
                handle: r.handle.clone(),
                details: r.details.clone(),
                marker_found: swept_ok.contains(&r.backend).then_some(what.is_some()),
            },
            found: what,
            earlier_failure: r.note.clone(),
        });
    }
    for (row, finds) in found {
        if live_ids.contains(&row) {
            continue; // kept with its row, or ended with it above
        }
        let reason = if ended.contains(&row) {
            GcReason::MarkedAfterEnd
        } else {
            GcReason::MarkedWithoutRow
        };
        let mut backends: Vec<&String> = finds.iter().map(|(b, _)| b).collect();
        backends.sort();
        backends.dedup();
        for backend in backends {
            let what: Vec<&str> = finds
                .iter()
                .filter(|(b, _)| b == backend)
                .map(|(_, m)| m.description.as_str())
                .collect();
            out.actions.push(GcAction {
                resource_id: Some(row),
                plugin_id: None,
                backend: backend.clone(),
                kind: backend.clone(),
                reason,
                op: GcOp::Sweep,
                target: Target {
                    resource_id: Some(row),
                    marker: format!("{ledger_id}:{row}"),
                    handle: None,
                    details: serde_json::Value::Null,
                    marker_found: Some(true),
                },
                found: Some(what.join(", ")),
                earlier_failure: None,
            });
        }
    }
    out.hosts_to_end = hosts
        .iter()
        .filter(|h| h.ended_at.is_none() && !alive.get(&h.id).copied().unwrap_or(false))
        .map(|h| h.id)
        .collect();
    out.hosts_to_end.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{ResourceHandle, ResourceKind, ResourceStatus};
    use serde_json::Value;

    fn host(id: i64, ended: bool) -> HostRecord {
        HostRecord {
            id,
            pid: 100 + id as u32,
            start_time: 1,
            boot_id: "b".into(),
            started_at: 0,
            ended_at: ended.then_some(5),
        }
    }

    fn row(id: i64, host_id: i64, owned: bool) -> ResourceRecord {
        ResourceRecord {
            id,
            kind: if owned {
                ResourceKind::Process
            } else {
                ResourceKind::Service
            },
            backend: if owned { "process" } else { "external" }.into(),
            plugin_id: format!("p_{id}"),
            host_id,
            status: ResourceStatus::Running,
            owned,
            handle: Some(ResourceHandle::Process {
                pid: 1000 + id as u32,
                start_time: 7,
                cgroups: vec![],
            }),
            endpoint: None,
            marker: format!("L:{id}"),
            created_at: 0,
            updated_at: 0,
            ended_at: None,
            exit_code: None,
            signal: None,
            cost_per_hour: None,
            price_source: None,
            billing_started_at: None,
            note: None,
            details: Value::Null,
            deadline_at: None,
            deadline_reason: None,
            billing: Vec::new(),
            charges_usd: 0.0,
        }
    }

    fn marked(backend: &str, id: i64, what: &str) -> (String, Marked) {
        (
            backend.into(),
            Marked {
                resource_id: id,
                description: what.into(),
            },
        )
    }

    #[test]
    fn rows_of_live_hosts_are_kept_and_of_dead_ones_ended() {
        let hosts = [host(1, false), host(2, false)];
        let live = [row(10, 1, true), row(11, 2, true)];
        let p = plan(
            "L",
            &hosts,
            |h| h.id == 1,
            &live,
            &HashSet::new(),
            &[],
            &HashSet::new(),
            None,
            false,
        );
        assert_eq!(p.kept, 1);
        assert_eq!(p.actions.len(), 1);
        assert_eq!(p.actions[0].resource_id, Some(11));
        assert_eq!((p.actions[0].reason, p.actions[0].op), (GcReason::HostGone, GcOp::End));
        assert_eq!(p.hosts_to_end, vec![2]);
        // Nobody swept: whether anything carries the marker is unknown.
        assert_eq!(p.actions[0].target.marker_found, None);
    }

    #[test]
    fn an_overdue_resource_of_a_running_host_is_ended_but_not_the_callers_own() {
        let hosts = [host(1, false), host(2, false)];
        let mut overdue = row(10, 1, true);
        overdue.deadline_at = Some(500);
        let mut mine = row(11, 2, true);
        mine.deadline_at = Some(500);
        let mut later = row(12, 1, true);
        later.deadline_at = Some(5_000);
        let live = [overdue, mine, later];
        let (none, ok) = (HashSet::new(), HashSet::new());
        let p = plan_at("L", &hosts, |_| true, &live, &none, &[], &ok, Some(2), false, 1_000);
        assert_eq!(p.actions.len(), 1, "{p:?}");
        assert_eq!(p.actions[0].resource_id, Some(10));
        assert_eq!(p.actions[0].reason, GcReason::DeadlinePassed);
        assert_eq!(p.kept, 2);
        // Without a clock nothing is overdue.
        let p = plan("L", &hosts, |_| true, &live, &none, &[], &ok, Some(2), false);
        assert!(p.actions.is_empty());
    }

    #[test]
    fn a_successful_sweep_that_found_nothing_is_knowledge() {
        let hosts = [host(1, true)];
        let live = [row(10, 1, true)];
        let ok: HashSet<String> = ["process".to_owned()].into();
        let p = plan("L", &hosts, |_| false, &live, &HashSet::new(), &[], &ok, None, false);
        assert_eq!(p.actions[0].target.marker_found, Some(false));
    }

    #[test]
    fn all_takes_live_hosts_too_but_never_ends_them() {
        let hosts = [host(1, false)];
        let live = [row(10, 1, true)];
        let p = plan(
            "L",
            &hosts,
            |_| true,
            &live,
            &HashSet::new(),
            &[],
            &HashSet::new(),
            None,
            true,
        );
        assert_eq!(p.actions[0].reason, GcReason::All);
        assert!(p.hosts_to_end.is_empty());
    }

    #[test]
    fn the_calling_host_counts_as_alive() {
        let hosts = [host(3, false)];
        let live = [row(10, 3, true)];
        let p = plan(
            "L",
            &hosts,
            |_| false,
            &live,
            &HashSet::new(),
            &[],
            &HashSet::new(),
            Some(3),
            false,
        );
        assert_eq!((p.kept, p.actions.len()), (1, 0));
    }

    #[test]
    fn services_not_owned_are_detached_never_ended() {
        let hosts = [host(1, true)];
        let live = [row(10, 1, false)];
        let p = plan(
            "L",
            &hosts,
            |_| false,
            &live,
            &HashSet::new(),
            &[],
            &HashSet::new(),
            None,
            false,
        );
        assert_eq!(p.actions[0].op, GcOp::Detach);
    }

    #[test]
    fn marker_finds_are_swept_by_the_backend_that_found_them() {
        let hosts = [host(1, false)];
        let live = [row(10, 1, true)];
        let ended: HashSet<i64> = [20].into();
        let swept = [
            marked("process", 10, "pid 5"), // belongs to a kept live row
            marked("process", 20, "pid 6"), // its row has ended
            marked("process", 30, "pid 7"), // no row at all
            marked("docker", 30, "container c"),
        ];
        let p = plan(
            "L",
            &hosts,
            |_| true,
            &live,
            &ended,
            &swept,
            &HashSet::new(),
            None,
            false,
        );
        assert_eq!(p.kept, 1);
        let sweeps: Vec<_> = p
            .actions
            .iter()
            .map(|a| (a.resource_id, a.backend.as_str(), a.reason, a.op))
            .collect();
        assert_eq!(
            sweeps,
            vec![
                (Some(20), "process", GcReason::MarkedAfterEnd, GcOp::Sweep),
                (Some(30), "docker", GcReason::MarkedWithoutRow, GcOp::Sweep),
                (Some(30), "process", GcReason::MarkedWithoutRow, GcOp::Sweep),
            ]
        );
    }

    #[test]
    fn an_earlier_failure_is_carried_so_the_retry_says_why() {
        let hosts = [host(1, true)];
        let mut r = row(10, 1, true);
        r.note = Some("pids [5] survived SIGKILL".into());
        let p = plan(
            "L",
            &hosts,
            |_| false,
            &[r],
            &HashSet::new(),
            &[marked("process", 10, "pid 5")],
            &["process".to_owned()].into(),
            None,
            false,
        );
        assert_eq!(p.actions[0].target.marker_found, Some(true));
        assert_eq!(
            p.actions[0].earlier_failure.as_deref(),
            Some("pids [5] survived SIGKILL")
        );
        assert_eq!(p.actions[0].found.as_deref(), Some("pid 5"));
    }
}
