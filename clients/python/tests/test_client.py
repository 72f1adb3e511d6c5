"""The sync and asyncio clients against the real daemon: results, streams, lists, each refusal."""

from __future__ import annotations

import grpc
import pytest

import toolgate
from conftest import Daemon


@pytest.fixture
def client(daemon: Daemon) -> toolgate.Client:
    with toolgate.Client(socket=daemon.socket) as c:
        yield c


def test_run_with_args_passes_shell_syntax_through_as_text(client: toolgate.Client) -> None:
    result = client.run("echo", ["hi; touch pwned", "$(id)"])
    assert result.ok and result.exit_code == 0 and result.signal is None
    assert result.text == "hi; touch pwned $(id)\n"
    assert result.request_id and result.wall_time > 0
    assert result.output == result.text


def test_run_with_a_command_and_stdin(client: toolgate.Client) -> None:
    result = client.run("shell", command="sort -r", stdin="a\nc\nb\n")
    assert result.text == "c\nb\na\n"
    assert client.run("shell", command="grep -rn TODO .").text == "./README.md:2:TODO: write tests\n"


def test_a_time_limit_is_a_result_not_an_error(client: toolgate.Client) -> None:
    result = client.run("sleep", ["5"], timeout=0.3)
    assert result.timed_out and result.signal == 9 and not result.ok


def test_stream_yields_started_output_exited(client: toolgate.Client) -> None:
    events = list(client.stream("echo", ["streamed"]))
    assert isinstance(events[0], toolgate.Started)
    assert toolgate.Output(stream="stdout", data=b"streamed\n") in events
    assert isinstance(events[-1], toolgate.Exited) and events[-1].result.exit_code == 0


def test_tools_and_usage(client: toolgate.Client) -> None:
    tools = {t.name: t for t in client.tools()}
    assert {"echo", "shell", "file_read", "python", "web_fetch", "web_search"} <= set(tools)
    shell = tools["shell"]
    assert shell.program == "" and "git" in shell.programs and "find" in shell.programs
    assert tools["echo"].program == "echo"
    usage = client.usage("shell")
    assert usage.caller.startswith("uid:")
    assert any(l.rule == "admission.rate.caller_tool" and l.limit_value == 30 for l in usage.limits)


def test_file_read_is_capped_and_says_so(client: toolgate.Client) -> None:
    result = client.run("file_read", ["big.txt"])
    assert result.stdout_truncated and len(result.stdout) == 256 * 1024


def test_python_runs_isolated_without_network(client: toolgate.Client) -> None:
    assert client.run("python", ["-c", "import sys; print(sys.flags.isolated)"]).text == "1\n"
    code = "import socket; socket.create_connection(('127.0.0.1', 9), timeout=2)"
    result = client.run("python", ["-c", code])
    assert result.exit_code == 1 and b"PermissionError" in result.stderr


def test_unknown_tool(client: toolgate.Client) -> None:
    with pytest.raises(toolgate.ToolNotFound) as e:
        client.run("no-such-tool")
    assert e.value.status == grpc.StatusCode.NOT_FOUND
    assert e.value.rule is None and e.value.request_id


def test_unparsable_command(client: toolgate.Client) -> None:
    with pytest.raises(toolgate.InvalidRequest) as e:
        client.run("echo", command="echo 'unbalanced")
    assert "quote" in e.value.message


@pytest.mark.parametrize(
    ("command", "rule"),
    [
        ("find . -exec id ;", "arguments.deny_flags"),
        ("find . -delete", "arguments.deny_flags"),
        ("find . -fprint out", "arguments.deny_flags"),
        ("git -c core.pager=id log", "arguments.subcommands"),
        ("git log -c", "arguments.deny_flags"),
        ("git log --upload-pack=touch", "arguments.deny_flags"),
        ("git fetch --upload-pack x", "arguments.subcommands"),
        ("cat /etc/passwd", "arguments.positional"),
        ("rm -rf .", "command.program"),
    ],
)
def test_the_shell_tool_refuses(client: toolgate.Client, command: str, rule: str) -> None:
    with pytest.raises(toolgate.PermissionDenied) as e:
        client.run("shell", command=command)
    assert e.value.rule == rule, e.value.message


def test_the_shell_tool_controls_run(client: toolgate.Client) -> None:
    # The same programs with allowed arguments do run: the refusals above are the rules'.
    assert client.run("shell", command="find . -name todo.txt").text == "./notes/todo.txt\n"
    status = client.run("shell", command="git status --short")
    assert status.exit_code == 128 and b"not a git repository" in status.stderr


def test_rate_limited_carries_retry_after(client: toolgate.Client) -> None:
    client.run("limited", ["once"])
    with pytest.raises(toolgate.RateLimited) as e:
        client.run("limited", ["twice"])
    assert e.value.rule == "admission.rate.caller_tool"
    assert e.value.retry_after is not None and 1 < e.value.retry_after <= 60


def test_unsupported_isolation(client: toolgate.Client) -> None:
    with pytest.raises(toolgate.Unsupported) as e:
        client.run("future", ["x"])
    assert e.value.status == grpc.StatusCode.FAILED_PRECONDITION


def test_unavailable_when_no_daemon(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with toolgate.Client(socket=str(tmp_path / "none.sock")) as c, pytest.raises(toolgate.Unavailable):
        c.tools()


def test_args_and_command_are_exclusive(client: toolgate.Client) -> None:
    with pytest.raises(ValueError):
        client.run("echo", ["a"], command="echo a")
    with pytest.raises(TypeError):
        client.run("echo", "a b")  # type: ignore[arg-type]


async def test_async_run_stream_tools(daemon: Daemon) -> None:
    async with toolgate.AsyncClient(socket=daemon.socket) as c:
        result = await c.run("shell", command="wc -l notes/todo.txt")
        assert result.text == "2 notes/todo.txt\n"
        events = [e async for e in c.stream("echo", ["async"])]
        assert toolgate.Output(stream="stdout", data=b"async\n") in events
        assert "shell" in {t.name for t in await c.tools()}
        assert (await c.usage()).caller.startswith("uid:")


async def test_async_refusals(daemon: Daemon) -> None:
    async with toolgate.AsyncClient(socket=daemon.socket) as c:
        with pytest.raises(toolgate.ToolNotFound):
            await c.run("nope")
        with pytest.raises(toolgate.InvalidRequest):
            await c.run("echo", command="echo \"x")
        with pytest.raises(toolgate.PermissionDenied) as e:
            await c.run("shell", command="find . -exec id ;")
        assert e.value.rule == "arguments.deny_flags"
        with pytest.raises(toolgate.Unsupported):
            await c.run("future")
        with pytest.raises(toolgate.RateLimited) as limited:
            for _ in range(3):
                await c.run("limited", ["again"])
        assert limited.value.retry_after
        with pytest.raises(toolgate.PermissionDenied):
            await c.run("shell", command="git log --upload-pack=x")
    async with toolgate.AsyncClient(socket=daemon.socket + ".none") as c:
        with pytest.raises(toolgate.Unavailable):
            await c.tools()
