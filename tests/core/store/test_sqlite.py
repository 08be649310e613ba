"""What only the SQLite backend promises: a private file, WAL, its migrations and its
query plans, the write lock and the group commit. The shared contract is in
test_contract.py."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from qywx_cli.core.errors import StoreError
from qywx_cli.core.store import SCHEMA_VERSION, CallbackRecord, Store, SuiteTicket
from qywx_cli.core.store.sqlite import MIGRATIONS, SQLiteStore
from tests.core.store.conftest import T0
from tests.core.store.conftest import make_record as record
from tests.helpers import Clock


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "qywx.db"


@pytest.fixture
def store(db_path: Path, clock: Clock) -> Iterator[SQLiteStore]:
    s = SQLiteStore(db_path, now=clock)
    with s:
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


def test_database_runs_in_wal_mode_and_healthcheck_is_cheap(store: SQLiteStore) -> None:
    assert store.healthcheck() == {
        "ok": True,
        "backend": "sqlite",
        "schema_version": SCHEMA_VERSION,
        "journal_mode": "wal",
        "callbacks": 0,
        "suite_ticket_at": None,
        "writable": True,
    }
    for _ in range(3):
        last = record(store)
    assert store.healthcheck()["callbacks"] == last.id


def test_healthcheck_answers_beside_a_ticket_row_written_outside_qywx(
    store: SQLiteStore, db_path: Path
) -> None:
    """A suite_tickets row whose received_at is text (SQLite takes it): /healthz and
    doctor failed with ValueError; the newest ticket time is read from numbers only."""
    store.save_suite_ticket("dk1", "good", 1_700_000_000)
    good = store.healthcheck()["suite_ticket_at"]
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "INSERT INTO suite_tickets (id, suite_id, ticket, timestamp, received_at) "
            "VALUES (99, 'dk1', 'odd', 1700000001, 'not a time')"
        )
    conn.close()
    health = store.healthcheck()
    assert health["ok"] is True and health["suite_ticket_at"] == good is not None


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


def _database_at(path: Path, version: int) -> None:
    """A file as a qywx at schema ``version`` left it: the migrations up to it, in one
    transaction, as that qywx ran them."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for step in MIGRATIONS[:version]:
        step(conn)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.execute("COMMIT")
    conn.close()


class _Table(NamedTuple):
    """One table as SQLite reports it (PRAGMAs, not its CREATE text, which a rebuild and
    ALTER TABLE rewrite)."""

    without_rowid: bool
    columns: list[Any]  # name, type, NOT NULL, default, key: PRAGMA table_xinfo
    foreign_keys: list[Any]
    indexes: dict[str, tuple[Any, ...]]  # flags, columns, CREATE text (its condition)
    rows: list[Any]


def _schema_of(path: Path) -> tuple[dict[str, _Table], dict[str, Any]]:
    """The tables of ``path`` but SQLite's own (a v1 file keeps ``sqlite_sequence``
    after v2 dropped AUTOINCREMENT), and the file's own settings."""
    conn = sqlite3.connect(path)
    try:
        tables: dict[str, _Table] = {}
        for table, sql in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite^_%' ESCAPE '^'"
        ).fetchall():
            indexes = {}
            for _, index, unique, origin, partial in conn.execute(
                f"PRAGMA index_list({table})"
            ).fetchall():
                # None for a key's own index (a WITHOUT ROWID table's has no row at all)
                created = conn.execute(
                    "SELECT max(sql) FROM sqlite_master WHERE name = ?", (index,)
                ).fetchone()[0]
                indexes[index] = (
                    unique,
                    origin,
                    partial,
                    conn.execute(f"PRAGMA index_xinfo({index})").fetchall(),
                    None if created is None else " ".join(created.split()),
                )
            tables[table] = _Table(
                without_rowid="WITHOUT ROWID" in " ".join(sql.upper().split()),
                columns=conn.execute(f"PRAGMA table_xinfo({table})").fetchall(),
                foreign_keys=conn.execute(f"PRAGMA foreign_key_list({table})").fetchall(),
                indexes=indexes,
                rows=conn.execute(f"SELECT * FROM {table}").fetchall(),
            )
        settings = {
            pragma: conn.execute(f"PRAGMA {pragma}").fetchone()[0]
            for pragma in ("user_version", "application_id", "auto_vacuum", "page_size")
        }
        return tables, settings
    finally:
        conn.close()


