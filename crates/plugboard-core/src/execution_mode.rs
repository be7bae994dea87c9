//! Where a plugin runs and, for remote modes, whose cloud it runs on.
//!
//! The strings are the seed library's enum values, byte for byte: they are what
//! travels in JSON, what manifests say and what the CLI accepts, so a value
//! written by the Python library reads here unchanged and back.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::UnknownVariant;

/// How and where a plugin executes, from in-process to a cluster.
///
/// Serialized as the seed's lowercase strings (`"in_process"`, `"cloud_gpu"`…).
///
/// ```
/// use plugboard_core::ExecutionMode;
///
/// let mode: ExecutionMode = "cloud_gpu".parse().unwrap();
/// assert_eq!(mode, ExecutionMode::CloudGpu);
/// assert!(mode.is_cloud());
/// assert_eq!(serde_json::to_string(&ExecutionMode::ExternalService).unwrap(), "\"external\"");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub enum ExecutionMode {
    /// Runs inside the host process.
    #[default]
    #[serde(rename = "in_process")]
    InProcess,
    /// A local child process.
    #[serde(rename = "subprocess")]
    Subprocess,
    /// A local container.
    #[serde(rename = "docker")]
    Docker,
    /// A local process inside a conda environment.
    #[serde(rename = "conda_env")]
    CondaEnv,
    /// A service that already runs and is only called (the seed's `EXTERNAL_SERVICE`).
    #[serde(rename = "external")]
    ExternalService,
    /// A machine reached over SSH.
    #[serde(rename = "remote_ssh")]
    RemoteSsh,
    /// A cloud virtual machine.
    #[serde(rename = "cloud_vm")]
    CloudVm,
    /// A cloud container service.
    #[serde(rename = "cloud_container")]
    CloudContainer,
    /// A serverless cloud function.
    #[serde(rename = "cloud_serverless")]
    CloudServerless,
    /// A rented cloud GPU.
    #[serde(rename = "cloud_gpu")]
    CloudGpu,
    /// A rented cloud CPU machine.
    #[serde(rename = "cloud_cpu")]
    CloudCpu,
    /// A Kubernetes cluster.
    #[serde(rename = "kubernetes")]
    Kubernetes,
}

impl ExecutionMode {
    /// Every mode, in the seed's declaration order.
    pub const ALL: [ExecutionMode; 12] = [
        ExecutionMode::InProcess,
        ExecutionMode::Subprocess,
        ExecutionMode::Docker,
        ExecutionMode::CondaEnv,
        ExecutionMode::ExternalService,
        ExecutionMode::RemoteSsh,
        ExecutionMode::CloudVm,
        ExecutionMode::CloudContainer,
        ExecutionMode::CloudServerless,
        ExecutionMode::CloudGpu,
        ExecutionMode::CloudCpu,
        ExecutionMode::Kubernetes,
    ];

    /// The seed's value string, e.g. `"conda_env"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ExecutionMode::InProcess => "in_process",
            ExecutionMode::Subprocess => "subprocess",
            ExecutionMode::Docker => "docker",
            ExecutionMode::CondaEnv => "conda_env",
            ExecutionMode::ExternalService => "external",
            ExecutionMode::RemoteSsh => "remote_ssh",
            ExecutionMode::CloudVm => "cloud_vm",
            ExecutionMode::CloudContainer => "cloud_container",
            ExecutionMode::CloudServerless => "cloud_serverless",
            ExecutionMode::CloudGpu => "cloud_gpu",
            ExecutionMode::CloudCpu => "cloud_cpu",
            ExecutionMode::Kubernetes => "kubernetes",
        }
    }

    /// The seed's Python enum member name, e.g. `"EXTERNAL_SERVICE"`.
    pub const fn name(self) -> &'static str {
        match self {
            ExecutionMode::InProcess => "IN_PROCESS",
            ExecutionMode::Subprocess => "SUBPROCESS",
            ExecutionMode::Docker => "DOCKER",
            ExecutionMode::CondaEnv => "CONDA_ENV",
            ExecutionMode::ExternalService => "EXTERNAL_SERVICE",
            ExecutionMode::RemoteSsh => "REMOTE_SSH",
            ExecutionMode::CloudVm => "CLOUD_VM",
            ExecutionMode::CloudContainer => "CLOUD_CONTAINER",
            ExecutionMode::CloudServerless => "CLOUD_SERVERLESS",
            ExecutionMode::CloudGpu => "CLOUD_GPU",
            ExecutionMode::CloudCpu => "CLOUD_CPU",
            ExecutionMode::Kubernetes => "KUBERNETES",
        }
    }

    /// True for the seed's local modes: in_process, subprocess, docker,
    /// conda_env and external.
    pub const fn is_local(self) -> bool {
        matches!(
            self,
            ExecutionMode::InProcess
                | ExecutionMode::Subprocess
                | ExecutionMode::Docker
                | ExecutionMode::CondaEnv
                | ExecutionMode::ExternalService
        )
    }

    /// True for every mode that is not local (remote SSH, cloud, cluster).
    pub const fn is_cloud(self) -> bool {
        !self.is_local()
    }
}

impl fmt::Display for ExecutionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExecutionMode {
    type Err = UnknownVariant;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExecutionMode::ALL
            .iter()
            .copied()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownVariant {
                kind: "execution mode",
                given: s.to_owned(),
                valid: ExecutionMode::ALL.iter().map(|m| m.as_str()).collect(),
            })
    }
}

/// Cloud providers and GPU rental services for remote execution.
///
/// ```
/// use plugboard_core::CloudProvider;
///
/// assert_eq!("lambda_labs".parse::<CloudProvider>().unwrap(), CloudProvider::LambdaLabs);
/// assert!("ibm".parse::<CloudProvider>().unwrap_err().to_string().contains("aws"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloudProvider {
    /// Amazon Web Services.
    Aws,
    /// Google Cloud Platform.
    Gcp,
    /// Microsoft Azure.
    Azure,
    /// Lambda Labs GPU cloud.
    LambdaLabs,
    /// RunPod.
    Runpod,
    /// Vast.ai.
    VastAi,
    /// Paperspace.
    Paperspace,
    /// Together AI.
    TogetherAi,
    /// Anything else, described by the resource's metadata.
    Custom,
}

impl CloudProvider {
    /// Every provider, in the seed's declaration order.
    pub const ALL: [CloudProvider; 9] = [
        CloudProvider::Aws,
        CloudProvider::Gcp,
        CloudProvider::Azure,
        CloudProvider::LambdaLabs,
        CloudProvider::Runpod,
        CloudProvider::VastAi,
        CloudProvider::Paperspace,
        CloudProvider::TogetherAi,
        CloudProvider::Custom,
    ];

    /// The seed's value string, e.g. `"vast_ai"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CloudProvider::Aws => "aws",
            CloudProvider::Gcp => "gcp",
            CloudProvider::Azure => "azure",
            CloudProvider::LambdaLabs => "lambda_labs",
            CloudProvider::Runpod => "runpod",
            CloudProvider::VastAi => "vast_ai",
            CloudProvider::Paperspace => "paperspace",
            CloudProvider::TogetherAi => "together_ai",
            CloudProvider::Custom => "custom",
        }
    }
}

impl fmt::Display for CloudProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CloudProvider {
    type Err = UnknownVariant;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CloudProvider::ALL
            .iter()
            .copied()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownVariant {
                kind: "cloud provider",
                given: s.to_owned(),
                valid: CloudProvider::ALL.iter().map(|p| p.as_str()).collect(),
            })
    }
}
