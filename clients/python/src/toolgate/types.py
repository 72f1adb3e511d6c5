"""What the client returns: plain dataclasses, no protobuf."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union


@dataclass(frozen=True)
class Result:
    """How one run ended and what it printed (output capped by the tool's policy)."""

    request_id: str
    exit_code: Optional[int]
    """The exit status, when the program exited (None when a signal killed it)."""
    signal: Optional[int]
    """The signal that killed it (SIGKILL, 9, on a timeout)."""
    timed_out: bool
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    wall_time: float
    """Seconds from start to exit."""
    user_cpu: float
    system_cpu: float
    max_rss_bytes: int

    @property
    def ok(self) -> bool:
        """Whether the program exited with status 0 within its time limit."""
        return self.exit_code == 0 and not self.timed_out

    @property
    def text(self) -> str:
        """stdout as text (UTF-8, undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")

    @property
    def error_text(self) -> str:
        """stderr as text."""
        return self.stderr.decode("utf-8", "replace")

    @property
    def output(self) -> str:
        """stdout then stderr, as text (what ``capture_output=True`` code usually returns)."""
        return self.text + self.error_text


@dataclass(frozen=True)
class Started:
    """The program has started (first event of a stream)."""

    request_id: str


@dataclass(frozen=True)
class Output:
    """A chunk of output, in order."""

    stream: Literal["stdout", "stderr"]
    data: bytes


@dataclass(frozen=True)
class Exited:
    """The program has ended (last event); ``result`` has empty stdout and stderr."""

    result: Result


Event = Union[Started, Output, Exited]


@dataclass(frozen=True)
class ToolInfo:
    """One tool the caller may call, as its policy describes it."""

    name: str
    description: str
    program: str
    """The word a ``command`` starts with (empty for a shell-like tool)."""
    programs: list[str]
    """A shell-like tool's words, each picking one program; ``args`` cannot be used."""
    argument_rules: list[str]
    timeout: float
    max_output_bytes: int
    env_allowed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Limit:
    """One rate limit or quota and what is left of it."""

    rule: str
    tool: str
    limit: str
    limit_value: int
    used: int
    remaining: int
    unit: str
    resets_in: float


@dataclass(frozen=True)
class Usage:
    """The caller's limits (GetUsage)."""

    caller: str
    limits: list[Limit]
    store_fallbacks: int
