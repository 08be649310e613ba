"""What only the PostgreSQL backend promises: URLs and passwords, its schema version,
and behaviour when the server is down or read-only. The shared contract is in
test_contract.py and runs here too."""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg_pool
import pytest

from qywx_cli.core.errors import StoreError, UsageError
from qywx_cli.core.store import SCHEMA_VERSION, Store, display_target
from qywx_cli.core.store.postgres import PostgresStore
from tests.core.store.conftest import make_record as record
from tests.helpers import REPO
from tests.pgserver import PgServer


@pytest.fixture
def dbname(pg_server: PgServer) -> Iterator[str]:
    name = pg_server.create_database()
    yield name
    pg_server.drop_database(name)


@pytest.fixture
def no_pgpassword(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither PGPASSWORD nor a ~/.pgpass: only what the test gives."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-such-pgpass"))


def test_a_postgresql_url_opens_postgres(pg_server: PgServer, dbname: str) -> None:
    for scheme in ("postgresql", "postgres"):
        url = pg_server.url(dbname).replace("postgresql", scheme, 1)
        with Store(url) as s:
            assert isinstance(s, PostgresStore) and s.backend == "postgresql"
            assert s.schema_version == SCHEMA_VERSION
            health = s.healthcheck()
            assert health["ok"] is True and health["read_only"] is False


def test_the_password_is_never_shown(pg_server: PgServer, dbname: str, no_pgpassword: None) -> None:
    url = pg_server.url(dbname, with_password=True)
    password = pg_server.password
    with Store(url) as s:
        shown = [repr(s), s.url, str(s.healthcheck()), display_target(url)]
        record(s)
    assert not any(password in text for text in shown), shown
    assert s.url == pg_server.url(dbname)
    wrong = url.replace(password, "Wr0ngSecretPw")
    with pytest.raises(StoreError) as err:
        Store(wrong)
    assert "Wr0ngSecretPw" not in str(err.value) and "\n" not in str(err.value)
    assert "password authentication failed" in str(err.value)
    with pytest.raises(StoreError) as err:
        Store(url.replace(dbname, "no_such_db"))
    assert password not in str(err.value)
    assert 'database "no_such_db" does not exist' in str(err.value)
    query = f"{pg_server.url(dbname)}?password={password}&sslmode=disable"
    with Store(query) as s:
        assert password not in repr(s) and "sslmode=disable" in s.url


def test_the_password_may_come_from_an_env_reference_or_a_pgpass_file(
    pg_server: PgServer,
    dbname: str,
    no_pgpassword: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    base = pg_server.url(dbname)
    with pytest.raises(StoreError, match="password"):
        Store(base)
    monkeypatch.setenv("QYWX_TEST_PGPW", pg_server.password)
    by_ref = base.replace("qywx@", "qywx:env:QYWX_TEST_PGPW@")
    with Store(by_ref) as s:
        assert s.url == base
    with Store(f"{base}?password=env:QYWX_TEST_PGPW") as s:
        assert s.healthcheck()["ok"] is True
    monkeypatch.delenv("QYWX_TEST_PGPW")
    with pytest.raises(StoreError, match=r"variable QYWX_TEST_PGPW is not set"):
        Store(by_ref)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{pg_server.port}:*:qywx:{pg_server.password}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    with Store(base) as s:
        assert s.healthcheck()["ok"] is True


def test_a_bad_url_is_one_line_without_the_password() -> None:
    with pytest.raises((UsageError, StoreError)) as err:
        Store("postgresql://u:Sekr1tPw@127.0.0.1:notaport/db")
    assert "Sekr1tPw" not in str(err.value) and "\n" not in str(err.value)


def test_a_newer_schema_is_refused_untouched(pg_server: PgServer, dbname: str) -> None:
    url = pg_server.url(dbname)
    Store(url).close()
    pg_server.psql(f"UPDATE qywx_schema SET version = {SCHEMA_VERSION + 1}", dbname)
    with pytest.raises(StoreError) as err:
        Store(url)
    assert str(err.value) == (
        f"database schema v{SCHEMA_VERSION + 1} is newer than this qywx "
        f"(v{SCHEMA_VERSION}); upgrade qywx"
    )
    assert pg_server.psql("SELECT version FROM qywx_schema", dbname) == str(SCHEMA_VERSION + 1)


def test_two_processes_migrating_at_once_leave_one_schema(pg_server: PgServer, dbname: str) -> None:
    code = "import sys; from qywx_cli.core.store import Store; Store(sys.argv[1]).close()"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, pg_server.url(dbname)], cwd=REPO)
        for _ in range(3)
    ]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    assert pg_server.psql("SELECT count(*), max(version) FROM qywx_schema", dbname) == (
        f"1|{SCHEMA_VERSION}"
    )


