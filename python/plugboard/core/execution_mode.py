"""Enum definitions for plugin execution modes (in-process, subprocess, Docker, cloud, etc.)

The members and values are the seed's, in the seed's order; the values are
what travels in JSON and what plugboard's Rust core, manifests and CLI use.
"""

from enum import Enum

__all__ = ["PluginExecutionMode", "CloudProviderType"]


class PluginExecutionMode(Enum):
    """Categorizes plugins by their execution environment, from in-process to cloud deployments."""

    IN_PROCESS = "in_process"  # inside the application process
    SUBPROCESS = "subprocess"  # a local child process (tree)
    DOCKER = "docker"  # a local container
    CONDA_ENV = "conda_env"  # a local process in a conda environment
    EXTERNAL_SERVICE = "external"  # a service someone else runs, only called

    # remote and cloud modes
    REMOTE_SSH = "remote_ssh"  # a machine reached over SSH
    CLOUD_VM = "cloud_vm"  # a cloud virtual machine
    CLOUD_CONTAINER = "cloud_container"  # a cloud container service
    CLOUD_SERVERLESS = "cloud_serverless"  # a serverless function
    CLOUD_GPU = "cloud_gpu"  # a rented cloud GPU
    CLOUD_CPU = "cloud_cpu"  # a rented cloud CPU machine
    KUBERNETES = "kubernetes"  # a Kubernetes cluster


class CloudProviderType(Enum):
    """Cloud providers and GPU rental services for remote execution."""

    AWS = "aws"
    GCP = "gcp"
    AZURE = "azure"
    LAMBDA_LABS = "lambda_labs"
    RUNPOD = "runpod"
    VAST_AI = "vast_ai"
    PAPERSPACE = "paperspace"
    TOGETHER_AI = "together_ai"
    CUSTOM = "custom"  # self-hosted or any other provider