def test_a_new_database_has_the_schema_the_migrations_build(tmp_path: Path) -> None:
    """A process's first new file is migrated step by step and the CREATE statements
    are read back from it; every later new file is given those in one step. Both must
    end with the same tables, columns, keys, indexes, rows and file settings as a file
    the migrations brought up, or a database would behave (and cost) differently by
    its age or by the process that made it."""
    SQLiteStore(tmp_path / "first.db").close()  # the first of this process, if no other was
    made = tmp_path / "new.db"
    SQLiteStore(made).close()
    replayed = tmp_path / "replayed.db"
    _database_at(replayed, SCHEMA_VERSION)

    (new, new_settings), (migrated, migrated_settings) = _schema_of(made), _schema_of(replayed)
    assert set(new) == {
        "callbacks", "suite_tickets", "tokens", "corp_auths", "org_codes", "login_codes",
        "id_mappings", "licences", "unlicensed_members", "auth_links",
    }  # fmt: skip
    assert len(new["callbacks"].columns) == 22
    assert sorted(new["callbacks"].indexes) == [
        "callbacks_by_corp", "callbacks_by_event", "callbacks_by_original",
        "callbacks_dedupe", "callbacks_log", "callbacks_open",
    ]  # fmt: skip
    assert new["suite_tickets"].without_rowid and not new["callbacks"].without_rowid
    for table in new:
        assert new[table] == migrated[table], table
    assert new_settings == migrated_settings
    conn = sqlite3.connect(made)  # made in one step: v1's AUTOINCREMENT never ran there
    sequence = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_sequence'")
    assert sequence.fetchone() == (0,)
    conn.close()
    with Store(replayed) as s:  # and the replayed file is one qywx opens as it is
        assert s.schema_version == SCHEMA_VERSION


def test_a_v1_database_is_rebuilt_keeping_every_record(db_path: Path, clock: Clock) -> None:
    _database_at(db_path, 1)  # as qywx 0.1 left it: AUTOINCREMENT ids, seven indexes
    with sqlite3.connect(db_path) as conn:
        conn.executemany(
            "INSERT INTO callbacks (id, received_at, instance, kind, info_type, corp_id, "
            "msg_signature, timestamp, nonce, envelope, content_key, status, duplicate_of, "
            "duplicate_reason) VALUES (?, ?, 'QywxProxyTemp', 'command', ?, ?, ?, '1', ?, "
            "'<xml/>', ?, ?, ?, ?)",
            [
                (5, T0, "suite_ticket", None, "s5", "n5", "c5", "processed", None, None),
                (9, T0 + 1, "create_auth", "wwA", "s9", "n9", "c9", "failed", None, None),
                (12, T0 + 2, "create_auth", "wwA", "s12", "n12", "c9", "duplicate", 9, "content"),
            ],
        )
        conn.execute(
            "INSERT INTO suite_tickets (id, suite_id, ticket, timestamp, received_at, "
            "callback_id) VALUES (3, 'dk1', 'old-ticket', 100, ?, 5)",
            (T0,),
        )
    with SQLiteStore(db_path, now=clock) as s:
        assert s.schema_version == SCHEMA_VERSION
        assert [r.id for r in s.list_callbacks()] == [12, 9, 5]
        assert s.get_callback(12).duplicate_of == 9
        assert [r.id for r in s.list_callbacks(status="failed")] == [9]
        assert [r.id for r in s.list_callbacks(corp_id="wwA")] == [12, 9]
        # the migrated records are still originals for the dedupe checks
        again = record(s, msg_signature="s9", timestamp="1", nonce="n9", content_key="c9")
        assert (again.duplicate_of, again.duplicate_reason) == (9, "replay")
        fresh = record(s)
        assert fresh.id == 14  # ids keep growing past the largest
        assert s.latest_suite_ticket("dk1") == SuiteTicket("dk1", "old-ticket", 100, T0)
        s.save_suite_ticket("dk1", "new-ticket", 100)  # same TimeStamp: the later one wins
        assert s.latest_suite_ticket("dk1").ticket == "new-ticket"  # type: ignore[union-attr]
        assert s.callback_stats().by_status == {
            "processed": 1,
            "failed": 1,
            "duplicate": 2,
            "received": 1,
        }
    with sqlite3.connect(db_path) as conn:
        assert (
            "AUTOINCREMENT"
            not in conn.execute(
                "SELECT sql FROM sqlite_master WHERE name = 'callbacks'"
            ).fetchone()[0]
        )
        indexes = {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'callbacks'"
            )
        }
        assert indexes == {
            "callbacks_log",
            "callbacks_open",
            "callbacks_by_corp",
            "callbacks_dedupe",
            "callbacks_by_event",
            "callbacks_by_original",
        }
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_v5_database_keeps_only_the_ciphertext_of_each_body(db_path: Path, clock: Clock) -> None:
    """v6 reduces every stored POST body to its Encrypt value (what retry decrypts) and
    leaves handshakes (the echostr already is the ciphertext) and bodies that never
    parsed as they were; a 1 MB padded body shrinks to its ciphertext."""
    _database_at(db_path, 5)  # whole XML bodies in ``envelope``
    padded = "<xml><ToUserName><![CDATA[dk1]]></ToUserName>" + " " * 1_000_000
    padded += "<Encrypt><![CDATA[c2lnbmVk]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>"
    with sqlite3.connect(db_path) as conn:
        conn.executemany(
            "INSERT INTO callbacks (id, received_at, instance, kind, info_type, "
            "msg_signature, timestamp, nonce, envelope, content_key, status) "
            "VALUES (?, ?, 'QywxProxyTemp', ?, NULL, ?, '1', 'n', ?, NULL, ?)",
            [
                (1, T0, "command", "s1", padded, "rejected"),
                (2, T0, "verify", "s2", "ZWNob3N0cg==", "processed"),
                (3, T0, "command", "s3", "<xml/>", "rejected"),
                (4, T0, "command", "s4", "  <xml><Encrypt>YWJj</Encrypt></xml>", "failed"),
            ],
        )
    with SQLiteStore(db_path, now=clock) as s:
        assert s.schema_version == SCHEMA_VERSION
        got = {r.id: r for r in s.list_callbacks()}
    assert [got[i].envelope for i in (1, 2, 3, 4)] == ["c2lnbmVk", "ZWNob3N0cg==", "<xml/>", "YWJj"]
    assert got[1].ciphertext == "c2lnbmVk" and got[4].ciphertext == "YWJj"
    assert (got[1].folded, got[1].folded_at) == (0, None)


