"""Every example of the seed's four documents (README.md, execution_mode.md,
metadata.md, cloud_aware.md), run with only its import lines changed from
``cjm_fasthtml_plugins`` to ``plugboard``, printing exactly the documented
lines.

Each document is a notebook: its examples run in a namespace where the
module's own names (and what the module imports, such as ``Optional``) are
defined; ``NOTEBOOK`` gives that set-up cell, written with the seed's import
lines like the examples."""

import contextlib
import io
import textwrap

import pytest


def switch_imports(code: str) -> str:
    """The code with ``cjm_fasthtml_plugins`` replaced by ``plugboard`` in
    import lines, and nowhere else."""
    out = []
    for line in code.splitlines():
        s = line.strip()
        if s.startswith(("from cjm_fasthtml_plugins", "import cjm_fasthtml_plugins")):
            line = line.replace("cjm_fasthtml_plugins", "plugboard")
        assert "cjm_fasthtml_plugins" not in line, f"not an import line: {line!r}"
        out.append(line)
    return "\n".join(out) + "\n"


def run(*cells: str) -> str:
    """Runs notebook cells in one namespace; what they printed."""
    ns = {"__name__": "__main__"}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        for cell in cells:
            exec(compile(switch_imports(textwrap.dedent(cell)), "<seed example>", "exec"), ns)
    return buf.getvalue()


def expected(text: str) -> str:
    """A documented output block, as printed (the docs indent it by 4)."""
    return textwrap.dedent(text).lstrip("\n")


# ---------------------------------------------------------------- README.md

README_IMPORTS = [
    """
    from cjm_fasthtml_plugins.protocols.cloud_aware import (
        CloudAwarePlugin,
        is_cloud_aware,
        has_active_cloud_resources,
        get_total_estimated_cost
    )
    """,
    """
    from cjm_fasthtml_plugins.core.execution_mode import (
        PluginExecutionMode,
        CloudProviderType
    )
    """,
    """
    from cjm_fasthtml_plugins.utils.helpers import (
        filter_plugins_by_execution_mode,
        get_cloud_plugins,
        get_local_plugins,
        get_configured_plugins,
        get_unconfigured_plugins,
        get_plugin_stats
    )
    """,
    """
    from cjm_fasthtml_plugins.protocols.lifecycle import (
        LifecycleAwarePlugin,
        is_lifecycle_aware,
        get_all_managed_pids
    )
    """,
    """
    from cjm_fasthtml_plugins.core.metadata import (
        RemoteResourceInfo,
        PluginMetadata
    )
    """,
    """
    from cjm_fasthtml_plugins.core.registry import (
        T,
        UnifiedPluginRegistry
    )
    """,
]


@pytest.mark.parametrize("block", README_IMPORTS, ids=["cloud_aware", "execution_mode", "helpers", "lifecycle", "metadata", "registry"])
def test_readme_import_blocks(block):
    assert run(block) == ""


def test_readme_registry_method_bodies():
    # The README shows these bodies; the same calls give the same answers.
    out = run(
        """
        import tempfile
        from cjm_fasthtml_plugins.core.registry import UnifiedPluginRegistry
        registry = UnifiedPluginRegistry(config_dir=__import__("pathlib").Path(tempfile.mkdtemp()))
        print(registry.get_categories(), registry.get_all_plugins(), registry.get_categories_with_plugins())
        print(registry.get_category_display_name("speech_to_text"))
        print(registry.load_plugin_config("transcription_whisper"))
        """
    )
    assert out == "[] [] []\nSpeech_To_Text\n{}\n"


# ---------------------------------------------------------------- execution_mode.md

EXECUTION_MODE_NOTEBOOK = """
from cjm_fasthtml_plugins.core.execution_mode import *
"""


def test_execution_mode_values():
    out = run(
        EXECUTION_MODE_NOTEBOOK,
        """
        # Example: Check execution mode values
        print("Local execution modes:")
        for mode in [PluginExecutionMode.IN_PROCESS, PluginExecutionMode.SUBPROCESS, PluginExecutionMode.DOCKER]:
            print(f"  {mode.name}: {mode.value}")

        print("\\nCloud execution modes:")
        for mode in [PluginExecutionMode.CLOUD_VM, PluginExecutionMode.CLOUD_GPU, PluginExecutionMode.CLOUD_SERVERLESS]:
            print(f"  {mode.name}: {mode.value}")
        """,
    )
    assert out == expected(
        """
        Local execution modes:
          IN_PROCESS: in_process
          SUBPROCESS: subprocess
          DOCKER: docker

        Cloud execution modes:
          CLOUD_VM: cloud_vm
          CLOUD_GPU: cloud_gpu
          CLOUD_SERVERLESS: cloud_serverless
        """
    )


