"""plugboard for Python: the cjm-fasthtml-plugins API on plugboard's Rust core.

The submodules mirror the seed library's, so an application switches by
changing its imports from ``cjm_fasthtml_plugins`` to ``plugboard``:

* ``plugboard.core.execution_mode``: ``PluginExecutionMode``, ``CloudProviderType``
* ``plugboard.core.metadata``: ``RemoteResourceInfo``, ``PluginMetadata``
* ``plugboard.core.registry``: ``T``, ``UnifiedPluginRegistry``
* ``plugboard.protocols.lifecycle`` and ``plugboard.protocols.cloud_aware``
* ``plugboard.utils.helpers``: the six helpers

``plugboard.client`` talks to a running plugboard host (start, call, stream,
stop plugins); ``plugboard.errors`` holds the exceptions. docs/python.md
lists every way this package differs from the seed.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
