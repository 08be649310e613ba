"""A database qywx cannot use is named with what to do, in one line, exit 1."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from qywx_cli.core.store.sqlite import _open_problem
from tests.helpers import assert_one_line_error, run_qywx


def test_a_corrupt_database_says_restore_not_upgrade(cli_env: dict[str, str]) -> None:
    Path(cli_env["QYWX_DB"]).write_bytes(os.urandom(5000))
    line = assert_one_line_error(
        run_qywx("log", "list", env=cli_env), 1, "is not a SQLite database"
    )
    assert "backup" in line and "upgrade" not in line
    # db upgrade names it alike (it said "not a qywx SQLite database" for any fault,
    # a folder it may not write included)
    assert assert_one_line_error(run_qywx("db", "upgrade", env=cli_env), 1, "") == line
    doctor = run_qywx("doctor", "--auth", "QywxProxyTemp", "-f", "json", env=cli_env)
    check = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "database")
    assert "upgrade" not in check["fix"] and "not a SQLite database" in check["detail"]


@pytest.mark.parametrize(
    ("change", "check", "said"),
    [
        ("DROP TABLE tokens", "secrets_at_rest", "no such table: tokens"),
        ("UPDATE callbacks SET last_error = x'41'", "installations", "TypeError"),
    ],
    ids=["dropped-table", "bytes-in-a-row"],
)
def test_doctor_reports_a_database_it_cannot_read_in_its_full_report(
    cli_env: dict[str, str], change: str, check: str, said: str
) -> None:
    """A database that opens but lacks a table, or holds a row no qywx wrote: doctor
    still prints its whole report, JSON included, with the check that could not read
    failed and the others run; it stopped at one error line (or exit 70)."""
    assert run_qywx("db", "upgrade", env=cli_env).returncode == 0
    db = sqlite3.connect(cli_env["QYWX_DB"])
    with db:
        db.execute(
            "INSERT INTO callbacks (received_at, instance, kind, info_type, suite_id, "
            "msg_signature, timestamp, nonce, envelope, content_key, status, attempts, "
            "last_error) VALUES (1.7e9, 'QywxProxyTemp', 'command', 'create_auth', 'dk', "
            "'sig', '1', 'n', '<xml/>', 'ck', 'failed', 1, 'x')"
        )
        db.execute(change)
    db.close()
    doctor = run_qywx("doctor", "--auth", "QywxProxyTemp", "-f", "json", env=cli_env)
    assert (doctor.returncode, doctor.stderr) == (1, "")
    report = json.loads(doctor.stdout)
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["database"]["status"] == "ok"  # it opens and takes a write
    assert by_name[check]["status"] == "failed" and said in by_name[check]["detail"]
    assert "backup" in by_name[check]["fix"]
    assert "licences" in by_name  # the checks after it still ran
    every = run_qywx("doctor", "--all", "-f", "json", env=cli_env)
    assert (every.returncode, every.stderr) == (1, "") and json.loads(every.stdout)["ok"] is False


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


def _foreign_database(path: Path) -> None:
    """Another program's SQLite file: valid, but none of qywx's tables."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO invoices (total) VALUES (9.5)")
    conn.close()


def _tables_and_journal(path: Path) -> tuple[list[str], str]:
    conn = sqlite3.connect(path)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master ORDER BY name")]
        return names, str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


def test_another_programs_sqlite_file_is_refused_untouched(cli_env: dict[str, str]) -> None:
    """A --db typo that lands on some other application's database must not be taken for
    an empty qywx log, nor have qywx's schema (and WAL mode) written into it."""
    db = Path(cli_env["QYWX_DB"])
    _foreign_database(db)
    before = _tables_and_journal(db)
    for args in (["log", "list"], ["corp", "list"], ["db", "info"], ["db", "upgrade"]):
        assert_one_line_error(
            run_qywx(*args, env=cli_env), 1, "not a qywx database", "invoices", "--db"
        )
    assert _tables_and_journal(db) == before == (["invoices"], "delete")


def test_an_empty_sqlite_file_still_becomes_a_qywx_database(tmp_path: Path) -> None:
    """A SQLite file with no tables yet (made by `sqlite3 x.db ''` or a provisioning
    script) holds nothing to protect: qywx may create its schema there."""
    from qywx_cli.core.store import open_store

    db = tmp_path / "fresh.db"
    sqlite3.connect(db).execute("PRAGMA user_version = 0").connection.close()
    with open_store(db) as store:
        assert store.schema_version > 0


def test_db_info_does_not_turn_a_zero_byte_file_into_a_database(
    cli_env: dict[str, str],
) -> None:
    db = Path(cli_env["QYWX_DB"])
    db.write_bytes(b"")
    assert_one_line_error(run_qywx("db", "info", env=cli_env), 1, "empty file (0 bytes)")
    assert db.stat().st_size == 0


def test_a_file_that_is_no_database_keeps_its_mode(cli_env: dict[str, str]) -> None:
    """`--db /etc/passwd` (any wrong file) was chmod-ed 0600 before SQLite looked at it:
    the private-file rule is for qywx's own database, applied once the file is known to be
    one."""
    for content in (b"root:x:0:0:root:/root:/bin/bash\n", None):
        db = Path(cli_env["QYWX_DB"])
        db.unlink(missing_ok=True)
        if content is None:
            _foreign_database(db)
        else:
            db.write_bytes(content)
        db.chmod(0o644)
        assert run_qywx("log", "list", env=cli_env).returncode == 1
        assert db.stat().st_mode & 0o777 == 0o644


def test_a_libpq_keyword_string_is_refused_without_repeating_its_password(
    cli_env: dict[str, str],
) -> None:
    """Taken as a file name, "host=... password=..." was echoed whole in "no database
    at ..."; it is refused with the URL form to use, and its password is never shown."""
    conninfo = "host=127.0.0.1 port=1 user=qywx password=S3cretPW dbname=qywx"
    env = {**cli_env, "QYWX_DB": conninfo}
    for args in (["log", "list"], ["db", "info"], ["doctor", "--all"], ["corp", "list"]):
        result = run_qywx(*args, env=env, secrets=["S3cretPW"])
        line = assert_one_line_error(result, 2, "libpq keyword/value string")
        assert "postgresql://" in line
    result = run_qywx("--db", conninfo, "log", "list", env=cli_env, secrets=["S3cretPW"])
    assert_one_line_error(result, 2, "libpq keyword/value string")
