"""Durability under ``kill -9`` and private files (issue 6, items 2 and 5).

The kill test runs the harness of ``benchmarks/durability.py`` with a small count:
real ``qywx serve`` and ``qywx fake-wecom`` processes, SIGKILL mid-stream, restart on the
same database. The file-mode tests run qywx under ``umask 000`` so that only modes qywx
sets itself can make a file private.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.durability import (
    INSTANCE,
    REPO,
    Sender,
    all_records,
    fake_wecom,
    make_workdir,
    post,
    run_durability,
    serve_args,
    start,
    wait_until,
)
from qywx_cli.core.config import find_instance
from tests.e2e.conftest import short_lease
from tests.helpers import http_client

pytestmark = pytest.mark.usefixtures("forked_benchmark_processes")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_no_acknowledged_callback_is_lost_across_kill_9(tmp_path: Path) -> None:
    result = run_durability(150, 2, clients=6, seed=6, workdir=tmp_path)

    assert result.kills == 2
    assert result.acknowledged >= 100, result.table()  # the stream really ran
    assert result.found == result.acknowledged and result.lost == 0, result.table()
    # Every record a kill left `received` was resumed on restart or re-run by `retry`...
    assert result.left_received > 0, "no kill landed while callbacks were pending"
    failed = result.rerun_failed + result.resumed_failed
    assert result.left_received == result.resumed_on_restart + result.rerun_after_lease + failed, (
        result.table()
    )
    # ...and the only runs that fail are create_auths whose single-use AuthCode the
    # killed worker had already exchanged (see the lost permanent codes in the report),
    # whether a restarted server took the record over or `retry` ran it.
    assert failed == result.permanent_codes_lost, result.notes
    assert all("40078" in n for n in result.notes if n.startswith("resumed record")), result.notes
    assert result.stuck == 0, result.notes
    assert not [n for n in result.notes if "Traceback" in n or "locked" in n], result.notes
    lost_codes = result.permanent_codes_lost
    assert result.corps_authorized >= result.create_auth_acknowledged - lost_codes


def test_database_files_stay_0600_through_serve_kill_and_restart(tmp_path: Path) -> None:
    """The database holds permanent codes and tokens: it and its -wal/-shm are 0600."""
    work = make_workdir(tmp_path)
    sender = Sender(find_instance(INSTANCE, work.auths, env={}))
    files = [work.db, work.db.with_name("qywx.db-wal"), work.db.with_name("qywx.db-shm")]
    first = sender.callback("suite_ticket")
    with fake_wecom(work), http_client() as client:
        server = start(serve_args(threads=2), work.env, work.root, umask=0)
        try:
            assert post(client, server.url, first).text == "success"
            assert wait_until(lambda: all_records(work.db)[0].status == "processed", 10)
            assert all(p.exists() for p in files)
            assert [oct(mode(p)) for p in files] == ["0o600"] * 3
        finally:
            server.kill()
        left = [p for p in files if p.exists()]  # a crash leaves the WAL behind
        assert [oct(mode(p)) for p in left] == ["0o600"] * len(left)
        server = start(serve_args(threads=2), work.env, work.root, umask=0)
        try:
            # The restarted server recovers the WAL; a replay of the first is still known
            # (acknowledged as the duplicate it is).
            assert post(client, server.url, first).text == "success"
            assert post(client, server.url, sender.redeliver(first)).text == "success"
            assert [oct(mode(p)) for p in files] == ["0o600"] * 3
        finally:
            assert server.stop() == 0
    assert oct(mode(work.db)) == "0o600"
    records = all_records(work.db)
    assert sorted(r.status for r in records) == ["duplicate", "duplicate", "processed"]


def _init(tmp_path: Path, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "qywx_cli", "init", name, "--suite-id", "dkinit00000001"),
            *("--dir", str(tmp_path / "auths"), "--format", "json", *extra),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        umask=0,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "QYWX_SUITE_SECRET": "s3cret-Init"},
        cwd=tmp_path,
    )


def test_init_writes_secrets_only_to_0600_files(tmp_path: Path) -> None:
    done = _init(tmp_path, "FromEnv", "--secrets-from-env")
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "auths" / "FromEnv"
    secrets_file = Path(json.loads(done.stdout)["secrets_file"])
    assert secrets_file.parent == folder
    assert oct(mode(secrets_file)) == "0o600"
    assert oct(mode(folder / "FromEnv.json")) == "0o600"
    assert oct(mode(folder / "e.json")) == "0o644"  # title and type only
    exported = dict(
        line.removeprefix("export ").split("=", 1) for line in secrets_file.read_text().splitlines()
    )
    assert len(exported) == 3 and "s3cret-Init" in exported.values()
    for secret in exported.values():
        assert secret not in (folder / "e.json").read_text()
        assert secret not in (folder / "FromEnv.json").read_text()  # env: references only
        assert secret not in done.stdout + done.stderr

    done = _init(tmp_path, "Inline")
    assert done.returncode == 0, done.stderr
    inline = tmp_path / "auths" / "Inline" / "Inline.json"
    assert oct(mode(inline)) == "0o600"  # it holds the generated token and key itself
    config = json.loads(inline.read_text())["authConfig"]
    assert config["token"] and config["encodingAESKey"] and config["suiteSecret"]
    for value in (config["token"], config["encodingAESKey"], "s3cret-Init"):
        assert value not in done.stdout + done.stderr


def test_installations_survive_kill_9_with_a_slow_wecom_and_a_dead_host_is_taken_over(
    tmp_path: Path,
) -> None:
    """benchmarks/durability_auth.py, small: kills land while slow exchanges are in
    flight; every acknowledged create_auth is installed or failed with the recovery
    step (each of those confirmed by the fake: WeCom issued a code that never reached
    the database), the -1 answers heal without ``qywx retry``, and a second host
    finishes a dead host's claimed installs. Nothing here is timed against a limit."""
    from benchmarks.durability_auth import options, run

    short_lease(tmp_path)  # --keep makes tmp_path the servers' working folder
    result = run(
        options(
            [
                *("--rounds", "1", "--per-round", "60", "--rate", "30", "--clients", "4"),
                *("--delay", "0.3", "--faults", "2", "--takeovers", "1", "--seed", "3"),
                *("--keep", str(tmp_path)),
            ]
        )
    )
    assert result.rounds == 1 and result.acknowledged >= 20, result.table()
    assert result.found == result.acknowledged, result.table()
    assert result.lost == 0, result.notes
    assert result.installed + result.failed_with_recovery == result.create_auth_acknowledged
    assert result.failed_with_recovery == result.recovery_confirmed_by_fake, result.notes
    assert result.transient_injected == 2 and result.transient_left_failed == 0
    assert len(result.takeover_seconds) == 1, result.notes
    assert result.ok
