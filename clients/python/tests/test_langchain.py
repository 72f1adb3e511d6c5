"""The LangChain adapter: ListTools as StructuredTools that call the daemon."""

from __future__ import annotations

import pytest

import toolgate
from conftest import Daemon

pytest.importorskip("langchain_core")
from toolgate.langchain import tools  # noqa: E402


def test_tools_from_list_tools(daemon: Daemon) -> None:
    with toolgate.Client(socket=daemon.socket) as client:
        by_name = {t.name: t for t in tools(client)}
        assert "shell" in by_name and "git" in by_name["shell"].description
        assert by_name["shell"].invoke({"command": "ls notes"}) == "todo.txt\n"
        assert by_name["echo"].invoke({"args": ["x; y"]}) == "x; y\n"
        refused = by_name["shell"].invoke({"command": "git -c a=b log"})
        assert refused.startswith("refused:") and "arguments.subcommands" in refused
