"""Clients of the daemon's gRPC API over its Unix socket: :class:`Client` and :class:`AsyncClient`.

Both speak the same small API: :meth:`run` (one call to completion), :meth:`stream` (events as
the program runs), :meth:`tools` and :meth:`usage`. Refusals raise the exceptions of
:mod:`toolgate.errors`. A call gives either ``args`` (the arguments after the tool's program,
passed exactly as given) or ``command`` (one line starting with the program's word, split by
the daemon without a shell); never both.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Optional, Union

import grpc
import grpc.aio
from google.protobuf import duration_pb2

from .errors import ToolgateError, from_rpc_error
from .types import Event, Exited, Limit, Output, Result, Started, ToolInfo, Usage
from .v1 import toolgate_pb2 as pb
from .v1 import toolgate_pb2_grpc as pb_grpc

DEFAULT_SOCKET = "/run/toolgate/toolgate.sock"
"""Where the daemon listens unless ``socket`` or ``TOOLGATE_SOCKET`` says otherwise."""

Stdin = Union[bytes, str, None]


def _target(socket: Optional[str]) -> str:
    path = socket or os.environ.get("TOOLGATE_SOCKET") or DEFAULT_SOCKET
    return f"unix:{os.path.abspath(path)}"


# grpc-core would send the percent-encoded socket path as :authority, which HTTP/2 servers
# (hyper, under the daemon's tonic) reject as malformed; the authority means nothing on a Unix
# socket, so send a valid constant.
_OPTIONS = [("grpc.default_authority", "localhost")]


def _seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def _request(
    tool: str,
    args: Optional[Sequence[str]],
    command: Optional[str],
    stdin: Stdin,
    timeout: Optional[float],
    env: Optional[Mapping[str, str]],
    request_id: Optional[str],
) -> pb.ExecuteRequest:
    if args is not None and command is not None:
        raise ValueError("give either args or command, not both")
    if isinstance(args, str):
        raise TypeError("args is a sequence of arguments; give one line as command=")
    request = pb.ExecuteRequest(tool=tool, request_id=request_id or "")
    if command is not None:
        request.command = command
    else:
        request.args.values.extend(args or [])
    if stdin is not None:
        request.stdin = stdin.encode() if isinstance(stdin, str) else stdin
    if env:
        request.env.update(env)
    if timeout is not None:
        request.timeout.FromNanoseconds(int(timeout * 1e9))
    return request


def _result(r: pb.ExecuteResult) -> Result:
    which = r.WhichOneof("termination")
    return Result(
        request_id=r.request_id,
        exit_code=r.exit_code if which == "exit_code" else None,
        signal=r.signal if which == "signal" else None,
        timed_out=r.timed_out,
        stdout=r.stdout,
        stderr=r.stderr,
        stdout_truncated=r.stdout_truncated,
        stderr_truncated=r.stderr_truncated,
        wall_time=_seconds(r.wall_time),
        user_cpu=_seconds(r.user_cpu),
        system_cpu=_seconds(r.system_cpu),
        max_rss_bytes=r.max_rss_bytes,
    )


def _event(e: pb.ExecuteEvent) -> Event:
    which = e.WhichOneof("event")
    if which == "started":
        return Started(request_id=e.started.request_id)
    if which == "stdout":
        return Output(stream="stdout", data=e.stdout)
    if which == "stderr":
        return Output(stream="stderr", data=e.stderr)
    return Exited(result=_result(e.exited))


def _tools(response: pb.ListToolsResponse) -> list[ToolInfo]:
    return [
        ToolInfo(
            name=t.name,
            description=t.description,
            program=t.program,
            programs=list(t.programs),
            argument_rules=list(t.argument_rules),
            timeout=_seconds(t.timeout),
            max_output_bytes=t.max_output_bytes,
            env_allowed=list(t.env_allowed),
        )
        for t in response.tools
    ]


def _usage(u: pb.Usage) -> Usage:
    return Usage(
        caller=u.caller,
        limits=[
            Limit(
                rule=limit.rule,
                tool=limit.tool,
                limit=limit.limit,
                limit_value=limit.limit_value,
                used=limit.used,
                remaining=limit.remaining,
                unit=limit.unit,
                resets_in=_seconds(limit.resets_in),
            )
            for limit in u.limits
        ],
        store_fallbacks=u.store_fallbacks,
    )


class Client:
    """A blocking client on the daemon's Unix socket (``socket``, else ``TOOLGATE_SOCKET``)."""

    def __init__(self, socket: Optional[str] = None) -> None:
        self._channel = grpc.insecure_channel(_target(socket), options=_OPTIONS)
        self._stub = pb_grpc.ToolGateStub(self._channel)

    def run(
        self,
        tool: str,
        args: Optional[Sequence[str]] = None,
        *,
        command: Optional[str] = None,
        stdin: Stdin = None,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
        request_id: Optional[str] = None,
    ) -> Result:
        """Runs ``tool`` to completion. A tool that runs past its time limit is a result
        (``timed_out``), not an exception; refusals raise :class:`ToolgateError` subclasses."""
        request = _request(tool, args, command, stdin, timeout, env, request_id)
        try:
            return _result(self._stub.Execute(request))
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def stream(
        self,
        tool: str,
        args: Optional[Sequence[str]] = None,
        *,
        command: Optional[str] = None,
        stdin: Stdin = None,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
        request_id: Optional[str] = None,
    ) -> Iterator[Event]:
        """Runs ``tool`` and yields :class:`Started`, :class:`Output` chunks, then
        :class:`Exited`. Leaving the loop early cancels the call and kills the program."""
        request = _request(tool, args, command, stdin, timeout, env, request_id)
        call = self._stub.ExecuteStream(request)
        try:
            for event in call:
                yield _event(event)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        finally:
            call.cancel()

    def tools(self) -> list[ToolInfo]:
        """The tools this caller may call."""
        try:
            return _tools(self._stub.ListTools(pb.ListToolsRequest()))
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def usage(self, tool: Optional[str] = None) -> Usage:
        """This caller's rate limits and quotas, and what is left of them."""
        try:
            return _usage(self._stub.GetUsage(pb.GetUsageRequest(tool=tool or "")))
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncClient:
    """The asyncio client: the same API as :class:`Client`, with coroutines."""

    def __init__(self, socket: Optional[str] = None) -> None:
        self._channel = grpc.aio.insecure_channel(_target(socket), options=_OPTIONS)
        self._stub = pb_grpc.ToolGateStub(self._channel)

    async def run(
        self,
        tool: str,
        args: Optional[Sequence[str]] = None,
        *,
        command: Optional[str] = None,
        stdin: Stdin = None,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
        request_id: Optional[str] = None,
    ) -> Result:
        """See :meth:`Client.run`."""
        request = _request(tool, args, command, stdin, timeout, env, request_id)
        try:
            return _result(await self._stub.Execute(request))
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    async def stream(
        self,
        tool: str,
        args: Optional[Sequence[str]] = None,
        *,
        command: Optional[str] = None,
        stdin: Stdin = None,
        timeout: Optional[float] = None,
        env: Optional[Mapping[str, str]] = None,
        request_id: Optional[str] = None,
    ) -> AsyncIterator[Event]:
        """See :meth:`Client.stream`."""
        request = _request(tool, args, command, stdin, timeout, env, request_id)
        call = self._stub.ExecuteStream(request)
        try:
            async for event in call:
                yield _event(event)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        finally:
            call.cancel()

    async def tools(self) -> list[ToolInfo]:
        """See :meth:`Client.tools`."""
        try:
            return _tools(await self._stub.ListTools(pb.ListToolsRequest()))
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    async def usage(self, tool: Optional[str] = None) -> Usage:
        """See :meth:`Client.usage`."""
        try:
            return _usage(await self._stub.GetUsage(pb.GetUsageRequest(tool=tool or "")))
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


__all__ = ["AsyncClient", "Client", "DEFAULT_SOCKET", "ToolgateError"]
