//! Capabilities asked for at run time, the process-tree helper against real
//! processes, and the list helpers.

use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use plugboard_core::{
    CapabilityError, CloudAware, CloudProvider, ExecutionMode, Lifecycle, Plugin, PluginMetadata, RemoteResource,
    all_managed_pids, cloud_plugins, configured_plugins, filter_plugins_by_execution_mode, has_active_cloud_resources,
    is_cloud_aware, is_lifecycle_aware, local_plugins, plugin_stats, process, total_estimated_cost,
    unconfigured_plugins,
};
use serde_json::{Map, Value, json};

struct TreePlugin {
    child: Mutex<Child>,
}

impl Plugin for TreePlugin {
    fn lifecycle(&self) -> Option<&dyn Lifecycle> {
        Some(self)
    }
}

impl Lifecycle for TreePlugin {
    fn execution_mode(&self) -> ExecutionMode {
        ExecutionMode::Subprocess
    }
    fn child_pids(&self) -> Vec<u32> {
        vec![self.child.lock().unwrap().id()]
    }
    fn managed_resources(&self) -> Map<String, Value> {
        json!({"pid": self.child.lock().unwrap().id()})
            .as_object()
            .cloned()
            .unwrap()
    }
    fn force_cleanup(&self) -> Result<(), CapabilityError> {
        let mut c = self.child.lock().unwrap();
        c.kill()?;
        c.wait()?;
        Ok(())
    }
}

struct Gpu {
    resource: Mutex<Option<RemoteResource>>,
}

impl Plugin for Gpu {
    fn cloud(&self) -> Option<&dyn CloudAware> {
        Some(self)
    }
}

impl CloudAware for Gpu {
    fn remote_resource_info(&self) -> Option<RemoteResource> {
        self.resource.lock().unwrap().clone()
    }
    fn provision(&self, _: &Map<String, Value>) -> Result<RemoteResource, CapabilityError> {
        let mut r = RemoteResource::new(CloudProvider::Runpod);
        r.status = "running".into();
        r.estimated_cost_per_hour = Some(2.5);
        *self.resource.lock().unwrap() = Some(r.clone());
        Ok(r)
    }
    fn check_status(&self) -> Result<String, CapabilityError> {
        Ok(self
            .resource
            .lock()
            .unwrap()
            .as_ref()
            .map_or("not_provisioned".into(), |r| r.status.clone()))
    }
    fn terminate(&self) -> Result<bool, CapabilityError> {
        Ok(self
            .resource
            .lock()
            .unwrap()
            .as_mut()
            .map(|r| r.status = "terminated".into())
            .is_some())
    }
    fn estimate_cost(&self, hours: f64) -> f64 {
        self.resource
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0.0, |r| hours * r.estimated_cost_per_hour.unwrap_or(0.0))
    }
}

#[test]
fn managed_pids_include_children_of_children() {
    // sh -> (sh -> sleep) and sleep: three levels.
    let child = Command::new("sh")
        .args(["-c", "sh -c 'sleep 30 & wait' & sleep 30 & wait"])
        .spawn()
        .unwrap();
    let root = child.id();
    let plugin = TreePlugin {
        child: Mutex::new(child),
    };
    assert!(is_lifecycle_aware(&plugin));
    let deadline = Instant::now() + Duration::from_secs(10);
    let pids = loop {
        let pids = all_managed_pids(&plugin);
        if pids.len() >= 4 || Instant::now() > deadline {
            break pids;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(pids.len(), 4, "{pids:?}");
    assert_eq!(pids[0], root);
    for pid in &pids[1..] {
        let info = process::read_process(*pid).unwrap();
        assert!(info.is_live());
    }
    // Clean up the whole tree (the host does this for real plugins).
    for pid in pids.iter().rev() {
        let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
    }
    plugin.force_cleanup().ok();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| process::is_same_live_process(*p, None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(all_managed_pids(&plugin).is_empty());
}

#[test]
fn plain_values_have_no_capabilities() {
    let v = json!({"not": "a plugin"});
    assert!(!is_lifecycle_aware(&v) && !is_cloud_aware(&v));
    assert!(all_managed_pids(&v).is_empty());
    assert!(!has_active_cloud_resources(&v));
}

#[test]
fn total_cost_counts_only_running_cloud_plugins() {
    let a = Gpu {
        resource: Mutex::new(None),
    };
    let b = Gpu {
        resource: Mutex::new(None),
    };
    let idle = Gpu {
        resource: Mutex::new(None),
    };
    let v = json!({"not": "a plugin"});
    a.provision(&Map::new()).unwrap();
    b.provision(&Map::new()).unwrap();
    let list: [&dyn Plugin; 4] = [&a, &b, &idle, &v];
    assert!((total_estimated_cost(&list, 1.0) - 5.0).abs() < 1e-9);
    assert!((total_estimated_cost(&list, 24.0) - 120.0).abs() < 1e-9);
    assert!(has_active_cloud_resources(&a));
    assert!(!has_active_cloud_resources(&idle));
    assert_eq!(idle.check_status().unwrap(), "not_provisioned");
    assert!(a.terminate().unwrap());
    assert!(!idle.terminate().unwrap());
    assert!(!has_active_cloud_resources(&a));
    assert!((total_estimated_cost(&list, 1.0) - 2.5).abs() < 1e-9);
}

fn sample() -> Vec<PluginMetadata> {
    let mut out = Vec::new();
    let mut a = PluginMetadata::new("whisper", "transcription", "W");
    a.is_configured = true;
    out.push(a);
    let mut b = PluginMetadata::new("vllm", "transcription", "V").with_mode(ExecutionMode::Subprocess);
    b.spawned_pids = vec![1];
    out.push(b);
    let mut c = PluginMetadata::new("ft", "finetuning", "F").with_mode(ExecutionMode::CloudGpu);
    let mut r = RemoteResource::new(CloudProvider::Aws);
    r.status = "running".into();
    c.remote_resource = Some(Box::new(r));
    c.is_configured = true;
    out.push(c);
    out.push(PluginMetadata::new("k8s", "finetuning", "K").with_mode(ExecutionMode::Kubernetes));
    out.push(PluginMetadata::new("svc", "llm", "S").with_mode(ExecutionMode::ExternalService));
    out
}

fn names(v: Vec<&PluginMetadata>) -> Vec<&str> {
    v.into_iter().map(|p| p.name.as_str()).collect()
}

#[test]
fn list_helpers_filter_as_the_seed() {
    let s = sample();
    assert_eq!(
        names(filter_plugins_by_execution_mode(&s, ExecutionMode::Subprocess)),
        ["vllm"]
    );
    assert!(filter_plugins_by_execution_mode(&s, ExecutionMode::Docker).is_empty());
    assert_eq!(names(cloud_plugins(&s)), ["ft", "k8s"]);
    assert_eq!(names(local_plugins(&s)), ["whisper", "vllm", "svc"]);
    assert_eq!(names(configured_plugins(&s)), ["whisper", "ft"]);
    assert_eq!(names(unconfigured_plugins(&s)), ["vllm", "k8s", "svc"]);
}

#[test]
fn stats_fill_by_category_and_serialize() {
    let s = sample();
    let stats = plugin_stats(&s);
    assert_eq!(
        serde_json::to_value(&stats).unwrap(),
        json!({
            "total": 5, "configured": 2, "unconfigured": 3, "local": 3, "cloud": 2,
            "with_active_resources": 2,
            "by_category": {"finetuning": 2, "llm": 1, "transcription": 2}
        })
    );
    assert_eq!(plugin_stats(&Vec::new()).total, 0);
}
