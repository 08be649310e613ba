"""``qywx serve --server granian`` and ``--server waitress`` as an operator drives them:
the same flags mean the same thing, and shutdown keeps the same promises.

Real processes on loopback, a real SQLite file and the fake WeCom.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from qywx_cli.core import events as ev
from tests.e2e.conftest import Proc, wait_for
from tests.e2e.test_hardening import Edge
from tests.helpers import LoopbackWeCom, http_client

SERVERS = ["granian", "waitress"]
V2 = "service/v2/get_permanent_code"


@pytest.fixture(params=SERVERS)
def edge(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Edge]:
    world = Edge(tmp_path, "--server", request.param)
    yield world
    world.close()


@pytest.mark.parametrize("server", SERVERS)
def test_a_host_name_is_listened_on_by_its_address(
    env: dict[str, str], tmp_path: Path, fake_wecom: LoopbackWeCom, server: str
) -> None:
    """``--host localhost`` is what many operators type; waitress resolves it, and so
    must granian (which takes only an IP address), not exit with an internal error."""
    proc = Proc(["serve", "--host", "localhost", "--port", "0", "--server", server], env, tmp_path)
    try:
        assert proc.url, proc.log
        with http_client() as client:
            assert client.get(proc.url + "/healthz").status_code == 200
    finally:
        assert proc.stop() == 0, proc.log
    assert "internal error" not in proc.log and "Traceback" not in proc.log


def test_a_second_signal_during_shutdown_does_not_cut_the_drain(edge: Edge) -> None:
    """SIGTERM, then another while an acknowledged create_auth is still being handled
    (the fake holds its exchange): the second is ignored, the callback is finished once
    WeCom answers and the process exits 0, rather than dying with the exchange half
    done. Each step waits for what the server or the fake says, not for a time."""
    assert edge.post(*edge.signed()).status == 200  # a ticket, so create_auth can run
    fake = edge.fake.fake
    fake.hold(V2)
    xml = ev.build_event_xml("create_auth", suite_id=edge.suite_id)
    answer = edge.post(*edge.signed(xml))
    assert (answer.status, answer.body) == (200, b"success")
    assert fake.wait_held(V2), "the worker never called WeCom"
    edge.server.popen.send_signal(signal.SIGTERM)
    assert wait_for(lambda: "stopping: finishing queued callbacks" in edge.server.log)
    edge.server.popen.send_signal(signal.SIGTERM)  # while draining: must be ignored
    assert fake.release(V2) == 1
    assert edge.server.popen.wait(30) == 0, edge.server.log
    installs = [r for r in edge.records() if r.info_type == "create_auth"]
    assert [r.status for r in installs] == ["processed"], edge.server.log
