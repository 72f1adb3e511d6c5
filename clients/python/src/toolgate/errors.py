"""Refusals as exceptions: one class per gRPC status the daemon uses, carrying its details."""

from __future__ import annotations

import re
from typing import Optional

import grpc

_RULE = re.compile(r"\(rule ([A-Za-z0-9_.]+)\)")
_REQUEST = re.compile(r"\[request ([A-Za-z0-9._:-]+)\]\s*$")


class ToolgateError(Exception):
    """The daemon refused a call, or could not be reached.

    ``status`` is the gRPC status code, ``message`` the daemon's message (what to change),
    ``rule`` the policy or admission rule that refused it when the message names one (for
    example ``arguments.deny_flags`` or ``admission.rate.caller_tool``), ``request_id`` the id
    of the audit record, and ``retry_after`` the seconds to wait before retrying, when waiting
    helps (rate limits, quotas, busy, an open circuit breaker).
    """

    def __init__(
        self,
        status: grpc.StatusCode,
        message: str,
        *,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(f"{status.name}: {message}")
        self.status = status
        self.message = message
        rule = _RULE.search(message)
        self.rule: Optional[str] = rule.group(1) if rule else None
        request = _REQUEST.search(message)
        self.request_id: Optional[str] = request.group(1) if request else None
        self.retry_after = retry_after


class ToolNotFound(ToolgateError):
    """NOT_FOUND: no policy defines the tool (or the caller may not see it)."""


class InvalidRequest(ToolgateError):
    """INVALID_ARGUMENT: the command cannot be split, or a field is out of range."""


class PermissionDenied(ToolgateError):
    """PERMISSION_DENIED: an argument, environment or caller rule refused the call."""


class Unauthenticated(ToolgateError):
    """UNAUTHENTICATED: on TCP, no valid client certificate or token."""


class RateLimited(ToolgateError):
    """RESOURCE_EXHAUSTED: a rate limit, quota or concurrency limit; see ``retry_after``."""


class Unavailable(ToolgateError):
    """UNAVAILABLE: the daemon is draining or unreachable, or the tool's breaker is open."""


class Unsupported(ToolgateError):
    """FAILED_PRECONDITION: this host lacks an isolation feature the tool's policy requires."""


class InternalError(ToolgateError):
    """INTERNAL or anything else: the tool could not be started; the daemon's log says why."""


_BY_STATUS: dict[grpc.StatusCode, type[ToolgateError]] = {
    grpc.StatusCode.NOT_FOUND: ToolNotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.FAILED_PRECONDITION: Unsupported,
}


def _retry_after(metadata: object) -> Optional[float]:
    """The exact delay of a google.rpc.RetryInfo detail, else the ``retry-after`` seconds."""
    items = list(metadata or ())  # type: ignore[call-overload]
    for key, value in items:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            try:
                from google.rpc import error_details_pb2, status_pb2

                status = status_pb2.Status.FromString(value)
                for detail in status.details:
                    if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                        info = error_details_pb2.RetryInfo()
                        detail.Unpack(info)
                        return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
            except Exception:  # a malformed detail: fall back to the header
                pass
    for key, value in items:
        if key == "retry-after":
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None


def from_rpc_error(error: grpc.RpcError) -> ToolgateError:
    """The typed exception for a failed call (sync or asyncio)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]
    details = (error.details() if hasattr(error, "details") else None) or str(error)  # type: ignore[attr-defined]
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None  # type: ignore[attr-defined]
    cls = _BY_STATUS.get(code, InternalError)
    return cls(code, details, retry_after=_retry_after(trailing))