def test_execution_mode_categorize():
    out = run(
        EXECUTION_MODE_NOTEBOOK,
        """
        # Example: Categorize execution modes
        def is_local_execution(mode: PluginExecutionMode) -> bool:
            \"\"\"Check if execution mode is local (not cloud/remote).\"\"\"
            local_modes = {
                PluginExecutionMode.IN_PROCESS,
                PluginExecutionMode.SUBPROCESS,
                PluginExecutionMode.DOCKER,
                PluginExecutionMode.CONDA_ENV,
                PluginExecutionMode.EXTERNAL_SERVICE
            }
            return mode in local_modes

        def is_cloud_execution(mode: PluginExecutionMode) -> bool:
            \"\"\"Check if execution mode is cloud/remote.\"\"\"
            return not is_local_execution(mode)

        # Test
        print(f"IN_PROCESS is local: {is_local_execution(PluginExecutionMode.IN_PROCESS)}")
        print(f"CLOUD_GPU is local: {is_local_execution(PluginExecutionMode.CLOUD_GPU)}")
        print(f"CLOUD_GPU is cloud: {is_cloud_execution(PluginExecutionMode.CLOUD_GPU)}")
        """,
    )
    assert out == expected(
        """
        IN_PROCESS is local: True
        CLOUD_GPU is local: False
        CLOUD_GPU is cloud: True
        """
    )


def test_cloud_providers():
    out = run(
        EXECUTION_MODE_NOTEBOOK,
        """
        # Example: List all supported providers
        print("Supported cloud providers:")
        for provider in CloudProviderType:
            print(f"  - {provider.value}")
        """,
    )
    assert out == expected(
        """
        Supported cloud providers:
          - aws
          - gcp
          - azure
          - lambda_labs
          - runpod
          - vast_ai
          - paperspace
          - together_ai
          - custom
        """
    )


# ---------------------------------------------------------------- metadata.md

METADATA_NOTEBOOK = """
from dataclasses import dataclass, field
from typing import Dict, Any, Optional, List, Type
from cjm_fasthtml_plugins.core.execution_mode import PluginExecutionMode, CloudProviderType
from cjm_fasthtml_plugins.core.metadata import *
"""


def test_metadata_aws_resource():
    out = run(
        METADATA_NOTEBOOK,
        """
        # Example: Create remote resource info for AWS instance
        aws_resource = RemoteResourceInfo(
            provider=CloudProviderType.AWS,
            region="us-west-2",
            instance_id="i-1234567890abcdef",
            resource_type="p3.8xlarge",
            gpu_count=4,
            gpu_type="V100",
            status="running",
            estimated_cost_per_hour=12.24,
            ssh_host="54.123.45.67"
        )

        print(f"Provider: {aws_resource.provider.value}")
        print(f"Instance: {aws_resource.instance_id}")
        print(f"GPUs: {aws_resource.gpu_count}x {aws_resource.gpu_type}")
        print(f"Cost: ${aws_resource.estimated_cost_per_hour}/hour")
        """,
    )
    assert out == expected(
        """
        Provider: aws
        Instance: i-1234567890abcdef
        GPUs: 4x V100
        Cost: $12.24/hour
        """
    )


def test_metadata_lambda_resource():
    out = run(
        METADATA_NOTEBOOK,
        """
        # Example: Create remote resource info for Lambda Labs
        lambda_resource = RemoteResourceInfo(
            provider=CloudProviderType.LAMBDA_LABS,
            instance_id="0x1a2b3c4d",
            resource_type="4x_A100",
            gpu_count=4,
            gpu_type="A100",
            status="provisioning",
            estimated_cost_per_hour=4.40,
            region="us-west-1"
        )

        print(f"Provider: {lambda_resource.provider.value}")
        print(f"Status: {lambda_resource.status}")
        print(f"Configuration: {lambda_resource.resource_type}")
        """,
    )
    assert out == expected(
        """
        Provider: lambda_labs
        Status: provisioning
        Configuration: 4x_A100
        """
    )


