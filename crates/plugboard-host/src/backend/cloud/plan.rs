//! The cloud `[launch]` table (cloud_vm, cloud_gpu, cloud_cpu,
//! cloud_container), checked
//! before anything is created: the provider and where, what to rent, the
//! price cap, how to reach it over SSH, the worker, the lease.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::backend::remote_ssh::{WorkerParts, expand_path, worker_parts};
use crate::cloud::InstanceRequest;
use crate::error::HostError;
use crate::ledger::PriceSource;
use crate::manifest::Manifest;

const KEYS: &str = "provider, regions, region, instance_type, gpu_type, gpu_count, image, ssh_key_name, \
                    max_price_per_hour, ssh_user, ssh_port, identity_file, connect_timeout_s, alive_interval_s, \
                    lease_s, max_lifetime_s, workdir, upload, remote_socket, disk_gb, cloud_type, min_reliability";

/// The providers with a cloud instance backend.
pub const PROVIDERS: &[&str] = &["aws", "lambda_labs", "runpod", "vast_ai"];

/// The providers that rent containers by GPU model: no instance type, an
/// image required, any region by default.
const CONTAINER_PROVIDERS: &[&str] = &["runpod", "vast_ai"];

/// A checked cloud launch.
pub(crate) struct CloudSpec {
    pub provider: String,
    pub regions: Vec<String>,
    pub request: InstanceRequest,
    pub max_price: Option<f64>,
    pub ssh_user: String,
    pub ssh_port: u16,
    pub identity_file: PathBuf,
    pub connect_timeout: Duration,
    pub alive_interval: Duration,
    pub lease: Duration,
    pub max_lifetime: Option<Duration>,
    pub boot_limit: Duration,
    pub worker: WorkerParts,
}

impl CloudSpec {
    /// What the ledger records at intent (no secrets): enough for a stop
    /// or a sweep with no handle yet to know where to look.
    pub fn details(&self) -> Value {
        json!({
            "provider": self.provider,
            "regions": self.regions,
            "instance_type": self.request.instance_type,
            "gpu_type": self.request.gpu_type,
            "gpu_count": self.request.gpu_count,
            "image": self.request.image,
            "ssh_user": self.ssh_user,
            "ssh_port": self.ssh_port,
            "identity_file": self.identity_file,
            "lease_s": self.lease.as_secs(),
            "max_lifetime_s": self.max_lifetime.map(|d| d.as_secs()),
            "max_price_per_hour": self.max_price,
            "command": self.worker.argv,
            "remote_socket": self.worker.remote_socket,
        })
    }
}

/// The instance type for a GPU model and count where the manifest gives
/// those instead of a type: Lambda's `gpu_{N}x_{model}` names, and the
/// EC2 families for common GPUs.
pub fn instance_type_for_gpu(provider: &str, gpu: &str, count: u32) -> Option<String> {
    let g = gpu.to_ascii_lowercase().replace([' ', '-'], "_");
    match provider {
        "lambda_labs" => Some(format!("gpu_{count}x_{g}")),
        "aws" => {
            let t = match (g.as_str(), count) {
                ("t4", 1) => "g4dn.xlarge",
                ("t4", 4) => "g4dn.12xlarge",
                ("a10g", 1) => "g5.xlarge",
                ("a10g", 4) => "g5.12xlarge",
                ("a10g", 8) => "g5.48xlarge",
                ("l4", 1) => "g6.xlarge",
                ("l4", 4) => "g6.12xlarge",
                ("v100", 1) => "p3.2xlarge",
                ("v100", 4) => "p3.8xlarge",
                ("v100", 8) => "p3.16xlarge",
                ("a100", 8) => "p4d.24xlarge",
                ("h100", 8) => "p5.48xlarge",
                _ => return None,
            };
            Some(t.to_owned())
        }
        _ => None,
    }
}

