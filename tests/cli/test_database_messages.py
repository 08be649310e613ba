"""A database qywx cannot use is named with what to do, in one line, exit 1."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from qywx_cli.core.store.sqlite import _open_problem
from tests.helpers import assert_one_line_error, run_qywx


def test_a_corrupt_database_says_restore_not_upgrade(cli_env: dict[str, str]) -> None:
    Path(cli_env["QYWX_DB"]).write_bytes(os.urandom(5000))
    line = assert_one_line_error(
        run_qywx("log", "list", env=cli_env), 1, "is not a SQLite database"
    )
    assert "backup" in line and "upgrade" not in line
    doctor = run_qywx("doctor", "--auth", "QywxProxyTemp", "-f", "json", env=cli_env)
    check = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "database")
    assert "upgrade" not in check["fix"] and "not a SQLite database" in check["detail"]


def test_an_empty_file_is_not_taken_for_an_empty_log(cli_env: dict[str, str]) -> None:
    db = Path(cli_env["QYWX_DB"])
    db.write_bytes(b"")
    for args in (["log", "list"], ["log", "stats"], ["org", "list"]):
        assert_one_line_error(run_qywx(*args, env=cli_env), 1, "empty file (0 bytes)")
    assert db.stat().st_size == 0  # still untouched: nothing made it a database
    doctor = run_qywx("doctor", "--auth", "QywxProxyTemp", "-f", "json", env=cli_env)
    check = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "database")
    assert check["ok"] is False and "empty file" in check["detail"]


def test_a_read_only_database_is_named_as_a_permission_problem(tmp_path: Path) -> None:
    db = tmp_path / "qywx.db"
    sqlite3.connect(db).close()
    ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        ro.execute("CREATE TABLE t (x)")
    except sqlite3.OperationalError as exc:  # SQLite's own "attempt to write a readonly database"
        message = _open_problem(db, exc)
    finally:
        ro.close()
    assert message.startswith(f"cannot write {db}: the file or its folder")
    assert "not a qywx" not in message and "qywx.db-wal" in message
