"""A scripted coding agent (no model): the calls an agent makes, first the unsafe way, then
through toolgate.

Run it against the example config, from the repository root:

    cargo build && target/debug/toolgate serve --config examples/toolgate.toml &
    python3 examples/agent/agent.py        # needs `pip install -e clients/python`

The "model" below is a fixed list of commands, one of them carrying the kind of injection a
web page or a file can smuggle into a model's output: `; touch pwned`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import toolgate

# What the "model" asks the shell tool to run. The last one came from a prompt injection.
MODEL_COMMANDS = [
    "ls -la",
    "grep -rn TODO .",
    "git log --oneline -n 3",
    "cat notes/todo.txt; touch pwned",
]


def unsafe_shell_tool(command: str, cwd: str) -> str:
    """THE UNSAFE WAY, for contrast only: what agent frameworks commonly do. A shell parses
    the model's text, so `;` starts a second command. Runs only inside a throwaway temp dir."""
    done = subprocess.run(command, shell=True, cwd=cwd, capture_output=True, text=True)  # noqa: S602 - deliberately unsafe demo
    return done.stdout + done.stderr


def safe_shell_tool(client: toolgate.Client, command: str) -> str:
    """The same tool through toolgate: split without a shell, checked, sandboxed, audited."""
    try:
        result = client.run("shell", command=command)
        return result.text + result.error_text + ("" if result.ok else f"[exit {result.exit_code}]\n")
    except toolgate.ToolgateError as e:
        return f"refused ({e.rule}): {e.message}"


def main() -> int:
    print("=== 1. the unsafe way: subprocess.run(cmd, shell=True) in a temp dir ===")
    with tempfile.TemporaryDirectory(prefix="agent-unsafe-") as scratch:
        Path(scratch, "notes").mkdir()
        Path(scratch, "notes", "todo.txt").write_text("ship it\n")
        for command in MODEL_COMMANDS:
            print(f"$ {command}\n{unsafe_shell_tool(command, scratch)}")
        pwned = Path(scratch, "pwned").exists()
        print(f"--> injected `touch pwned` ran: {pwned} (marker file in {scratch})\n")

    print("=== 2. through toolgate: toolgate.Client().run('shell', command=cmd) ===")
    socket = os.environ.get("TOOLGATE_SOCKET", "target/toolgate/toolgate.sock")
    with toolgate.Client(socket=socket) as client:
        for command in MODEL_COMMANDS:
            print(f"$ {command}\n{safe_shell_tool(client, command)}")
        # toolgate passed `;` to cat as part of a file name: nothing ran `touch`.
        workspace = Path(__file__).resolve().parents[1] / "workspace"
        print(f"--> a file named pwned in the workspace: {(workspace / 'pwned').exists()}")
        print("\nThe tools this agent may call:", ", ".join(t.name for t in client.tools()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