def test_read_only_database_is_unhealthy_refuses_writes_and_recovers(
    pg_server: PgServer, dbname: str
) -> None:
    url = pg_server.url(dbname)
    with Store(url) as s:
        first = record(s)
        pg_server.psql(f"ALTER DATABASE {dbname} SET default_transaction_read_only = on")
        pg_server.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid()"
        )
        with pytest.raises(StoreError, match="read-only"):
            record(s)
        health = s.healthcheck()
        assert health["ok"] is False and health["read_only"] is True
        assert s.get_callback(first.id) == first  # reads still work
        pg_server.psql(f"ALTER DATABASE {dbname} SET default_transaction_read_only = off")
        pg_server.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid()"
        )
        assert record(s).status == "received"  # the same Store, no restart
        assert s.healthcheck()["ok"] is True


def test_a_server_that_goes_away_and_returns_needs_no_restart(
    pg_server: PgServer, dbname: str
) -> None:
    """While it is away every call fails with libpq's reason for it, not with a timeout;
    back, the next call is served."""
    with Store(pg_server.url(dbname)) as s:
        record(s)
        pg_server.stop_server("fast")
        try:
            for _ in range(2):  # the first call finds its connection broken, the second none
                with pytest.raises(StoreError) as err:
                    record(s)
                message = str(err.value)
                assert "\n" not in message and pg_server.password not in message
                assert "unavailable: connection failed:" in message, message
                assert "Connection refused" in message, message
            health = s.healthcheck()
            assert health["ok"] is False and "Connection refused" in str(health["error"])
            # Refused calls leave nothing behind, however long the outage: psycopg_pool
            # kept each timed-out caller queued, with its exception and the frames of
            # its traceback, until a connection came back.
            del err  # its StoreError's __context__ is the PoolTimeout of that call
            refused: list[str] = []
            threads = [threading.Thread(target=_refused, args=(s, refused)) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(refused) == 8 and all("Connection refused" in m for m in refused)
            gc.collect()
            left = [o for o in gc.get_objects() if isinstance(o, psycopg_pool.PoolTimeout)]
            assert left == []
        finally:
            pg_server.start_server()
        assert record(s).status == "received"
        assert s.healthcheck()["ok"] is True
        assert len(s.list_callbacks()) == 2


def _refused(store: Store, messages: list[str]) -> None:
    with pytest.raises(StoreError) as err:
        record(store)
    messages.append(str(err.value))


def test_a_server_refusing_more_connections_is_no_outage(
    pg_server: PgServer, dbname: str, caplog: pytest.LogCaptureFixture
) -> None:
    """At the role's connection limit the pool's attempts to grow fail, but the two
    connections it has keep serving: thirty threads, each holding one for 0.1 s at a
    time (a token lock), queue for them first come first served (up to 1.5 s), and
    every call is served; none is refused as if the server were away."""
    pg_server.psql("ALTER ROLE qywx CONNECTION LIMIT 2")
    try:
        with PostgresStore(pg_server.url(dbname), pool_size=8) as s:
            failures: list[str] = []

            def work(n: int) -> None:
                for i in range(2):
                    try:
                        with s.token_lock("suite", f"limit-{n}-{i}"):
                            time.sleep(0.1)
                        record(s)
                    except StoreError as exc:
                        failures.append(str(exc))

            threads = [threading.Thread(target=work, args=(n,)) for n in range(30)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert failures == []
            assert len(s.list_callbacks(limit=1000)) == 60
    finally:
        pg_server.psql("ALTER ROLE qywx CONNECTION LIMIT -1")
    refused = [r.getMessage() for r in caplog.records if "cannot connect to" in r.getMessage()]
    assert refused and "too many connections" in refused[0], caplog.text


def test_without_the_driver_a_postgresql_url_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['psycopg'] = None\n"
        "from qywx_cli.core.store import Store\n"
        "try:\n"
        "    Store('postgresql://u:pw@127.0.0.1/db')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == (
        "StoreError a postgresql:// database needs the postgres extra: "
        "pip install 'qywx-cli[postgres]'"
    )


def test_hot_path_statements_use_indexes(pg_server: PgServer, dbname: str) -> None:
    """The dedupe lookups search the unique indexes, never the whole log."""
    with Store(pg_server.url(dbname)) as s:
        for _ in range(3):
            record(s)
    pg_server.psql("ANALYZE callbacks", dbname)
    plan = pg_server.psql(
        "SET enable_seqscan = off; EXPLAIN SELECT id FROM callbacks WHERE instance = 'a' "
        "AND msg_signature = 'b' AND timestamp = 'c' AND nonce = 'd' "
        "AND status NOT IN ('duplicate', 'rejected')",
        dbname,
    )
    assert "callbacks_replay" in plan, plan
    assert os.environ.get("PGPASSWORD")  # the session's server password is in the env


def test_a_v5_database_keeps_only_the_ciphertext_of_each_body(
    pg_server: PgServer, dbname: str
) -> None:
    """As on SQLite: v6 reduces each stored POST body to its Encrypt value and leaves
    handshakes and bodies that never parsed alone."""
    import psycopg

    from qywx_cli.core.store.postgres import MIGRATIONS

    url = pg_server.url(dbname)
    padded = "<xml><ToUserName><![CDATA[dk1]]></ToUserName>" + " " * 1_000_000
    padded += "<Encrypt><![CDATA[c2lnbmVk]]></Encrypt></xml>"
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        for step in MIGRATIONS[:5]:
            step(cur)
        cur.execute("CREATE TABLE qywx_schema (version integer NOT NULL)")
        cur.execute("INSERT INTO qywx_schema VALUES (5)")
        cur.executemany(
            "INSERT INTO callbacks (id, received_at, instance, kind, msg_signature, "
            "timestamp, nonce, envelope, status) VALUES (%s, 1, 'I', %s, %s, '1', 'n', %s, %s)",
            [
                (1, "command", "s1", padded, "rejected"),
                (2, "verify", "s2", "ZWNob3N0cg==", "processed"),
                (3, "command", "s3", "<xml/>", "rejected"),
            ],
        )
    with Store(url) as s:
        assert s.schema_version == SCHEMA_VERSION
        got = {r.id: r for r in s.list_callbacks()}
    assert [got[i].envelope for i in (1, 2, 3)] == ["c2lnbmVk", "ZWNob3N0cg==", "<xml/>"]
    assert (got[1].folded, got[1].folded_at) == (0, None)


class _CountingForwarder:
    """A loopback TCP forwarder to the test server that counts the connections made
    through it: what the server sees of a client, measured outside psycopg."""

    def __init__(self, port: int) -> None:
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, args=(port,), daemon=True).start()

    def _accept(self, port: int) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            self.accepted += 1
            upstream = socket.create_connection(("127.0.0.1", port))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.close()