def test_dedupe_candidates_that_share_a_key_are_told_apart(store: SQLiteStore) -> None:
    """The one dedupe index holds content_key, or msg_signature for records without one;
    a value that happens to be both is only a candidate, and the columns decide."""
    handshake = record(store, kind="verify", msg_signature="same", content_key=None)
    other = record(store, content_key="same")  # equal to the handshake's signature
    assert other.status == "received" and other.duplicate_of is None
    replayed = record(
        store,
        kind="verify",
        msg_signature="same",
        timestamp=handshake.timestamp,
        nonce=handshake.nonce,
        content_key=None,
    )
    assert (replayed.duplicate_of, replayed.duplicate_reason) == (handshake.id, "replay")
    redelivered = record(store, content_key="same")
    assert (redelivered.duplicate_of, redelivered.duplicate_reason) == (other.id, "content")


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
    assert "is not a SQLite database" in message and "backup" in message
    assert "\n" not in message
    assert db_path.read_bytes() == content


def test_an_unrelated_database_with_a_clashing_table_is_refused(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE callbacks (whatever TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"not a qywx database \(it holds tables callbacks\)"):
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
    ("filters", "walk"),
    [
        ({}, "SCAN callbacks USING INDEX callbacks_log"),
        ({"status": "failed"}, "SEARCH callbacks USING INDEX callbacks_open (status=?)"),
        ({"status": "processed"}, "SCAN callbacks USING INDEX callbacks_log"),
        (
            {"info_type": "create_auth"},
            "SEARCH callbacks USING INDEX callbacks_by_event (info_type=?)",
        ),
        ({"info_type": "suite_ticket"}, "SCAN callbacks USING INDEX callbacks_log"),
        ({"corp_id": "wwA"}, "SEARCH callbacks USING INDEX callbacks_by_corp (corp_id=?)"),
        ({"instance": "QywxProxyTemp"}, "SCAN callbacks USING INDEX callbacks_log"),
        ({"since": T0}, "SEARCH callbacks USING INDEX callbacks_log (received_at>?)"),
        (
            {"status": "failed", "since": T0},
            "SEARCH callbacks USING INDEX callbacks_open (status=? AND received_at>?)",
        ),
        (
            {"info_type": "create_auth", "since": T0},
            "SEARCH callbacks USING INDEX callbacks_by_event (info_type=? AND received_at>?)",
        ),
        (
            {"corp_id": "wwA", "since": T0},
            "SEARCH callbacks USING INDEX callbacks_by_corp (corp_id=? AND received_at>?)",
        ),
        (
            {"instance": "QywxProxyTemp", "since": T0},
            "SEARCH callbacks USING INDEX callbacks_log (received_at>?)",
        ),
        (
            {"status": "received", "newest_first": False},
            "SEARCH callbacks USING INDEX callbacks_open (status=?)",
        ),
    ],
)
def test_list_queries_walk_an_index_without_sorting(
    store: SQLiteStore, filters: dict[str, Any], walk: str
) -> None:
    """Each filter walks one index in received order and stops at the limit: the corp,
    open-status and event partial indexes where they apply, else ``callbacks_log``, whose
    entries carry event, instance and status so rows that do not match are skipped
    without reading the table."""
    plan = store.explain_list_callbacks(limit=50, **filters)
    _assert_indexed(plan)
    assert plan == [walk]


