"""zeroboot: a Python client for self-hosted, hardware-isolated code sandboxes.

    from zeroboot import Sandbox
    sb = Sandbox("my-api-key")          # or the ZEROBOOT_API_KEY variable
    print(sb.run("print(1 + 1)"))       # 2

The server's address comes from ``base_url=``, else ``ZEROBOOT_API_URL``,
else ``http://127.0.0.1:8080``.
"""

from ._client import (
    DEFAULT_BASE_URL,
    AsyncSandbox,
    ExecResult,
    Sandbox,
    ZerobootError,
    __version__,
)

__all__ = [
    "AsyncSandbox",
    "DEFAULT_BASE_URL",
    "ExecResult",
    "Sandbox",
    "ZerobootError",
    "__version__",
]
