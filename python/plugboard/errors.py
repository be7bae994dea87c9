"""The exceptions of the plugboard package.

Config errors come from the Rust core (raised by ``plugboard._native``) and
name what was wrong and where: the plugin id, the file with line and column,
every violated place of the schema as a JSON pointer. Host errors come from
``plugboard.client`` and carry the host's own code and message.

Each class also derives from the built-in exception an application written
against the seed would already catch (a corrupt config file was a
``json.JSONDecodeError``, a ``ValueError``; a file system failure an
``OSError``).
"""

from typing import Any, List, NamedTuple, Optional

__all__ = [
    "PlugboardError",
    "ConfigError",
    "InvalidIdError",
    "Violation",
    "InvalidConfigError",
    "SchemaError",
    "CorruptConfigError",
    "ConfigTooLargeError",
    "ConfigLockedError",
    "ConfigFileError",
    "HostError",
    "HostUnavailableError",
    "PluginNotFoundError",
    "CallFailedError",
]


class PlugboardError(Exception):
    """Base class of every plugboard error."""


class ConfigError(PlugboardError):
    """A plugin config could not be loaded, validated or saved."""


class InvalidIdError(ConfigError, ValueError):
    """A plugin id that cannot safely name a config file (it is empty, over
    200 bytes, holds a path separator, ``..`` or a control character, or
    starts with ``.``). ``unique_id`` is the id (at most 64 characters)."""

    unique_id: Optional[str] = None


class Violation(NamedTuple):
    """One way a config breaks its schema: where (a JSON pointer into the
    config, ``/`` for the whole) and why."""

    pointer: str
    reason: str

    def __str__(self) -> str:
        return f"{self.pointer}: {self.reason}"


class InvalidConfigError(ConfigError, ValueError):
    """A config that breaks its plugin's schema; nothing was written.

    ``violations`` lists every violation (not only the first), sorted by
    pointer. Values of secret fields (``writeOnly``, ``format: password``,
    or a string whose name looks like a secret's) never appear in the
    message."""

    unique_id: Optional[str] = None
    raw_violations: List[Any] = []

    @property
    def violations(self) -> List[Violation]:
        """Every violation, as ``Violation(pointer, reason)``."""
        return [Violation(p, r) for p, r in self.raw_violations]


class SchemaError(ConfigError, ValueError):
    """A plugin's own config schema is not a valid JSON Schema (the message
    names the place of the fault inside the schema)."""

    unique_id: Optional[str] = None


class CorruptConfigError(ConfigError, ValueError):
    """A config file that is not a JSON object: ``path``, ``line`` and
    ``column`` say where it breaks."""

    path: Optional[str] = None
    line: Optional[int] = None
    column: Optional[int] = None


class ConfigTooLargeError(ConfigError, ValueError):
    """A config over 1 MiB of pretty JSON (saving it, or loading its file)."""


class ConfigLockedError(ConfigError, TimeoutError):
    """Another process held the config's lock for more than 10 s; nothing
    was written."""


class ConfigFileError(ConfigError, OSError):
    """The file system refused an operation on a config (``path`` names the
    file), or the config path is a FIFO, socket, device or directory."""

    path: Optional[str] = None


class HostError(PlugboardError):
    """A plugboard host refused a request or could not carry it out.

    ``status`` is the HTTP status, ``code`` the host's error code
    (``not_found``, ``already_running``, ``invalid_config``…), ``message``
    the host's message; ``violations`` is filled for ``invalid_config``."""

    def __init__(
        self,
        message: str,
        status: int = 0,
        code: str = "error",
        violations: Optional[List[Violation]] = None,
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.violations = violations or []

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})" if self.status else self.message


class HostUnavailableError(HostError, ConnectionError):
    """No host answers at the socket or URL the client was given."""


class PluginNotFoundError(HostError, LookupError):
    """The host knows no plugin (or endpoint) by that id."""


class CallFailedError(HostError):
    """A streamed call ended with an error event (``code`` is the worker's,
    e.g. ``invalid_input`` or ``cancelled``)."""