@pytest.mark.parametrize("filters", [{}, {"status": "failed"}, {"corp_id": "wwA", "since": T0}])
def test_follow_queries_use_the_rowid_range(store: SQLiteStore, filters: dict[str, Any]) -> None:
    plan = store.explain_list_callbacks(after_id=1000, **filters)
    assert plan == ["SEARCH callbacks USING INTEGER PRIMARY KEY (rowid>?)"]


@pytest.mark.parametrize("since", [None, T0])
def test_stats_read_covering_indexes(store: SQLiteStore, since: float | None) -> None:
    plan = store.explain_callback_stats(since=since)
    _assert_indexed(plan)
    # one pass over the covering log index; with since, only the window's range of it
    counts = "SCAN callbacks USING COVERING INDEX callbacks_log"
    if since is not None:
        counts = "SEARCH callbacks USING COVERING INDEX callbacks_log (received_at>?)"
    assert plan[0] == counts, plan
    assert any("COVERING INDEX callbacks_open (status=?" in line for line in plan), plan
    assert any("COVERING INDEX callbacks_by_event (info_type=?" in line for line in plan), plan
    # every count is a SEARCH (a range), but for the one-row step to the next event name
    assert not any(
        line.startswith("SCAN") and "callbacks_by_event" not in line for line in plan[1:]
    ), plan


def test_dedupe_and_pending_lookups_search_an_index(store: SQLiteStore) -> None:
    plans = store.query_plans()
    assert plans["record_callback.dedupe"] == [
        "SEARCH callbacks USING INDEX callbacks_dedupe (<expr>=?)"
    ]
    assert plans["pending_callbacks"] == [
        "SEARCH callbacks USING INDEX callbacks_open (status=? AND received_at<?)"
    ]


def test_a_writer_interrupted_while_queued_leaves_the_store_usable(store: SQLiteStore) -> None:
    """Ctrl-C in a thread waiting for a group commit must not wedge later writes.

    No timer: the leader's write is held until the interrupt has landed, and SIGINT is
    sent once the main thread is blocked in its queued write's wait().
    """
    started, release = threading.Event(), threading.Event()

    def slow(db: Any) -> str:
        started.set()
        assert release.wait(10), "the queued write was never interrupted"
        return "slow"

    leader = threading.Thread(target=lambda: store._write_grouped(slow))
    leader.start()
    assert started.wait(5)
    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main

    def interrupt_once_waiting() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            frame = sys._current_frames().get(main)  # the queued write's wait() in the store
            code = frame.f_code if frame is not None else None
            if code is not None and code.co_name == "wait" and "store" in code.co_filename:
                signal.pthread_kill(main, signal.SIGINT)
                return
            time.sleep(0.001)

    interrupter = threading.Thread(target=interrupt_once_waiting, daemon=True)
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            store._write_grouped(lambda db: "interrupted")  # queued behind the leader
    finally:
        release.set()
    interrupter.join(5)
    leader.join(5)
    later: list[CallbackRecord] = []
    writer = threading.Thread(target=lambda: later.append(record(store)), daemon=True)
    writer.start()
    writer.join(5)
    assert later and not writer.is_alive(), "a later write blocked behind the interrupted one"
    assert store._group.idle


