"""A real toolgate daemon for the tests: the shipped policies, a test workspace, a temp socket.

The daemon binary is ``TOOLGATE_BIN`` (the Rust test suite sets it), else the checkout's
``target/debug/toolgate``. The shipped web policy is rewritten to allow the port of the test's
HTTPS servers on top of 80/443: the shipped file itself stays at 80/443.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tlsserver import Servers, start_servers

REPO = Path(__file__).resolve().parents[3]
SHIPPED = ["echo.toml", "sleep.toml", "shell.toml", "file_read.toml", "python.toml"]

TEST_POLICY = """
[tool.limited]
description = "echo, once a minute"
program = "/bin/echo"
rate_limit = { per_caller = "1/minute" }

[tool.future]
description = "needs a landlock ABI no kernel has"
program = "/bin/echo"
[tool.future.sandbox]
min_landlock_abi = 99
"""


def toolgate_bin() -> str:
    path = os.environ.get("TOOLGATE_BIN") or str(REPO / "target" / "debug" / "toolgate")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no toolgate binary at {path}: build it or set TOOLGATE_BIN")
    return path


@dataclass
class Daemon:
    socket: str
    workspace: Path
    root: Path
    tls: Servers

    def log(self) -> str:
        return (self.root / "daemon.log").read_text(errors="replace")


def _workspace(root: Path, tls: Servers) -> Path:
    work = root / "work"
    (work / "notes").mkdir(parents=True)
    (work / "README.md").write_text("# test workspace\nTODO: write tests\n")
    (work / "notes" / "todo.txt").write_text("one\ntwo\n")
    (work / "big.txt").write_bytes(b"x" * (300 * 1024))
    (work / "ca.pem").write_bytes(tls.ca_pem)
    # Tools run as an unprivileged user when the daemon is root: let them in, as ops would.
    for path in [work, *work.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o644)
    return work


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("toolgate")
    tls = start_servers(root)
    work = _workspace(root, tls)
    policies = root / "policies"
    policies.mkdir()
    for name in SHIPPED:
        shutil.copy(REPO / "policies" / name, policies / name)
    web = (REPO / "policies" / "web.toml").read_text()
    shipped_ports = "tcp_connect = [80, 443]"
    assert shipped_ports in web, "the shipped web_fetch policy allows ports 80 and 443"
    web = web.replace(shipped_ports, f"tcp_connect = [80, 443, {tls.trusted_port}, {tls.untrusted_port}]")
    (policies / "web.toml").write_text(web)
    (policies / "test.toml").write_text(TEST_POLICY)
    sock = root / "toolgate.sock"
    config = root / "toolgate.toml"
    config.write_text(
        f'socket = "{sock}"\npolicy_dir = "{policies}"\naudit_log = "{root / "audit.jsonl"}"\n'
        f'state_dir = "{root / "state"}"\ndefault_callers = ["uid:{os.geteuid()}"]\n'
        f'[policy_vars]\nworkspace = "{work}"\n'
    )
    log = open(root / "daemon.log", "wb")
    process = subprocess.Popen(
        [toolgate_bin(), "serve", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    found = Daemon(socket=str(sock), workspace=work, root=root, tls=tls)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            pytest.fail(f"daemon exited during start:\n{found.log()}")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"daemon did not listen within 20 s:\n{found.log()}")
            time.sleep(0.02)
    yield found
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()
    tls.stop()
