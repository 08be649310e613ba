"""Private files, always: the database and instance folders whatever the umask or history."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from qywx_cli.core.private import make_private_dirs, make_private_file
from qywx_cli.core.store import Store
from tests.helpers import QYWX, qywx_env


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> object:
    old = os.umask(0)
    yield
    os.umask(old)


def test_an_existing_world_readable_database_and_its_wal_are_narrowed(tmp_path: Path) -> None:
    db = tmp_path / "qywx.db"
    Store(db).close()
    files = [db, tmp_path / "qywx.db-wal", tmp_path / "qywx.db-shm"]
    for path in files:
        path.touch()
        path.chmod(0o666)  # a copied backup, a chmod made while debugging
    with Store(db) as store:
        store.save_suite_ticket("tj1234567890abcdef", "T" * 40, 1)
        assert [oct(mode(p)) for p in files] == ["0o600"] * 3


def test_folders_created_for_the_database_are_0700_under_umask_000(
    tmp_path: Path, open_umask: object
) -> None:
    db = tmp_path / "new" / "dir" / "q.db"
    Store(db).close()
    assert [oct(mode(p)) for p in (tmp_path / "new", tmp_path / "new" / "dir", db)] == [
        "0o700",
        "0o700",
        "0o600",
    ]
    for suffix in ("-wal", "-shm"):
        wal = db.with_name(db.name + suffix)
        assert not wal.exists() or mode(wal) == 0o600


def test_the_helpers_leave_private_things_alone(tmp_path: Path) -> None:
    make_private_dirs(tmp_path)  # exists: untouched
    secret = tmp_path / "s"
    secret.write_text("x")
    secret.chmod(0o400)
    assert make_private_file(secret) is False and mode(secret) == 0o400
    secret.chmod(0o640)
    assert make_private_file(secret) is True and mode(secret) == 0o600
    assert make_private_file(tmp_path / "missing") is False


def test_qywx_init_makes_its_folders_0700_under_umask_000(tmp_path: Path) -> None:
    auths = tmp_path / "deep" / "auths"
    done = subprocess.run(
        [*QYWX, "--auths", str(auths), "init", "Acme", "--suite-id", "tj1234567890abcdef"],
        env=qywx_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.umask(0),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for folder in (tmp_path / "deep", auths, auths / "Acme"):
        assert oct(mode(folder)) == "0o700", folder
    assert mode(auths / "Acme" / "Acme.json") == 0o600
    assert sys.platform != "win32"