def test_a_v2_database_gains_the_v3_tables_keeping_its_rows(db_path: Path) -> None:
    """v3 adds id mappings, licences and unlicensed members."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("BEGIN")
    MIGRATIONS[0](conn)
    conn.execute("PRAGMA foreign_keys = OFF")
    MIGRATIONS[1](conn)
    conn.execute(
        "INSERT INTO corp_auths (suite_id, corp_id, state, created_at, updated_at) "
        "VALUES ('dk1', 'wwcorp', 'active', 1, 1)"
    )
    conn.execute("PRAGMA user_version = 2")
    conn.execute("COMMIT")
    conn.close()
    with Store(db_path) as s:
        assert s.schema_version == SCHEMA_VERSION
        assert s.get_corp_auth("wwcorp") is not None
        s.save_id_mappings("corpid", "wwcorp", [("wwcorp", "wpOpenCorp")])
        found = s.get_corp_auth("wpOpenCorp")
        assert found is not None and found.corp_id == "wwcorp"


def test_lookups_by_either_form_are_index_searches(store: Store) -> None:
    assert isinstance(store, SQLiteStore)
    plans = store.id_query_plans()
    for name in ("lookup_id", "get_corp_auth"):
        assert plans[name] and not any(line.startswith("SCAN") for line in plans[name]), plans


def test_the_kind_filter_walks_the_log_index(store: SQLiteStore) -> None:
    plan = store.explain_list_callbacks(limit=50, kind="data")
    assert plan == ["SCAN callbacks USING INDEX callbacks_log"], plan


def test_a_v4_database_gains_auth_links_and_publish_status(db_path: Path) -> None:
    """v5 adds authorization links and, on each corp, its link state and publish status;
    rows written before read as "no link, status never read"."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("BEGIN")
    MIGRATIONS[0](conn)
    conn.execute("PRAGMA foreign_keys = OFF")
    MIGRATIONS[1](conn)
    MIGRATIONS[2](conn)
    MIGRATIONS[3](conn)
    conn.execute(
        "INSERT INTO corp_auths (suite_id, corp_id, permanent_code, state, created_at, "
        "updated_at) VALUES ('dk1', 'wwcorp', 'pc', 'active', 1, 1)"
    )
    conn.execute("PRAGMA user_version = 4")
    conn.execute("COMMIT")
    conn.close()
    with Store(db_path) as s:
        assert s.schema_version == SCHEMA_VERSION == 6
        before = s.get_corp_auth("wwcorp")
        assert before is not None and before.permanent_code == "pc"
        assert (before.link_state, before.publish_status) == (None, None)
        assert s.set_publish_status("dk1", "wwcorp", 2).publish_status == 2
        s.save_auth_link("st", instance="I", suite_id="dk1", qrcode_url="u", expires_at=9.0)
        assert s.get_auth_link("st") is not None


def test_reads_find_the_file_the_store_opened_after_a_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    """A relative path names the file in the directory the store was opened in. Reads
    have a connection of their own, opened on the first read: it must open that same
    file, not a new empty one in whatever directory the process is in by then (an
    embedding app that daemonizes chdirs to /)."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(home)
    with SQLiteStore("qywx.db", now=clock) as store:
        rec = record(store)
        monkeypatch.chdir(elsewhere)
        assert store.get_callback(rec.id) == rec
    assert not (elsewhere / "qywx.db").exists()


def test_a_write_sqlite_cannot_hold_fails_alone_in_its_group_commit(
    store: SQLiteStore, db_path: Path
) -> None:
    """Five callbacks queue behind a held write lock and share the next commit; one of
    them carries a ticket time beyond SQLite's 64-bit INTEGER. That one fails with a
    one-line StoreError; the other four are stored (before, all five failed)."""
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the leader's commit waits on this
    outcomes: dict[int, object] = {}

    def write(n: int) -> None:
        ticket = ("dk0001", f"ticket-{n}", 2**64 if n == 3 else 1_700_000_000 + n)
        try:
            outcomes[n] = record(store, suite_ticket=ticket).id
        except StoreError as exc:
            outcomes[n] = exc

    leader = threading.Thread(target=write, args=(0,))
    leader.start()
    _wait_until(lambda: not store._group.idle)  # the leader holds the commit
    followers = [threading.Thread(target=write, args=(n,)) for n in range(1, 6)]
    for t in followers:
        t.start()
    _wait_until(lambda: len(store._group._queued) == 5)
    blocker.execute("COMMIT")
    blocker.close()
    for t in (leader, *followers):
        t.join()
    error = outcomes.pop(3)
    assert isinstance(error, StoreError) and "too large" in error.message, error
    assert "\n" not in error.message
    assert all(isinstance(v, int) for v in outcomes.values()), outcomes
    stored = {r.nonce for r in store.list_callbacks(limit=100)}
    assert len(stored) == 5


def _wait_until(condition: Any) -> None:
    """Spin until ``condition()`` holds (threads have reached the queue); a hang fails."""
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:  # pragma: no cover - a hang, reported as one
            raise AssertionError("condition never held")
        time.sleep(0.001)