/// Reads and checks the manifest's `[launch]` for a cloud instance mode.
pub(crate) fn plan_spec(m: &Manifest, vars: &BTreeMap<String, String>) -> Result<CloudSpec, HostError> {
    let bad = |key: &str, reason: String| HostError::BadLaunch {
        plugin: m.unique_id(),
        manifest: m.path.clone(),
        key: key.to_owned(),
        reason,
    };
    let missing = |field: &'static str| HostError::MissingLaunch {
        plugin: m.unique_id(),
        field,
        mode: m.execution_mode,
        manifest: m.path.clone(),
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
            "is not used by cloud plugins; use launch.workdir (a directory on the instance)".into(),
        ));
    }
    if l.conda_env.is_some() {
        return Err(bad("conda_env", format!("is not a cloud launch key ({KEYS})")));
    }
    for key in l.extra.keys() {
        if !KEYS.split(',').any(|k| k.trim() == key) {
            return Err(bad(key, format!("is not a cloud launch key ({KEYS})")));
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
    let seconds = |key: &str, lo: u64, hi: u64| -> Result<Option<Duration>, HostError> {
        match l.extra.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_integer()
                .filter(|s| (lo as i64..=hi as i64).contains(s))
                .map(|s| Some(Duration::from_secs(s as u64)))
                .ok_or_else(|| bad(key, format!("must be a whole number of seconds from {lo} to {hi}"))),
        }
    };
    let provider = string("provider")?.ok_or_else(|| missing("provider"))?;
    if !PROVIDERS.contains(&provider.as_str()) {
        return Err(bad(
            "provider",
            format!(
                "{provider:?} has no cloud instance backend (one of: {})",
                PROVIDERS.join(", ")
            ),
        ));
    }
    let mut regions = Vec::new();
    if let Some(v) = l.extra.get("regions") {
        let shape = || {
            bad(
                "regions",
                "must be a non-empty list of region names, in order of preference".into(),
            )
        };
        for r in v.as_array().ok_or_else(shape)? {
            let r = r.as_str().filter(|s| !s.is_empty()).ok_or_else(shape)?;
            regions.push(expand(r)?);
        }
        if regions.is_empty() {
            return Err(shape());
        }
    }
    if let Some(r) = string("region")? {
        if !regions.is_empty() {
            return Err(bad("region", "give either region or regions, not both".into()));
        }
        regions.push(r);
    }
    let container = CONTAINER_PROVIDERS.contains(&provider.as_str());
    if regions.is_empty() {
        if !container {
            return Err(missing("regions"));
        }
        // RunPod and Vast.ai place a pod wherever the GPU is.
        regions.push("any".into());
    }
    for r in &regions {
        if !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(bad("regions", format!("{r:?} is not a region name")));
        }
    }
    let gpu_count = match l.extra.get("gpu_count") {
        None => None,
        Some(v) => Some(
            v.as_integer()
                .and_then(|c| u32::try_from(c).ok())
                .filter(|c| (1..=64).contains(c))
                .ok_or_else(|| bad("gpu_count", "must be a whole number from 1 to 64".into()))?,
        ),
    };
    let gpu_type = string("gpu_type")?;
    let instance_type = match (string("instance_type")?, &gpu_type) {
        (Some(t), _) => t,
        // RunPod and Vast.ai rent by GPU model: the model is the type.
        (None, Some(g)) if container => g.clone(),
        (None, None) if container => return Err(missing("gpu_type")),
        (None, Some(g)) => instance_type_for_gpu(&provider, g, gpu_count.unwrap_or(1)).ok_or_else(|| {
            bad(
                "gpu_type",
                format!(
                    "plugboard knows no {provider} instance type with {} × {g}; give launch.instance_type",
                    gpu_count.unwrap_or(1)
                ),
            )
        })?,
        (None, None) => return Err(missing("instance_type")),
    };
    let max_price = match l.extra.get("max_price_per_hour") {
        None => None,
        Some(v) => Some(
            v.as_float()
                .or_else(|| v.as_integer().map(|i| i as f64))
                .filter(|p| p.is_finite() && *p > 0.0)
                .ok_or_else(|| bad("max_price_per_hour", "must be a positive number of USD".into()))?,
        ),
    };
    if let (Some(max), Some((est, _))) = (max_price, m.price_estimate())
        && est > max
    {
        return Err(bad(
            "max_price_per_hour",
            format!("the manifest's estimated_cost_per_hour ({est}) is above max_price_per_hour ({max})"),
        ));
    }
    let disk_gb = match l.extra.get("disk_gb") {
        None => None,
        Some(v) => Some(
            v.as_integer()
                .and_then(|c| u32::try_from(c).ok())
                .filter(|c| (1..=100_000).contains(c))
                .ok_or_else(|| bad("disk_gb", "must be a whole number of GB from 1 to 100000".into()))?,
        ),
    };
    let cloud_type = match string("cloud_type")? {
        None => None,
        Some(c) => {
            if provider != "runpod" {
                return Err(bad(
                    "cloud_type",
                    format!("is a RunPod key; {provider} has no cloud types"),
                ));
            }
            let up = c.to_ascii_uppercase();
            if up != "SECURE" && up != "COMMUNITY" {
                return Err(bad("cloud_type", format!("{c:?} is neither SECURE nor COMMUNITY")));
            }
            Some(up)
        }
    };
    let min_reliability = match l.extra.get("min_reliability") {
        None => None,
        Some(v) => {
            let r = v
                .as_float()
                .or_else(|| v.as_integer().map(|i| i as f64))
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| bad("min_reliability", "must be a number from 0 to 1".into()))?;
            if provider != "vast_ai" {
                return Err(bad(
                    "min_reliability",
                    format!("is a Vast.ai key; {provider} publishes no host reliability"),
                ));
            }
            Some(r)
        }
    };
    let image = string("image")?;
    if container && image.is_none() {
        return Err(missing("image"));
    }
    let default_user = if container { "root" } else { "ubuntu" };
    let ssh_user = string("ssh_user")?.unwrap_or_else(|| default_user.into());
    if ssh_user.starts_with('-') || ssh_user.contains(char::is_whitespace) {
        return Err(bad("ssh_user", format!("{ssh_user:?} is not a login name")));
    }
    let ssh_port = match l.extra.get("ssh_port") {
        None => 22,
        Some(v) => v
            .as_integer()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("ssh_port", "must be a port number from 1 to 65535".into()))?,
    };
    let identity_file = string("identity_file")?.ok_or_else(|| missing("identity_file"))?;
    let identity_file = expand_path(&m.dir, &identity_file);
    if !identity_file.is_file() {
        return Err(bad(
            "identity_file",
            format!("{} is not a readable file", identity_file.display()),
        ));
    }
    let lease = seconds("lease_s", 2, 86_400)?.unwrap_or(Duration::from_secs(600));
    let max_lifetime = seconds("max_lifetime_s", 60, 30 * 86_400)?;
    let worker = worker_parts(m, vars)?;
    Ok(CloudSpec {
        request: InstanceRequest {
            instance_type,
            image,
            ssh_key_name: string("ssh_key_name")?,
            user_data: None,
            tags: vec![("plugboard:plugin".into(), m.unique_id())],
            gpu_type,
            gpu_count: gpu_count.unwrap_or(1),
            disk_gb,
            cloud_type,
            min_reliability,
            max_price,
        },
        provider,
        regions,
        max_price,
        ssh_user,
        ssh_port,
        identity_file,
        connect_timeout: seconds("connect_timeout_s", 1, 3600)?.unwrap_or(Duration::from_secs(10)),
        alive_interval: seconds("alive_interval_s", 1, 3600)?.unwrap_or(Duration::from_secs(2)),
        lease,
        max_lifetime,
        boot_limit: Duration::from_secs_f64(m.provision_timeout_s),
        worker,
    })
}