def test_opening_a_store_makes_one_connection(pg_server: PgServer, pg_url: str) -> None:
    """The store tries the URL with a connection of its own (libpq's reason at once if
    it is wrong) and its pool then takes that connection over: one TCP, TLS and SCRAM
    handshake per command, not two."""
    forwarder = _CountingForwarder(pg_server.port)
    try:
        url = pg_url.replace(f":{pg_server.port}/", f":{forwarder.port}/")
        with Store(url) as store:  # migrates the new database, then a write and a read
            record(store)
            assert len(store.list_callbacks()) == 1
        assert forwarder.accepted == 1
    finally:
        forwarder.close()


_CATALOG = """
SELECT n.nspname, pg_get_userbyid(n.nspowner), coalesce(n.nspacl::text, ''),
       (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid)
FROM pg_namespace n
WHERE n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
ORDER BY 1
"""


def _catalog(pg_server: PgServer, name: str) -> str:
    return pg_server.psql(_CATALOG, dbname=name)


def _new_catalog(pg_server: PgServer) -> str:
    """:data:`_CATALOG` of a database straight from CREATE DATABASE."""
    fresh = pg_server.create_database("fresh")
    try:
        return _catalog(pg_server, fresh)
    finally:
        pg_server.drop_database(fresh)


def _used_database(pg_server: PgServer) -> str:
    """A database as a store test leaves it: qywx's schema and one record."""
    name = pg_server.create_database()
    with Store(pg_server.url(name)) as store:
        record(store)
    return name


