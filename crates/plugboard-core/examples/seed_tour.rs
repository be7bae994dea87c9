//! Every example of the seed library's documentation, done with
//! plugboard-core, printing the same lines the seed documents show.
//!
//! Run with `cargo run --example seed_tour -p plugboard-core`.

use std::sync::Mutex;

use plugboard_core::{
    CapabilityError, CloudAware, CloudProvider, ExecutionMode, Plugin, PluginMetadata, RemoteResource,
    has_active_cloud_resources, is_cloud_aware, total_estimated_cost,
};
use serde_json::{Map, Value, json};

/// The seed's `MockCloudPlugin`: provisions a pretend Lambda Labs instance.
struct MockCloudPlugin {
    remote_resource: Mutex<Option<RemoteResource>>,
}

impl MockCloudPlugin {
    fn new() -> Self {
        MockCloudPlugin {
            remote_resource: Mutex::new(None),
        }
    }

    fn resource(&self) -> std::sync::MutexGuard<'_, Option<RemoteResource>> {
        // A poisoned lock only means another thread panicked mid-update; the
        // value is still a whole Option.
        self.remote_resource.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Plugin for MockCloudPlugin {
    fn cloud(&self) -> Option<&dyn CloudAware> {
        Some(self)
    }
}

impl CloudAware for MockCloudPlugin {
    fn remote_resource_info(&self) -> Option<RemoteResource> {
        self.resource().clone()
    }

    fn provision(&self, _config: &Map<String, Value>) -> Result<RemoteResource, CapabilityError> {
        println!("Provisioning cloud GPU instance...");
        let mut r = RemoteResource::new(CloudProvider::LambdaLabs);
        r.instance_id = Some("0x1a2b3c4d".into());
        r.resource_type = Some("4x_A100".into());
        r.gpu_count = 4;
        r.gpu_type = Some("A100".into());
        r.status = "running".into();
        r.estimated_cost_per_hour = Some(4.40);
        r.ssh_host = Some("54.123.45.67".into());
        r.region = Some("us-west-1".into());
        println!("Provisioned: {}", r.resource_type.as_deref().unwrap_or_default());
        *self.resource() = Some(r.clone());
        Ok(r)
    }

    fn check_status(&self) -> Result<String, CapabilityError> {
        Ok(match self.resource().as_ref() {
            Some(r) => r.status.clone(),
            None => "not_provisioned".into(),
        })
    }

