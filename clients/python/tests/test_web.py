"""The web tools against HTTPS servers on loopback: TLS verification cannot be turned off."""

from __future__ import annotations

import pytest

import toolgate
from conftest import Daemon
from tlsserver import BODY


@pytest.fixture
def client(daemon: Daemon) -> toolgate.Client:
    with toolgate.Client(socket=daemon.socket) as c:
        yield c


def url(port: int) -> str:
    return f"https://127.0.0.1:{port}/"


def test_a_trusted_certificate_succeeds(client: toolgate.Client, daemon: Daemon) -> None:
    result = client.run("web_fetch", ["-sS", "--cacert", "ca.pem", url(daemon.tls.trusted_port)])
    assert result.ok, result.error_text
    assert result.stdout == BODY


def test_verification_is_real(client: toolgate.Client, daemon: Daemon) -> None:
    # Without the test CA, the system store does not know the trusted server's issuer.
    result = client.run("web_fetch", ["-sS", url(daemon.tls.trusted_port)])
    assert result.exit_code == 60, result.error_text


@pytest.mark.parametrize("flag", ["-k", "--insecure", "-sSk", "--insec"])
def test_an_untrusted_certificate_fails_even_with_k(client: toolgate.Client, daemon: Daemon, flag: str) -> None:
    with pytest.raises(toolgate.PermissionDenied) as e:
        client.run("web_fetch", [flag, url(daemon.tls.untrusted_port)])
    assert e.value.rule == "arguments.deny_flags"
    # Without -k, curl runs and verification refuses the certificate.
    result = client.run("web_fetch", ["-sS", "--cacert", "ca.pem", url(daemon.tls.untrusted_port)])
    assert result.exit_code == 60, result.error_text
    assert b"certificate" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--cacert", "/etc/ssl/certs/evil.pem", "https://127.0.0.1/"],
        ["-o", "/tmp/x", "https://127.0.0.1/"],
        ["-K", "cfg", "https://127.0.0.1/"],
        ["--proxy-insecure", "https://127.0.0.1/"],
        ["file:///etc/passwd"],
    ],
)
def test_other_ways_around_verification_are_refused(client: toolgate.Client, args: list[str]) -> None:
    with pytest.raises(toolgate.PermissionDenied):
        client.run("web_fetch", args)


def test_only_allowed_ports(client: toolgate.Client) -> None:
    # Port 9 is not in tcp_connect: landlock refuses the connection (curl exit 7).
    result = client.run("web_fetch", ["-sS", "http://127.0.0.1:9/"])
    assert result.exit_code == 7, result.error_text
