"""The seed library's model (cjm-fasthtml-plugins core.execution_mode and
core.metadata), written from its documented signatures, used to check that
plugboard reads what the Python library writes and the other way round.

    python3 seed_model.py dump          # the seed's three examples, as the library serializes them
    python3 seed_model.py reload < x    # parse JSON into the dataclasses, serialize again
"""
import json
import sys
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional, Type


class PluginExecutionMode(Enum):
    IN_PROCESS = "in_process"
    SUBPROCESS = "subprocess"
    DOCKER = "docker"
    CONDA_ENV = "conda_env"
    EXTERNAL_SERVICE = "external"
    REMOTE_SSH = "remote_ssh"
    CLOUD_VM = "cloud_vm"
    CLOUD_CONTAINER = "cloud_container"
    CLOUD_SERVERLESS = "cloud_serverless"
    CLOUD_GPU = "cloud_gpu"
    CLOUD_CPU = "cloud_cpu"
    KUBERNETES = "kubernetes"


class CloudProviderType(Enum):
    AWS = "aws"
    GCP = "gcp"
    AZURE = "azure"
    LAMBDA_LABS = "lambda_labs"
    RUNPOD = "runpod"
    VAST_AI = "vast_ai"
    PAPERSPACE = "paperspace"
    TOGETHER_AI = "together_ai"
    CUSTOM = "custom"


@dataclass
class RemoteResourceInfo:
    provider: CloudProviderType
    region: Optional[str] = None
    instance_id: Optional[str] = None
    job_id: Optional[str] = None
    endpoint_url: Optional[str] = None
    ssh_host: Optional[str] = None
    ssh_port: int = 22
    status: str = "unknown"
    resource_type: Optional[str] = None
    gpu_count: int = 0
    gpu_type: Optional[str] = None
    estimated_cost_per_hour: Optional[float] = None
    metadata: Dict[str, Any] = field(default_factory=dict)


@dataclass
class PluginMetadata:
    name: str
    category: str
    title: str
    config_schema: Dict[str, Any]
    config_dataclass: Optional[Type] = None
    description: Optional[str] = None
    version: Optional[str] = None
    is_configured: bool = False
    execution_mode: PluginExecutionMode = PluginExecutionMode.IN_PROCESS
    manages_child_processes: bool = False
    manages_external_resources: bool = False
    spawned_pids: List[int] = field(default_factory=list)
    container_id: Optional[str] = None
    conda_env_name: Optional[str] = None
    remote_resource: Optional[RemoteResourceInfo] = None


def to_json(obj) -> str:
    return json.dumps(asdict(obj), default=lambda o: o.value, indent=2, sort_keys=False)


def from_dict(d: Dict[str, Any]) -> PluginMetadata:
    d = dict(d)
    d["execution_mode"] = PluginExecutionMode(d.get("execution_mode", "in_process"))
    rr = d.get("remote_resource")
    if rr is not None:
        rr = dict(rr)
        rr["provider"] = CloudProviderType(rr["provider"])
        d["remote_resource"] = RemoteResourceInfo(**rr)
    return PluginMetadata(**d)


def examples() -> List[PluginMetadata]:
    simple = PluginMetadata(
        name="whisper_tiny",
        category="transcription",
        title="Whisper Tiny Model",
        config_schema={
            "type": "object",
            "properties": {"device": {"type": "string", "enum": ["cpu", "cuda"], "default": "cpu"}},
        },
        version="1.0.0",
        is_configured=True,
    )
    vllm = PluginMetadata(
        name="voxtral_vllm",
        category="transcription",
        title="Voxtral via vLLM Server",
        config_schema={"type": "object", "properties": {}},
        execution_mode=PluginExecutionMode.SUBPROCESS,
        manages_child_processes=True,
        manages_external_resources=True,
        spawned_pids=[54321, 54322, 54323],
    )
    cloud = PluginMetadata(
        name="llm_finetune_aws",
        category="finetuning",
        title="AWS LLM Finetuning",
        config_schema={"type": "object", "properties": {}},
        execution_mode=PluginExecutionMode.CLOUD_GPU,
        manages_external_resources=True,
        remote_resource=RemoteResourceInfo(
            provider=CloudProviderType.AWS,
            instance_id="i-abcd1234",
            status="running",
            gpu_count=8,
            gpu_type="A100",
            estimated_cost_per_hour=24.50,
            metadata={"tags": {"owner": "plugboard"}},
        ),
    )
    return [simple, vllm, cloud]


if __name__ == "__main__":
    if sys.argv[1:] == ["dump"]:
        print("[" + ",\n".join(to_json(m) for m in examples()) + "]")
    elif sys.argv[1:] == ["reload"]:
        items = json.load(sys.stdin)
        print("[" + ",\n".join(to_json(from_dict(d)) for d in items) + "]")
    else:
        sys.exit(__doc__)
