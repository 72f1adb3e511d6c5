"""toolgate: run an agent's tools through the toolgate daemon, without a shell, in a sandbox.

>>> import toolgate
>>> with toolgate.Client() as tg:                       # doctest: +SKIP
...     print(tg.run("shell", command="ls -la").text)
"""

from .client import DEFAULT_SOCKET, AsyncClient, Client
from .errors import (
    InternalError,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
    ToolgateError,
    ToolNotFound,
    Unauthenticated,
    Unavailable,
    Unsupported,
)
from .types import Event, Exited, Limit, Output, Result, Started, ToolInfo, Usage

__all__ = [
    "DEFAULT_SOCKET",
    "AsyncClient",
    "Client",
    "Event",
    "Exited",
    "InternalError",
    "InvalidRequest",
    "Limit",
    "Output",
    "PermissionDenied",
    "RateLimited",
    "Result",
    "Started",
    "ToolInfo",
    "ToolNotFound",
    "ToolgateError",
    "Unauthenticated",
    "Unavailable",
    "Unsupported",
    "Usage",
]
