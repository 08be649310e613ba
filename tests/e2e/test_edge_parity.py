"""``qywx serve --server granian`` and ``--server waitress`` as an operator drives them:
the same flags mean the same thing, and shutdown keeps the same promises.

Real processes on loopback, a real SQLite file and the fake WeCom.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Proc

SERVERS = ["granian", "waitress"]


@pytest.mark.parametrize("server", SERVERS)
def test_a_host_name_is_listened_on_by_its_address(
    env: dict[str, str], tmp_path: Path, fake_wecom: Proc, server: str
) -> None:
    """``--host localhost`` is what many operators type; waitress resolves it, and so
    must granian (which takes only an IP address), not exit with an internal error."""
    proc = Proc(["serve", "--host", "localhost", "--port", "0", "--server", server], env, tmp_path)
    try:
        assert proc.url, proc.log
        with httpx.Client(trust_env=False, timeout=10) as client:
            assert client.get(proc.url + "/healthz").status_code == 200
    finally:
        assert proc.stop() == 0, proc.log
    assert "internal error" not in proc.log and "Traceback" not in proc.log
