"""zeroboot: a Python client for self-hosted, hardware-isolated code sandboxes.

    from zeroboot import Sandbox
    sb = Sandbox("my-api-key")          # or the ZEROBOOT_API_KEY variable
    print(sb.run("print(1 + 1)"))       # 2

A sandbox you hold keeps its state between runs:

    h = Sandbox("my-api-key").create(template="python", timeout=300)
    h.run("x = 41")
    print(h.run("print(x + 1)"))        # 42
    h.kill()

The server's address comes from ``base_url=``, else ``ZEROBOOT_API_URL``,
else ``http://127.0.0.1:8080``.
"""

from ._client import (
    DEFAULT_BASE_URL,
    AsyncSandbox,
    ExecResult,
    LiveSandbox,
    Sandbox,
    ZerobootError,
    __version__,
)
from ._envd import CommandHandle, CommandResult, Commands, Files
from ._interpreter import CodeContext, Execution, ExecutionError, Logs, Result

__all__ = [
    "AsyncSandbox",
    "CodeContext",
    "Execution",
    "ExecutionError",
    "Logs",
    "Result",
    "CommandHandle",
    "CommandResult",
    "Commands",
    "Files",
    "DEFAULT_BASE_URL",
    "ExecResult",
    "LiveSandbox",
    "Sandbox",
    "ZerobootError",
    "__version__",
]