def test_metadata_simple_plugin():
    out = run(
        METADATA_NOTEBOOK,
        """
        # Example: Create simple in-process plugin metadata
        simple_plugin = PluginMetadata(
            name="whisper_tiny",
            category="transcription",
            title="Whisper Tiny Model",
            config_schema={
                "type": "object",
                "properties": {
                    "device": {"type": "string", "enum": ["cpu", "cuda"], "default": "cpu"}
                }
            },
            version="1.0.0",
            is_configured=True
        )

        print(f"Plugin: {simple_plugin.title}")
        print(f"Unique ID: {simple_plugin.get_unique_id()}")
        print(f"Execution mode: {simple_plugin.execution_mode.value}")
        print(f"Is local: {simple_plugin.is_local_execution()}")
        print(f"Has active resources: {simple_plugin.has_active_resources()}")
        """,
    )
    assert out == expected(
        """
        Plugin: Whisper Tiny Model
        Unique ID: transcription_whisper_tiny
        Execution mode: in_process
        Is local: True
        Has active resources: False
        """
    )


def test_metadata_vllm_plugin():
    out = run(
        METADATA_NOTEBOOK,
        """
        # Example: Create plugin with subprocess (vLLM-style)
        vllm_plugin = PluginMetadata(
            name="voxtral_vllm",
            category="transcription",
            title="Voxtral via vLLM Server",
            config_schema={"type": "object", "properties": {}},
            execution_mode=PluginExecutionMode.SUBPROCESS,
            manages_child_processes=True,
            manages_external_resources=True,
            spawned_pids=[54321, 54322, 54323]
        )

        print(f"Plugin: {vllm_plugin.title}")
        print(f"Execution mode: {vllm_plugin.execution_mode.value}")
        print(f"Manages child processes: {vllm_plugin.manages_child_processes}")
        print(f"Spawned PIDs: {vllm_plugin.spawned_pids}")
        print(f"Has active resources: {vllm_plugin.has_active_resources()}")
        """,
    )
    assert out == expected(
        """
        Plugin: Voxtral via vLLM Server
        Execution mode: subprocess
        Manages child processes: True
        Spawned PIDs: [54321, 54322, 54323]
        Has active resources: True
        """
    )


def test_metadata_cloud_plugin():
    out = run(
        METADATA_NOTEBOOK,
        """
        # Example: Create cloud-based plugin
        cloud_plugin = PluginMetadata(
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
                estimated_cost_per_hour=24.50
            )
        )

        print(f"Plugin: {cloud_plugin.title}")
        print(f"Execution mode: {cloud_plugin.execution_mode.value}")
        print(f"Is cloud: {cloud_plugin.is_cloud_execution()}")
        print(f"Provider: {cloud_plugin.remote_resource.provider.value}")
        print(f"Instance: {cloud_plugin.remote_resource.instance_id}")
        print(f"Cost: ${cloud_plugin.remote_resource.estimated_cost_per_hour}/hour")
        print(f"Has active resources: {cloud_plugin.has_active_resources()}")
        """,
    )
    assert out == expected(
        """
        Plugin: AWS LLM Finetuning
        Execution mode: cloud_gpu
        Is cloud: True
        Provider: aws
        Instance: i-abcd1234
        Cost: $24.5/hour
        Has active resources: True
        """
    )


# ---------------------------------------------------------------- cloud_aware.md

CLOUD_NOTEBOOK = """
from typing import Protocol, runtime_checkable, Optional
from cjm_fasthtml_plugins.core.metadata import RemoteResourceInfo
from typing import Any, List
from cjm_fasthtml_plugins.protocols.cloud_aware import *
"""

MOCK_CLOUD_PLUGIN = """
# Example: Mock cloud plugin
from cjm_fasthtml_plugins.core.execution_mode import CloudProviderType

class MockCloudPlugin:
    \"\"\"Mock plugin that uses cloud resources.\"\"\"
    
    def __init__(self):
        self.remote_resource: Optional[RemoteResourceInfo] = None
    
    # Implement CloudAwarePlugin protocol
    
    def get_remote_resource_info(self) -> Optional[RemoteResourceInfo]:
        return self.remote_resource
    
    def provision_remote_resource(self, **config) -> RemoteResourceInfo:
        print("Provisioning cloud GPU instance...")
        
        # Mock provisioning
        self.remote_resource = RemoteResourceInfo(
            provider=CloudProviderType.LAMBDA_LABS,
            instance_id="0x1a2b3c4d",
            resource_type="4x_A100",
            gpu_count=4,
            gpu_type="A100",
            status="running",
            estimated_cost_per_hour=4.40,
            ssh_host="54.123.45.67",
            region="us-west-1"
        )
        
        print(f"Provisioned: {self.remote_resource.resource_type}")
        return self.remote_resource
    
    def check_remote_resource_status(self) -> str:
        if not self.remote_resource:
            return "not_provisioned"
        return self.remote_resource.status
    
    def terminate_remote_resource(self) -> bool:
        if self.remote_resource:
            print(f"Terminating instance: {self.remote_resource.instance_id}")
            self.remote_resource.status = "terminated"
            return True
        return False
    
    def estimate_cost(self, duration_hours: float) -> float:
        if not self.remote_resource:
            return 0.0
        hourly = self.remote_resource.estimated_cost_per_hour or 0.0
        return duration_hours * hourly
"""


