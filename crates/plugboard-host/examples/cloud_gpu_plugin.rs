//! The seed's `MockCloudPlugin`, for real: a plugin that provisions a GPU
//! instance on Lambda Cloud through the cloud-aware protocol, checks its
//! status, estimates its cost for 1 and 8 hours, and terminates it,
//! printing the same lines as the seed's example.
//!
//! Nothing it creates can leak: the ledger row is written before the
//! instance is created, the instance carries the row's marker as its name,
//! and termination is confirmed by the provider before the row is ended.
//! Were it killed half-way, `plugboard gc` on the same data dir finds the
//! instance by its marker and terminates it.
//!
//! ```text
//! LAMBDA_API_KEY=… cargo run -p plugboard-host --example cloud_gpu_plugin -- \
//!     [--instance-type gpu_4x_a100] [--region us-west-1] [--ssh-key-name my-key] [--data-dir DIR] [--endpoint URL]
//! ```
//! (`--endpoint` or `PLUGBOARD_LAMBDA_API_URL` points it at another API;
//! the key comes from `LAMBDA_API_KEY` or the data dir's secret store.)

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use plugboard_core::{CloudAware, is_cloud_aware};
use plugboard_host::cloud::capability::CloudInstance;
use plugboard_host::cloud::{InstanceRequest, lambda};
use plugboard_host::ledger::{Intent, ResourceHandle, ResourceKind, ResourceStatus};
use plugboard_host::{DataDir, Ledger};
use serde_json::json;

/// What to rent, from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// Lambda's instance type.
    pub instance_type: String,
    /// The region.
    pub region: String,
    /// The SSH key (registered at Lambda) to install.
    pub ssh_key_name: String,
    /// The data dir holding the ledger and the secret store.
    pub data_dir: PathBuf,
    /// The API's base URL (else `PLUGBOARD_LAMBDA_API_URL`, else Lambda's).
    pub endpoint: Option<String>,
}

impl Options {
    /// Reads `--instance-type`, `--region`, `--ssh-key-name`, `--data-dir`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut o = Options {
            instance_type: "gpu_4x_a100".into(),
            region: "us-west-1".into(),
            ssh_key_name: std::env::var("LAMBDA_SSH_KEY_NAME").unwrap_or_else(|_| "default".into()),
            data_dir: DataDir::default_root(),
            endpoint: None,
        };
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().ok_or(format!("{a} needs a value"));
            match a.as_str() {
                "--instance-type" => o.instance_type = value()?,
                "--region" => o.region = value()?,
                "--ssh-key-name" => o.ssh_key_name = value()?,
                "--data-dir" => o.data_dir = PathBuf::from(value()?),
                "--endpoint" => o.endpoint = Some(value()?),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(o)
    }
}

fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// Runs the seed's scenario, printing to `out`.
pub fn run(opts: &Options, out: &mut dyn Write) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let data = DataDir::new(&opts.data_dir);
    data.ensure()?;
    let store = plugboard_host::secrets::SecretStore::open(data.secrets_path()).ok();
    let key = plugboard_host::secrets::lookup(lambda::KEY_ENV, store.as_ref()).map(|(k, _)| k);
    let provider = Arc::new(match (&opts.endpoint, key) {
        (Some(url), Some(key)) => lambda::Lambda::new(url, key)?,
        (_, key) => lambda::Lambda::from_env(key)?,
    });

    // Intent first: the row, then its marker on the instance.
    let ledger = Ledger::open(&data.ledger_path())?;
    let me = ledger.register_current_host()?;
    let details = json!({ "provider": lambda::NAME, "regions": [opts.region] });
    let mut intent = Intent::new(ResourceKind::Instance, "cloud", "example_cloud_gpu");
    intent.details = details;
    let row = ledger.intent(me.id, &intent)?;
    let marker = ledger.marker(row);

    let plugin = CloudInstance::new(
        provider,
        vec![opts.region.clone()],
        InstanceRequest {
            instance_type: opts.instance_type.clone(),
            image: None,
            ssh_key_name: Some(opts.ssh_key_name.clone()),
            user_data: None,
            tags: vec![],
            ..Default::default()
        },
        marker,
    )?;

    writeln!(out, "Implements protocol: {}", py_bool(is_cloud_aware(&plugin)))?;
    writeln!(out, "\nInitial status: {}", plugin.check_status()?)?;
    writeln!(
        out,
        "Resource info: {}",
        plugin
            .remote_resource_info()
            .map_or("None".to_owned(), |r| format!("{r:?}"))
    )?;

    writeln!(out, "Provisioning cloud GPU instance...")?;
    let resource = match plugin.provision(&serde_json::Map::new()) {
        Ok(r) => r,
        Err(e) => {
            // Nothing was confirmed running; what may exist carries the marker.
            let _ = plugin.terminate();
            ledger.end(row, ResourceStatus::Failed, None, None)?;
            return Err(e);
        }
    };
    if let (Some(region), Some(id)) = (&resource.region, &resource.instance_id) {
        ledger.set_handle(
            row,
            &ResourceHandle::Instance {
                provider: lambda::NAME.into(),
                region: region.clone(),
                id: id.clone(),
            },
            None,
        )?;
    }
    if let Some(p) = resource.estimated_cost_per_hour {
        ledger.set_price(row, p, plugboard_host::ledger::PriceSource::Provider)?;
    }
    ledger.set_status(row, ResourceStatus::Running)?;
    writeln!(out, "Provisioned: {}", resource.resource_type.as_deref().unwrap_or("?"))?;

    writeln!(out, "\nAfter provisioning:")?;
    writeln!(out, "  Status: {}", plugin.check_status()?)?;
    writeln!(out, "  Provider: {}", resource.provider)?;
    writeln!(
        out,
        "  GPUs: {}x {}",
        resource.gpu_count,
        resource.gpu_type.as_deref().unwrap_or("GPU")
    )?;
    writeln!(out, "  Cost: ${}/hour", resource.estimated_cost_per_hour.unwrap_or(0.0))?;

    writeln!(out, "\nCost estimates:")?;
    writeln!(out, "  1 hour: ${:.2}", plugin.estimate_cost(1.0))?;
    writeln!(out, "  8 hours: ${:.2}", plugin.estimate_cost(8.0))?;

    writeln!(
        out,
        "Terminating instance: {}",
        resource.instance_id.as_deref().unwrap_or("?")
    )?;
    let terminated = plugin.terminate()?;
    ledger.end(row, ResourceStatus::Stopped, None, None)?;
    writeln!(out, "\nTermination successful: {}", py_bool(terminated))?;
    writeln!(out, "Final status: {}", plugin.check_status()?)?;
    ledger.end_host(me.id)?;
    Ok(())
}

#[allow(dead_code)]
fn main() {
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cloud_gpu_plugin: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&opts, &mut std::io::stdout()) {
        eprintln!("cloud_gpu_plugin: {e}");
        let mut src = e.source();
        while let Some(s) = src {
            eprintln!("  caused by: {s}");
            src = s.source();
        }
        std::process::exit(1);
    }
}