/// The manifest's price estimate, for providers that quote none.
pub(crate) fn manifest_price(m: &Manifest) -> Option<(f64, PriceSource)> {
    m.price_estimate()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(launch: &str) -> Result<CloudSpec, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("key"), "k").map_err(|e| e.to_string())?;
        let text = format!(
            "name = \"c\"\ncategory = \"test\"\nexecution_mode = \"cloud_gpu\"\n[resources]\nestimated_cost_per_hour = 2.0\n[launch]\n{launch}\n"
        );
        let path = dir.path().join("plugin.toml");
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        let m = Manifest::load(&path).map_err(|e| e.to_string())?;
        plan_spec(&m, &BTreeMap::new()).map_err(|e| e.to_string())
    }

    const OK: &str = "provider = \"lambda_labs\"\nregions = [\"us-west-1\", \"us-east-1\"]\ninstance_type = \"gpu_1x_a10\"\n\
                      identity_file = \"key\"\nssh_key_name = \"me\"\ncommand = \"python3\"\nargs = [\"w.py\"]";

    #[test]
    fn a_full_table_plans() {
        let s = plan(&format!(
            "{OK}\nmax_price_per_hour = 3.5\nlease_s = 120\nssh_port = 2222"
        ))
        .expect("plans");
        assert_eq!(s.regions, vec!["us-west-1", "us-east-1"]);
        assert_eq!(s.request.instance_type, "gpu_1x_a10");
        assert_eq!(s.max_price, Some(3.5));
        assert_eq!(s.lease, Duration::from_secs(120));
        assert_eq!(s.ssh_port, 2222);
        assert_eq!(s.ssh_user, "ubuntu");
        assert_eq!(s.worker.argv, vec!["python3", "w.py"]);
        let d = s.details();
        assert_eq!(d["provider"], "lambda_labs");
        assert_eq!(d["regions"][1], "us-east-1");
    }

    #[test]
    fn a_gpu_model_and_count_pick_the_type() {
        let s = plan(
            "provider = \"lambda_labs\"\nregion = \"us-west-1\"\ngpu_type = \"A100\"\ngpu_count = 8\n\
             identity_file = \"key\"\ncommand = \"w\"",
        )
        .expect("plans");
        assert_eq!(s.request.instance_type, "gpu_8x_a100");
        assert_eq!(instance_type_for_gpu("aws", "A10G", 1).as_deref(), Some("g5.xlarge"));
        assert_eq!(instance_type_for_gpu("aws", "A10G", 3), None);
    }

    #[test]
    fn container_providers_rent_by_gpu_model() {
        let s = plan(
            "provider = \"runpod\"\ngpu_type = \"NVIDIA RTX A4000\"\ngpu_count = 2\nimage = \"runpod/base\"\n\
             cloud_type = \"community\"\ndisk_gb = 30\nidentity_file = \"key\"\ncommand = \"w\"",
        )
        .expect("plans");
        assert_eq!(s.regions, vec!["any"]);
        assert_eq!(s.request.instance_type, "NVIDIA RTX A4000");
        assert_eq!(s.request.gpu_type.as_deref(), Some("NVIDIA RTX A4000"));
        assert_eq!(s.request.gpu_count, 2);
        assert_eq!(s.request.cloud_type.as_deref(), Some("COMMUNITY"));
        assert_eq!(s.request.disk_gb, Some(30));
        assert_eq!(s.ssh_user, "root");
        let v = plan(
            "provider = \"vast_ai\"\ngpu_type = \"RTX 4090\"\nimage = \"x\"\nmin_reliability = 0.98\n\
             max_price_per_hour = 2.5\nidentity_file = \"key\"\ncommand = \"w\"",
        )
        .expect("plans");
        assert_eq!(v.request.min_reliability, Some(0.98));
        assert_eq!(v.request.max_price, Some(2.5));
        const POD: &str =
            "provider = \"runpod\"\ngpu_type = \"A\"\nimage = \"i\"\nidentity_file = \"key\"\ncommand = \"w\"";
        for (launch, key) in [
            (format!("{POD}\ncloud_type = \"cheap\""), "cloud_type"),
            (format!("{POD}\ndisk_gb = 0"), "disk_gb"),
            (format!("{POD}\nmin_reliability = 0.9"), "min_reliability"),
            (POD.replace("image = \"i\"\n", ""), "image"),
            (POD.replace("gpu_type = \"A\"\n", ""), "gpu_type"),
            (
                "provider = \"vast_ai\"\ngpu_type = \"A\"\nimage = \"i\"\nmin_reliability = 2\nidentity_file = \"key\"\ncommand = \"w\"".into(),
                "min_reliability",
            ),
            (format!("{OK}\ncloud_type = \"SECURE\""), "cloud_type"),
        ] {
            match plan(&launch) {
                Ok(_) => panic!("planned: {launch}"),
                Err(e) => assert!(e.contains(key), "{launch}: {e}"),
            }
        }
    }

    #[test]
    fn bad_tables_name_the_key_before_anything_exists() {
        for (launch, key) in [
            (
                "regions = [\"r\"]\ninstance_type = \"t\"\nidentity_file = \"key\"\ncommand = \"w\"",
                "provider",
            ),
            (
                "provider = \"gcp\"\nregions = [\"r\"]\ninstance_type = \"t\"\nidentity_file = \"key\"\ncommand = \"w\"",
                "provider",
            ),
            (
                "provider = \"aws\"\nregions = []\ninstance_type = \"t\"\nidentity_file = \"key\"\ncommand = \"w\"",
                "regions",
            ),
            (
                "provider = \"aws\"\ninstance_type = \"t\"\nidentity_file = \"key\"\ncommand = \"w\"",
                "regions",
            ),
            (
                "provider = \"aws\"\nregions = [\"r\"]\nidentity_file = \"key\"\ncommand = \"w\"",
                "instance_type",
            ),
            (
                "provider = \"aws\"\nregions = [\"r\"]\ngpu_type = \"Z9\"\nidentity_file = \"key\"\ncommand = \"w\"",
                "gpu_type",
            ),
            (&format!("{OK}\nmax_price_per_hour = 1.0"), "max_price_per_hour"),
            (&format!("{OK}\nmax_price_per_hour = -1"), "max_price_per_hour"),
            (&format!("{OK}\nlease_s = 1"), "lease_s"),
            (&format!("{OK}\nssh_port = 0"), "ssh_port"),
            (&format!("{OK}\nhost = \"x\""), "host"),
            (
                "provider = \"aws\"\nregions = [\"r\"]\ninstance_type = \"t\"\nidentity_file = \"nope\"\ncommand = \"w\"",
                "identity_file",
            ),
            (
                "provider = \"aws\"\nregions = [\"r\"]\ninstance_type = \"t\"\nidentity_file = \"key\"",
                "command",
            ),
            (&format!("{OK}\nregion = \"x\""), "region"),
            (
                "provider = \"aws\"\nregions = [\"us east\"]\ninstance_type = \"t\"\nidentity_file = \"key\"\ncommand = \"w\"",
                "regions",
            ),
        ] {
            match plan(launch) {
                Ok(_) => panic!("planned: {launch}"),
                Err(e) => assert!(e.contains(key), "{launch}: {e}"),
            }
        }
    }
}
