"""LangChain tools from the caller's toolgate tools (``pip install toolgate[langchain]``).

``tools(client)`` asks the daemon which tools this caller may call and returns one LangChain
``StructuredTool`` each. A tool takes ``command`` (one line, split by the daemon without a
shell) or ``args``; the policy's description and rules become the tool's description. A
refusal is returned to the model as text ("refused: ...") rather than raised, so the agent can
read the rule and try again within it.
"""

from __future__ import annotations

from typing import Optional

from .client import Client
from .errors import ToolgateError
from .types import Result, ToolInfo

try:
    from langchain_core.tools import StructuredTool
    from pydantic import BaseModel, Field, create_model
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "toolgate.langchain needs langchain-core: pip install 'toolgate[langchain]'"
    ) from e


def _describe(info: ToolInfo) -> str:
    rules = " ".join(info.argument_rules)
    return f"{info.description} Rules: {rules}".strip() if rules else info.description


def _text(result: Result) -> str:
    out = result.text
    if result.stderr:
        out += ("\n" if out and not out.endswith("\n") else "") + "[stderr]\n" + result.error_text
    if result.timed_out:
        out += "\n[killed: time limit]"
    elif result.exit_code not in (0, None):
        out += f"\n[exit code {result.exit_code}]"
    return out


def _schema(info: ToolInfo) -> type[BaseModel]:
    name = f"{info.name.replace('.', '_').replace('-', '_')}_input"
    if info.programs:
        return create_model(
            name,
            command=(str, Field(description=f"One command line starting with one of: {', '.join(info.programs)}. No shell.")),
        )
    return create_model(
        name,
        args=(Optional[list[str]], Field(default=None, description=f"Arguments after `{info.program}`, passed exactly as given.")),
        command=(Optional[str], Field(default=None, description=f"Or one command line starting with `{info.program}`. No shell.")),
    )


def tool(client: Client, info: ToolInfo) -> StructuredTool:
    """One LangChain tool that runs ``info`` through ``client``."""

    def call(command: Optional[str] = None, args: Optional[list[str]] = None) -> str:
        try:
            if command is not None:
                return _text(client.run(info.name, command=command))
            return _text(client.run(info.name, args or []))
        except ToolgateError as e:
            return f"refused: {e.message}"

    return StructuredTool.from_function(
        func=call,
        name=info.name.replace(".", "_"),
        description=_describe(info),
        args_schema=_schema(info),
    )


def tools(client: Client) -> list[StructuredTool]:
    """LangChain tools for every tool this caller may call."""
    return [tool(client, info) for info in client.tools()]


__all__ = ["tool", "tools"]
