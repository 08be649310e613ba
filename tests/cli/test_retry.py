"""``qywx retry`` as a subprocess, against FakeWeCom on a loopback server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from qywx_cli.core import events as ev
from qywx_cli.core.app import SERVICE_ELEMENT, App
from qywx_cli.core.fakewecom import FakeWeCom
from qywx_cli.core.store import Store

REPO = Path(__file__).resolve().parents[2]
SUITE = "tj1234567890abcdef"
SAMPLE_SECRETS = (
    "sample-8FGGBZPkm3buLjylPWWqkOw76adCdiDhzxAUNv4Z",
    "4CUdYrBwSjnWyz4yYNsz3PukTqABgnMBwKuGToYu25b",
    "Ob05nvp8DucDexAf5iTh6IZK",
)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake() -> Iterator[tuple[FakeWeCom, str]]:
    app = FakeWeCom()
    server = make_server("127.0.0.1", 0, app, server_class=_Server, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{server.server_port}/cgi-bin"
    server.shutdown()
    server.server_close()


@pytest.fixture
def env(auths: Path, tmp_path: Path, fake: tuple[FakeWeCom, str]) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("QYWX_")}
    e.update(
        QYWX_AUTHS=str(auths),
        QYWX_DB=str(tmp_path / "qywx.db"),
        QYWX_API_BASE=fake[1],
        PYTHONPATH=str(REPO),
        COLUMNS="200",
    )
    return e


class Sender:
    """Delivers signed callbacks through the element API (handlers run inline)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.app = App(
            env["QYWX_AUTHS"],
            db=env["QYWX_DB"],
            api_base=env["QYWX_API_BASE"],
            background=False,
        )
        self.service = self.app.getElement(SERVICE_ELEMENT)
        self.inst = self.app.getElement("auths.QywxProxyTemp").instance
        self.nonce = 0

    def send(self, name: str, corp: str | None = None) -> int:
        self.nonce += 1
        xml = ev.build_event_xml(name, suite_id=SUITE, corp_id=corp)
        env = self.inst.crypto().encrypt_msg(xml, SUITE, str(int(time.time())), str(self.nonce))
        response = self.service.notify(
            env.nonce, env.msg_signature, env.timestamp, body=env.request_xml(SUITE)
        )
        assert response.text == "success", response.text
        assert response.record_id is not None
        return response.record_id


@pytest.fixture
def sender(env: dict[str, str]) -> Iterator[Sender]:
    s = Sender(env)
    s.send("suite_ticket")
    yield s
    s.app.close()


def qywx(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "qywx_cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    for secret in SAMPLE_SECRETS:
        assert secret not in proc.stdout + proc.stderr
    return proc


def status(env: dict[str, str], record_id: int) -> tuple[str, int]:
    with Store(env["QYWX_DB"]) as store:
        rec = store.get_callback(record_id)
    return rec.status, rec.attempts


def test_a_failed_callback_is_processed_once_the_fault_clears(
    env: dict[str, str], sender: Sender, fake: tuple[FakeWeCom, str]
) -> None:
    fake[0].inject_fault("get_permanent_code", errcode=40084)
    failed = sender.send("create_auth", corp="wwretry00000000001")
    assert status(env, failed) == ("failed", 1)
    proc = qywx(env, "retry", "--failed", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [
        {
            "id": failed,
            "event": "create_auth",
            "before": "failed",
            "after": "processed",
            "attempts": 2,
            "error": None,
            "ran": True,
            "reason": "",
        }
    ]
    with Store(env["QYWX_DB"]) as store:
        auth = store.get_corp_auth("wwretry00000000001", SUITE)
    assert auth is not None and auth.is_active and auth.permanent_code


def test_a_record_that_still_fails_exits_1(env: dict[str, str], sender: Sender) -> None:
    failing = sender.send("change_auth", corp="wwnever00000000001")
    proc = qywx(env, "retry", str(failing), "-f", "json")
    assert proc.returncode == 1
    (row,) = json.loads(proc.stdout)
    assert (row["before"], row["after"], row["attempts"]) == ("failed", "failed", 2)
    assert "no permanent code" in row["error"]
    assert proc.stderr == f"1 record(s) still failed: {failing}\n"


def test_processed_records_are_skipped_unless_forced(env: dict[str, str], sender: Sender) -> None:
    proc = qywx(env, "retry", "1", "-f", "json")
    assert proc.returncode == 0
    (row,) = json.loads(proc.stdout)
    assert (row["ran"], row["after"], row["attempts"]) == (False, "processed", 1)
    assert "already processed" in row["reason"]
    text = qywx(env, "retry", "1")
    assert "skipped" not in text.stdout or "already processed" in text.stdout
    forced = qywx(env, "retry", "1", "--force", "-f", "json")
    (row,) = json.loads(forced.stdout)
    assert (row["ran"], row["after"], row["attempts"]) == (True, "processed", 2)


def test_dry_run_changes_nothing(env: dict[str, str], sender: Sender) -> None:
    failing = sender.send("change_auth", corp="wwnever00000000001")
    proc = qywx(env, "retry", "--failed", "--dry-run", "-f", "json")
    assert proc.returncode == 0
    (row,) = json.loads(proc.stdout)
    assert (row["id"], row["reason"], row["ran"]) == (failing, "would retry", False)
    assert status(env, failing) == ("failed", 1)


def test_failed_selection_by_event_and_since(
    env: dict[str, str], sender: Sender, fake: tuple[FakeWeCom, str]
) -> None:
    change = sender.send("change_auth", corp="wwnever00000000001")
    fake[0].inject_fault("get_permanent_code", errcode=-1)
    create = sender.send("create_auth", corp="wwretry00000000002")
    proc = qywx(env, "retry", "--failed", "--event", "create_auth", "--since", "1h", "-f", "json")
    assert [r["id"] for r in json.loads(proc.stdout)] == [create]
    assert proc.returncode == 0
    assert status(env, change) == ("failed", 1)
    none = qywx(env, "retry", "--failed", "--since", "2026-01-01T00:00:00", "--event", "nothing")
    assert none.returncode == 0 and "no callback records to retry" in none.stderr


def test_many_records_get_a_summary_table(env: dict[str, str], sender: Sender) -> None:
    ids = [sender.send("change_auth", corp=f"wwnever0000000000{i}") for i in range(5)]
    proc = qywx(env, "retry", "--failed")
    assert proc.returncode == 1
    assert "Retry" in proc.stdout
    for record_id in ids:
        assert f"│ {record_id} " in proc.stdout
    assert all(status(env, i) == ("failed", 2) for i in ids)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["999"], 1, "qywx: error: no callback record with id 999\n"),
        (["1", "999"], 1, "qywx: error: no callback record with id 999\n"),
        ([], 2, "qywx: error: give record IDs to retry, or --failed\n"),
        (["1", "--failed"], 2, "qywx: error: give record IDs or --failed, not both\n"),
        (
            ["1", "--since", "1h"],
            2,
            "qywx: error: --since and --event select failed records; use them with --failed\n",
        ),
    ],
)
def test_usage_and_unknown_ids(
    env: dict[str, str], sender: Sender, args: list[str], code: int, message: str
) -> None:
    proc = qywx(env, "retry", *args)
    assert (proc.returncode, proc.stderr, proc.stdout) == (code, message, "")
    assert status(env, 1) == ("processed", 1)


def test_retry_needs_an_existing_database(env: dict[str, str]) -> None:
    proc = qywx(env, "retry", "--failed")
    assert proc.returncode == 1 and "no database at" in proc.stderr
    assert not Path(env["QYWX_DB"]).exists()
