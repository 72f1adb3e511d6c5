"""`toolgate mcp` driven by the real Python MCP client over stdio."""

from __future__ import annotations

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from conftest import Daemon, toolgate_bin


def _text(result: object) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)  # type: ignore[attr-defined]


async def test_an_mcp_host_lists_calls_and_gets_refusals(daemon: Daemon) -> None:
    params = StdioServerParameters(command=toolgate_bin(), args=["mcp", "--socket", daemon.socket])
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert {"shell", "echo", "web_fetch"} <= set(tools)
        assert tools["shell"].input_schema["required"] == ["command"]
        assert tools["echo"].input_schema["properties"]["args"]["type"] == "array"

        ok = await session.call_tool("shell", {"command": "cat notes/todo.txt"})
        assert not ok.is_error and _text(ok) == "one\ntwo\n"
        echoed = await session.call_tool("echo", {"args": ["a; b"]})
        assert _text(echoed) == "a; b\n"

        refused = await session.call_tool("shell", {"command": "find . -exec id ;"})
        assert refused.is_error
        assert "PermissionDenied" in _text(refused) and "rule arguments.deny_flags" in _text(refused)
        unknown = await session.call_tool("nope", {})
        assert unknown.is_error and "NotFound" in _text(unknown)
        failed = await session.call_tool("shell", {"command": "cat missing.txt"})
        assert failed.is_error and "[exit code 1]" in _text(failed)
