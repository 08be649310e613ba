"""``qywx retry`` as a subprocess, against FakeWeCom on a loopback server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from qywx_cli.core.app import App
from qywx_cli.core.store import Store
from tests.helpers import CallbackSender, LoopbackWeCom, run_qywx

SUITE = "tj1234567890abcdef"


class Sender(CallbackSender):
    """Delivers signed callbacks through the element API (handlers run inline)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.app = App(
            env["QYWX_AUTHS"],
            db=env["QYWX_DB"],
            api_base=env["QYWX_API_BASE"],
            background=False,
        )
        super().__init__(self.app)

    def record(self, name: str, corp: str | None = None) -> int:
        """Send ``name`` and return the id of its callback record."""
        record_id = self.send(name, corp).record_id
        assert record_id is not None
        return record_id


@pytest.fixture
def sender(wecom_env: dict[str, str]) -> Iterator[Sender]:
    s = Sender(wecom_env)
    s.send("suite_ticket")
    yield s
    s.app.close()


def status(env: dict[str, str], record_id: int) -> tuple[str, int]:
    with Store(env["QYWX_DB"]) as store:
        rec = store.get_callback(record_id)
    return rec.status, rec.attempts


def test_a_failed_callback_is_processed_once_the_fault_clears(
    wecom_env: dict[str, str], sender: Sender, loopback_wecom: LoopbackWeCom
) -> None:
    loopback_wecom.fake.inject_fault("get_permanent_code", errcode=40084)
    failed = sender.record("create_auth", corp="wwretry00000000001")
    assert status(wecom_env, failed) == ("failed", 1)
    proc = run_qywx("retry", "--failed", "--format", "json", env=wecom_env)
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
    with Store(wecom_env["QYWX_DB"]) as store:
        auth = store.get_corp_auth("wwretry00000000001", SUITE)
    assert auth is not None and auth.is_active and auth.permanent_code


def test_a_record_that_still_fails_exits_1(wecom_env: dict[str, str], sender: Sender) -> None:
    failing = sender.record("change_auth", corp="wwnever00000000001")
    proc = run_qywx("retry", str(failing), "-f", "json", env=wecom_env)
    assert proc.returncode == 1
    (row,) = json.loads(proc.stdout)
    assert (row["before"], row["after"], row["attempts"]) == ("failed", "failed", 2)
    assert "no permanent code" in row["error"]
    assert proc.stderr == f"1 record(s) still failed: {failing}\n"


def test_processed_records_are_skipped_unless_forced(
    wecom_env: dict[str, str], sender: Sender
) -> None:
    proc = run_qywx("retry", "1", "-f", "json", env=wecom_env)
    assert proc.returncode == 0
    (row,) = json.loads(proc.stdout)
    assert (row["ran"], row["after"], row["attempts"]) == (False, "processed", 1)
    assert "already processed" in row["reason"]
    text = run_qywx("retry", "1", env=wecom_env)
    assert "skipped" not in text.stdout or "already processed" in text.stdout
    forced = run_qywx("retry", "1", "--force", "-f", "json", env=wecom_env)
    (row,) = json.loads(forced.stdout)
    assert (row["ran"], row["after"], row["attempts"]) == (True, "processed", 2)


def test_dry_run_changes_nothing(wecom_env: dict[str, str], sender: Sender) -> None:
    failing = sender.record("change_auth", corp="wwnever00000000001")
    proc = run_qywx("retry", "--failed", "--dry-run", "-f", "json", env=wecom_env)
    assert proc.returncode == 0
    (row,) = json.loads(proc.stdout)
    assert (row["id"], row["reason"], row["ran"]) == (failing, "would retry", False)
    assert status(wecom_env, failing) == ("failed", 1)


def test_failed_selection_by_event_and_since(
    wecom_env: dict[str, str], sender: Sender, loopback_wecom: LoopbackWeCom
) -> None:
    change = sender.record("change_auth", corp="wwnever00000000001")
    loopback_wecom.fake.inject_fault("get_permanent_code", errcode=-1)
    create = sender.record("create_auth", corp="wwretry00000000002")
    proc = run_qywx(
        "retry", "--failed", "--event", "create_auth", "--since", "1h", "-f", "json", env=wecom_env
    )
    assert [r["id"] for r in json.loads(proc.stdout)] == [create]
    assert proc.returncode == 0
    assert status(wecom_env, change) == ("failed", 1)
    none = run_qywx(
        "retry", "--failed", "--since", "2026-01-01T00:00:00", "--event", "nothing", env=wecom_env
    )
    assert none.returncode == 0 and "no callback records to retry" in none.stderr


def test_many_records_get_a_summary_table(wecom_env: dict[str, str], sender: Sender) -> None:
    ids = [sender.record("change_auth", corp=f"wwnever0000000000{i}") for i in range(5)]
    proc = run_qywx("retry", "--failed", env=wecom_env)
    assert proc.returncode == 1
    assert "Retry" in proc.stdout
    for record_id in ids:
        assert f"│ {record_id} " in proc.stdout
    assert all(status(wecom_env, i) == ("failed", 2) for i in ids)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["999"], 1, "qywx: error: no callback record with id 999\n"),
        (["1", "999"], 1, "qywx: error: no callback record with id 999\n"),
        ([str(10**23)], 1, f"qywx: error: no callback record with id {10**23}\n"),
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
    wecom_env: dict[str, str], sender: Sender, args: list[str], code: int, message: str
) -> None:
    proc = run_qywx("retry", *args, env=wecom_env)
    assert (proc.returncode, proc.stderr, proc.stdout) == (code, message, "")
    assert status(wecom_env, 1) == ("processed", 1)


def test_retry_needs_an_existing_database(wecom_env: dict[str, str]) -> None:
    proc = run_qywx("retry", "--failed", env=wecom_env)
    assert proc.returncode == 1 and "no database at" in proc.stderr
    assert not Path(wecom_env["QYWX_DB"]).exists()