    fn terminate(&self) -> Result<bool, CapabilityError> {
        let mut guard = self.resource();
        match guard.as_mut() {
            Some(r) => {
                println!("Terminating instance: {}", r.instance_id.as_deref().unwrap_or_default());
                r.status = "terminated".into();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn estimate_cost(&self, hours: f64) -> f64 {
        self.resource()
            .as_ref()
            .map_or(0.0, |r| hours * r.estimated_cost_per_hour.unwrap_or(0.0))
    }
}

fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("None")
}

/// Python's repr of a float: `24.5`, `4.4`, `12.24` (Rust's `{}` agrees for
/// these values, and adds the `.0` Python shows for whole numbers).
fn py_float(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

fn main() -> Result<(), CapabilityError> {
    // execution_mode.md
    println!("Local execution modes:");
    for mode in [
        ExecutionMode::InProcess,
        ExecutionMode::Subprocess,
        ExecutionMode::Docker,
    ] {
        println!("  {}: {}", mode.name(), mode);
    }
    println!("\nCloud execution modes:");
    for mode in [
        ExecutionMode::CloudVm,
        ExecutionMode::CloudGpu,
        ExecutionMode::CloudServerless,
    ] {
        println!("  {}: {}", mode.name(), mode);
    }
    println!();
    println!("IN_PROCESS is local: {}", py_bool(ExecutionMode::InProcess.is_local()));
    println!("CLOUD_GPU is local: {}", py_bool(ExecutionMode::CloudGpu.is_local()));
    println!("CLOUD_GPU is cloud: {}", py_bool(ExecutionMode::CloudGpu.is_cloud()));
    println!();
    println!("Supported cloud providers:");
    for provider in CloudProvider::ALL {
        println!("  - {provider}");
    }

    // metadata.md: resources
    println!();
    let mut aws = RemoteResource::new(CloudProvider::Aws);
    aws.region = Some("us-west-2".into());
    aws.instance_id = Some("i-1234567890abcdef".into());
    aws.resource_type = Some("p3.8xlarge".into());
    aws.gpu_count = 4;
    aws.gpu_type = Some("V100".into());
    aws.status = "running".into();
    aws.estimated_cost_per_hour = Some(12.24);
    aws.ssh_host = Some("54.123.45.67".into());
    println!("Provider: {}", aws.provider);
    println!("Instance: {}", opt(&aws.instance_id));
    println!("GPUs: {}x {}", aws.gpu_count, opt(&aws.gpu_type));
    println!(
        "Cost: ${}/hour",
        py_float(aws.estimated_cost_per_hour.unwrap_or_default())
    );

    println!();
    let mut lambda = RemoteResource::new(CloudProvider::LambdaLabs);
    lambda.instance_id = Some("0x1a2b3c4d".into());
    lambda.resource_type = Some("4x_A100".into());
    lambda.gpu_count = 4;
    lambda.gpu_type = Some("A100".into());
    lambda.status = "provisioning".into();
    lambda.estimated_cost_per_hour = Some(4.40);
    lambda.region = Some("us-west-1".into());
    println!("Provider: {}", lambda.provider);
    println!("Status: {}", lambda.status);
    println!("Configuration: {}", opt(&lambda.resource_type));

    // metadata.md: plugins
    println!();
    let mut simple = PluginMetadata::new("whisper_tiny", "transcription", "Whisper Tiny Model").with_schema(json!({
        "type": "object",
        "properties": {"device": {"type": "string", "enum": ["cpu", "cuda"], "default": "cpu"}}
    }));
    simple.version = Some("1.0.0".into());
    simple.is_configured = true;
    println!("Plugin: {}", simple.title);
    println!("Unique ID: {}", simple.unique_id());
    println!("Execution mode: {}", simple.execution_mode);
    println!("Is local: {}", py_bool(simple.is_local_execution()));
    println!("Has active resources: {}", py_bool(simple.has_active_resources()));

    println!();
    let mut vllm = PluginMetadata::new("voxtral_vllm", "transcription", "Voxtral via vLLM Server")
        .with_schema(json!({"type": "object", "properties": {}}))
        .with_mode(ExecutionMode::Subprocess);
    vllm.manages_child_processes = true;
    vllm.manages_external_resources = true;
    vllm.spawned_pids = vec![54321, 54322, 54323];
    println!("Plugin: {}", vllm.title);
    println!("Execution mode: {}", vllm.execution_mode);
    println!("Manages child processes: {}", py_bool(vllm.manages_child_processes));
    let pids: Vec<String> = vllm.spawned_pids.iter().map(u32::to_string).collect();
    println!("Spawned PIDs: [{}]", pids.join(", "));
    println!("Has active resources: {}", py_bool(vllm.has_active_resources()));

    println!();
    let mut cloud = PluginMetadata::new("llm_finetune_aws", "finetuning", "AWS LLM Finetuning")
        .with_schema(json!({"type": "object", "properties": {}}))
        .with_mode(ExecutionMode::CloudGpu);
    cloud.manages_external_resources = true;
    let mut r = RemoteResource::new(CloudProvider::Aws);
    r.instance_id = Some("i-abcd1234".into());
    r.status = "running".into();
    r.gpu_count = 8;
    r.gpu_type = Some("A100".into());
    r.estimated_cost_per_hour = Some(24.50);
    cloud.remote_resource = Some(Box::new(r));
    println!("Plugin: {}", cloud.title);
    println!("Execution mode: {}", cloud.execution_mode);
    println!("Is cloud: {}", py_bool(cloud.is_cloud_execution()));
    if let Some(r) = &cloud.remote_resource {
        println!("Provider: {}", r.provider);
        println!("Instance: {}", opt(&r.instance_id));
        println!(
            "Cost: ${}/hour",
            py_float(r.estimated_cost_per_hour.unwrap_or_default())
        );
    }
    println!("Has active resources: {}", py_bool(cloud.has_active_resources()));

    // cloud_aware.md: the mock plugin
    println!();
    let plugin = MockCloudPlugin::new();
    println!("Implements protocol: {}", py_bool(is_cloud_aware(&plugin)));
    println!("\nInitial status: {}", plugin.check_status()?);
    println!(
        "Resource info: {}",
        plugin
            .remote_resource_info()
            .map_or("None".to_owned(), |r| format!("{r:?}"))
    );
    let resource = plugin.provision(&Map::new())?;
    println!("\nAfter provisioning:");
    println!("  Status: {}", plugin.check_status()?);
    println!("  Provider: {}", resource.provider);
    println!("  GPUs: {}x {}", resource.gpu_count, opt(&resource.gpu_type));
    println!(
        "  Cost: ${}/hour",
        py_float(resource.estimated_cost_per_hour.unwrap_or_default())
    );
    println!("\nCost estimates:");
    println!("  1 hour: ${:.2}", plugin.estimate_cost(1.0));
    println!("  8 hours: ${:.2}", plugin.estimate_cost(8.0));
    let success = plugin.terminate()?;
    println!("\nTermination successful: {}", py_bool(success));
    println!("Final status: {}", plugin.check_status()?);

    // cloud_aware.md: helpers over several plugins
    println!();
    let plugin1 = MockCloudPlugin::new();
    plugin1.provision(&Map::new())?;
    let plugin2 = MockCloudPlugin::new();
    plugin2.provision(&Map::new())?;
    println!("Plugin 1 is cloud aware: {}", py_bool(is_cloud_aware(&plugin1)));
    println!(
        "Plugin 1 has active resources: {}",
        py_bool(has_active_cloud_resources(&plugin1))
    );
    let not_a_plugin = json!({"not": "a plugin"});
    let plugins: [&dyn Plugin; 3] = [&plugin1, &plugin2, &not_a_plugin];
    println!("\nTotal cost for 2 plugins:");
    println!("  1 hour: ${:.2}", total_estimated_cost(&plugins, 1.0));
    println!("  24 hours: ${:.2}", total_estimated_cost(&plugins, 24.0));
    plugin1.terminate()?;
    plugin2.terminate()?;
    println!("\nAfter termination:");
    println!(
        "Plugin 1 has active resources: {}",
        py_bool(has_active_cloud_resources(&plugin1))
    );
    Ok(())
}
