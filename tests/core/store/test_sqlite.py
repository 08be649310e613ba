"""What only the SQLite backend promises: a private file, WAL, its migrations and its
query plans, the write lock and the group commit. The shared contract is in
test_contract.py."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qywx_cli.core.errors import StoreError
from qywx_cli.core.store import SCHEMA_VERSION, CallbackRecord, Store
from qywx_cli.core.store.sqlite import MIGRATIONS, SQLiteStore
from tests.core.store.conftest import T0
from tests.core.store.conftest import make_record as record
from tests.helpers import Clock


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "qywx.db"


@pytest.fixture
def store(db_path: Path, clock: Clock) -> Iterator[SQLiteStore]:
    with SQLiteStore(db_path, now=clock) as s:
        yield s


def test_a_path_or_sqlite_url_opens_sqlite(tmp_path: Path) -> None:
    assert len(MIGRATIONS) == SCHEMA_VERSION
    for target in (tmp_path / "a.db", str(tmp_path / "b.db"), f"sqlite:///{tmp_path}/c.db"):
        with Store(target) as s:
            assert isinstance(s, SQLiteStore) and s.backend == "sqlite"
    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["a.db", "b.db", "c.db"]


def test_a_file_name_with_a_colon_is_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with Store("odd:name.db") as s:
        assert isinstance(s, SQLiteStore)
    assert (tmp_path / "odd:name.db").is_file()


def test_an_unknown_url_scheme_is_refused_in_one_line(tmp_path: Path) -> None:
    from qywx_cli.core.errors import UsageError

    with pytest.raises(UsageError, match=r"^unknown database URL scheme mysql://; use a path"):
        Store("mysql://u:secret@h/db")
    assert list(tmp_path.iterdir()) == []


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_file_is_private_and_survives_reopen(db_path: Path, clock: Clock) -> None:
    old_umask = os.umask(0)  # the widest umask must still give 0600
    try:
        with Store(db_path, now=clock) as s:
            rec = record(s)
            siblings = [p for p in db_path.parent.iterdir() if p.name != db_path.name]
            assert _mode(db_path) == 0o600
            assert siblings, "WAL mode should have created -wal / -shm files"
            for sibling in siblings:
                assert _mode(sibling) == 0o600, sibling.name
    finally:
        os.umask(old_umask)
    with Store(db_path, now=clock) as s:
        assert s.get_callback(rec.id) == rec
        assert s.schema_version == SCHEMA_VERSION
    assert _mode(db_path) == 0o600


def test_missing_parent_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "qywx.db"
    with Store(path) as s:
        assert s.healthcheck()["ok"] is True
    assert path.is_file()


def test_database_runs_in_wal_mode_and_healthcheck_is_cheap(store: Store) -> None:
    assert store.healthcheck() == {
        "ok": True,
        "schema_version": SCHEMA_VERSION,
        "journal_mode": "wal",
        "callbacks": 0,
    }
    for _ in range(3):
        last = record(store)
    assert store.healthcheck()["callbacks"] == last.id


def test_plain_sqlite_file_of_version_zero_is_migrated(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 0")
    conn.close()
    with Store(db_path) as s:
        assert s.schema_version == SCHEMA_VERSION
        assert s.list_callbacks() == []
    conn = sqlite3.connect(db_path)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert {"callbacks", "suite_tickets", "tokens", "corp_auths", "org_codes", "login_codes"} <= (
        tables
    )


def test_newer_schema_is_refused_untouched(db_path: Path) -> None:
    Store(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError) as err:
        Store(db_path)
    assert str(err.value) == (
        f"database schema v{SCHEMA_VERSION + 1} is newer than this qywx "
        f"(v{SCHEMA_VERSION}); upgrade qywx"
    )
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    conn.close()


@pytest.mark.parametrize("content", [os.urandom(4096), b"not a database, just some text\n" * 40])
def test_a_file_that_is_not_sqlite_is_refused_in_one_line(db_path: Path, content: bytes) -> None:
    db_path.write_bytes(content)
    with pytest.raises(StoreError) as err:
        Store(db_path)
    message = str(err.value)
    assert "not a qywx SQLite database" in message
    assert "\n" not in message
    assert db_path.read_bytes() == content


def test_an_unrelated_database_with_a_clashing_table_is_refused(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE callbacks (whatever TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"cannot migrate .* to schema v1"):
        Store(db_path)
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'tokens'").fetchone() == (
        0,
    )
    conn.close()


def test_a_write_waits_for_another_connection_to_release_the_lock(
    store: Store, db_path: Path
) -> None:
    other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    releaser = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    releaser.start()
    started = time.monotonic()
    rec = record(store)
    waited = time.monotonic() - started
    releaser.join()
    other.close()
    assert rec.id == 1
    assert waited >= 0.25


# -- query plans: no full table scans on the hot paths ----------------------------------


def _assert_indexed(plan: list[str]) -> None:
    for line in plan:
        if "callbacks" in line and line.startswith("SCAN"):
            assert "USING INDEX" in line or "USING COVERING INDEX" in line, plan
    assert plan, "no plan"


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"status": "failed"},
        {"info_type": "create_auth"},
        {"corp_id": "wwA"},
        {"instance": "QywxProxyTemp"},
        {"since": T0},
        {"status": "failed", "since": T0},
        {"info_type": "create_auth", "since": T0},
        {"corp_id": "wwA", "since": T0},
        {"instance": "QywxProxyTemp", "since": T0},
        {"status": "received", "newest_first": False},
    ],
)
def test_list_queries_walk_an_index_without_sorting(store: Store, filters: dict[str, Any]) -> None:
    plan = store.explain_list_callbacks(limit=50, **filters)
    _assert_indexed(plan)
    assert not any("TEMP B-TREE" in line for line in plan), plan
    first = next(line for line in plan if "callbacks" in line)
    if len(filters) - ("newest_first" in filters) == 1 and "since" not in filters:
        column = next(k for k in filters if k != "newest_first")
        assert f"({column}=?" in first, plan


@pytest.mark.parametrize("filters", [{}, {"status": "failed"}, {"corp_id": "wwA", "since": T0}])
def test_follow_queries_use_the_rowid_range(store: Store, filters: dict[str, Any]) -> None:
    plan = store.explain_list_callbacks(after_id=1000, **filters)
    assert plan == ["SEARCH callbacks USING INTEGER PRIMARY KEY (rowid>?)"]


@pytest.mark.parametrize("since", [None, T0])
def test_stats_read_covering_indexes(store: Store, since: float | None) -> None:
    plan = store.explain_callback_stats(since=since)
    _assert_indexed(plan)
    assert sum("COVERING INDEX callbacks_by_" in line for line in plan) == 2, plan


def test_dedupe_and_pending_lookups_search_an_index(store: Store) -> None:
    plans = store.query_plans()
    assert plans["record_callback.replay"] == [
        "SEARCH callbacks USING INDEX callbacks_replay "
        "(instance=? AND msg_signature=? AND timestamp=? AND nonce=?)"
    ]
    assert plans["record_callback.content"] == [
        "SEARCH callbacks USING INDEX callbacks_content (content_key=?)"
    ]
    assert plans["pending_callbacks"] == [
        "SEARCH callbacks USING INDEX callbacks_by_status (status=? AND received_at<?)"
    ]


def test_a_writer_interrupted_while_queued_leaves_the_store_usable(store: Store) -> None:
    """Ctrl-C in a thread waiting for a group commit must not wedge later writes."""
    started = threading.Event()

    def slow(db: Any) -> str:
        started.set()
        time.sleep(0.6)
        return "slow"

    leader = threading.Thread(target=lambda: store._write_grouped(slow))
    leader.start()
    assert started.wait(5)
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(0.2, lambda: signal.pthread_kill(main, signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        store._write_grouped(lambda db: "interrupted")  # queued behind the leader
    leader.join(5)
    later: list[CallbackRecord] = []
    writer = threading.Thread(target=lambda: later.append(record(store)), daemon=True)
    writer.start()
    writer.join(5)
    assert later and not writer.is_alive(), "a later write blocked behind the interrupted one"
    assert store._group.idle