@pytest.mark.parametrize(
    "leftover",
    [
        "CREATE INDEX extra ON callbacks (nonce)",
        "UPDATE qywx_schema SET version = 99",
        "REVOKE ALL ON callbacks FROM qywx",
        "ALTER TABLE tokens ADD COLUMN extra text",
        "ALTER TABLE callbacks ENABLE ROW LEVEL SECURITY",
        "GRANT SELECT (envelope) ON callbacks TO PUBLIC",
        "ALTER SEQUENCE callbacks_id_seq INCREMENT BY 2",
        "ALTER SEQUENCE callbacks_id_seq START 1000",
        "ALTER TABLE suite_tickets DISABLE TRIGGER ALL",  # its foreign key no longer holds
        "CREATE RULE keep AS ON DELETE TO tokens DO INSTEAD NOTHING",
        'ALTER TABLE tokens ALTER COLUMN token TYPE text COLLATE "C"',
        "CREATE STATISTICS together ON kind, key FROM tokens",
    ],
    ids=[
        "index",
        "version",
        "grant",
        "column",
        "row-security",
        "column-grant",
        "sequence",
        "sequence-start",
        "key-trigger",
        "rule",
        "collation",
        "statistics",
    ],
)
def test_a_recycled_test_database_is_as_empty_as_a_new_one(
    pg_server: PgServer, leftover: str
) -> None:
    """The ``pg_url`` fixture hands a database a test gave back to the next one
    (tests/pgserver.py): it must look to the store exactly as a new one does. One left
    with anything beside qywx's schema and its rows has its schema dropped."""
    new_catalog, name = _new_catalog(pg_server), _used_database(pg_server)
    pg_server.psql(leftover, dbname=name)
    assert _catalog(pg_server, name) != new_catalog  # the schema is there now
    pg_server.recycle_database(name)
    try:
        assert _catalog(pg_server, name) == new_catalog  # dropped, not kept with its rows
    finally:
        assert pg_server.create_database() == name  # the newest empty spare: out of the pool
    try:
        with Store(pg_server.url(name)) as store:
            assert store.list_callbacks() == []
    finally:
        pg_server.drop_database(name)


def test_a_database_left_with_qywx_rows_only_comes_back_at_its_schema_with_none(
    pg_server: PgServer,
) -> None:
    """``pg_store_url``: a database a store test gave back, holding nothing but qywx's
    current schema and rows, comes back with the schema and no rows, its ids counting
    from 1 again."""
    name = pg_server.create_database()
    with Store(pg_server.url(name)) as store:
        first = record(store).id
        record(store)
        store.save_suite_ticket("suite", "ticket", 1_700_000_000)
    migrated = _catalog(pg_server, name)
    pg_server.recycle_database(name)
    assert _catalog(pg_server, name) == migrated  # kept at its schema
    assert pg_server.create_database(current_schema=True) == name
    try:
        with Store(pg_server.url(name)) as store:
            assert store.list_callbacks() == []
            assert store.latest_suite_ticket("suite") is None
            assert record(store).id == first
    finally:
        pg_server.drop_database(name)


def test_an_empty_database_is_made_from_one_left_at_qywxs_schema_when_none_is_spare(
    pg_server: PgServer,
) -> None:
    """``pg_url`` tests that open a store leave databases at qywx's schema: when no
    empty one is spare, such a one is emptied for ``pg_url`` rather than a new one made
    (CREATE DATABASE) while those pile up."""
    new_catalog, name = _new_catalog(pg_server), _used_database(pg_server)
    pg_server.recycle_database(name)
    handed: list[str] = []
    try:
        while name not in handed and len(handed) < 50:  # the spare empty ones come first
            handed.append(pg_server.create_database())
            assert _catalog(pg_server, handed[-1]) == new_catalog, handed[-1]
        assert name in handed
    finally:
        for each in handed:
            pg_server.drop_database(each)


def test_a_test_database_left_with_more_than_its_schema_is_dropped(pg_server: PgServer) -> None:
    name = pg_server.create_database()
    pg_server.psql("CREATE SCHEMA left_behind", dbname=name)
    pg_server.recycle_database(name)
    other = pg_server.create_database()
    try:
        assert other != name
        assert pg_server.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "0"
    finally:
        pg_server.drop_database(other)


def test_the_test_servers_logins_are_scram_at_the_iterations_asked_for(pg_server: PgServer) -> None:
    """The suite's server makes password logins cheaper (tests/conftest.py) without
    changing how clients log in: SCRAM-SHA-256 on every TCP connection, as deployed."""
    verifier = pg_server.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'qywx'")
    assert verifier.startswith("SCRAM-SHA-256$16:"), verifier[:20]
    rules = pg_server.psql("SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE type = 'host'")
    assert rules.split() == ["scram-sha-256"]