def test_cloud_aware_mock_plugin():
    out = run(
        CLOUD_NOTEBOOK,
        MOCK_CLOUD_PLUGIN,
        """
        # Test the mock plugin
        plugin = MockCloudPlugin()

        # Check it implements the protocol
        print(f"Implements protocol: {isinstance(plugin, CloudAwarePlugin)}")

        # Check initial state
        print(f"\\nInitial status: {plugin.check_remote_resource_status()}")
        print(f"Resource info: {plugin.get_remote_resource_info()}")

        # Provision resources
        resource = plugin.provision_remote_resource()
        print(f"\\nAfter provisioning:")
        print(f"  Status: {plugin.check_remote_resource_status()}")
        print(f"  Provider: {resource.provider.value}")
        print(f"  GPUs: {resource.gpu_count}x {resource.gpu_type}")
        print(f"  Cost: ${resource.estimated_cost_per_hour}/hour")

        # Estimate costs
        cost_1hr = plugin.estimate_cost(1.0)
        cost_8hr = plugin.estimate_cost(8.0)
        print(f"\\nCost estimates:")
        print(f"  1 hour: ${cost_1hr:.2f}")
        print(f"  8 hours: ${cost_8hr:.2f}")

        # Terminate
        success = plugin.terminate_remote_resource()
        print(f"\\nTermination successful: {success}")
        print(f"Final status: {plugin.check_remote_resource_status()}")
        """,
    )
    assert out == expected(
        """
        Implements protocol: True

        Initial status: not_provisioned
        Resource info: None
        Provisioning cloud GPU instance...
        Provisioned: 4x_A100

        After provisioning:
          Status: running
          Provider: lambda_labs
          GPUs: 4x A100
          Cost: $4.4/hour

        Cost estimates:
          1 hour: $4.40
          8 hours: $35.20
        Terminating instance: 0x1a2b3c4d

        Termination successful: True
        Final status: terminated
        """
    )


def test_cloud_aware_helpers():
    out = run(
        CLOUD_NOTEBOOK,
        MOCK_CLOUD_PLUGIN,
        """
        # Test helper functions
        plugin1 = MockCloudPlugin()
        plugin1.provision_remote_resource()

        plugin2 = MockCloudPlugin()
        plugin2.provision_remote_resource()

        print(f"Plugin 1 is cloud aware: {is_cloud_aware(plugin1)}")
        print(f"Plugin 1 has active resources: {has_active_cloud_resources(plugin1)}")

        # Test with multiple plugins
        plugins = [plugin1, plugin2, {"not": "a plugin"}]
        total_cost_1hr = get_total_estimated_cost(plugins, 1.0)
        total_cost_24hr = get_total_estimated_cost(plugins, 24.0)

        print(f"\\nTotal cost for 2 plugins:")
        print(f"  1 hour: ${total_cost_1hr:.2f}")
        print(f"  24 hours: ${total_cost_24hr:.2f}")

        # Terminate resources
        plugin1.terminate_remote_resource()
        plugin2.terminate_remote_resource()

        print(f"\\nAfter termination:")
        print(f"Plugin 1 has active resources: {has_active_cloud_resources(plugin1)}")
        """,
    )
    assert out == expected(
        """
        Provisioning cloud GPU instance...
        Provisioned: 4x_A100
        Provisioning cloud GPU instance...
        Provisioned: 4x_A100
        Plugin 1 is cloud aware: True
        Plugin 1 has active resources: True

        Total cost for 2 plugins:
          1 hour: $8.80
          24 hours: $211.20
        Terminating instance: 0x1a2b3c4d
        Terminating instance: 0x1a2b3c4d

        After termination:
        Plugin 1 has active resources: False
        """
    )


def test_switch_imports_touches_only_import_lines():
    code = "from cjm_fasthtml_plugins.core.metadata import PluginMetadata\nx = 1\n"
    assert switch_imports(code) == "from plugboard.core.metadata import PluginMetadata\nx = 1\n"
    with pytest.raises(AssertionError):
        switch_imports("print('cjm_fasthtml_plugins')")
