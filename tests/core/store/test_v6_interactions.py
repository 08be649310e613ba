"""How schema v6 (bounded log), sealed secrets and the one-statement insert meet."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

from qywx_cli.core.errors import StoreError
from qywx_cli.core.sealing import Keyring, SecretKey, Slot, generate_key
from qywx_cli.core.store import Store
from qywx_cli.core.store.sqlite import MIGRATIONS, SQLiteStore
from tests.core.store.conftest import T0, Backend
from tests.core.store.conftest import make_record as record
from tests.helpers import Clock


def _v5_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for step in MIGRATIONS[:5]:
        step(conn)
    conn.execute("PRAGMA user_version = 5")
    conn.execute("COMMIT")
    conn.close()


def test_a_v5_body_that_begins_with_a_newline_is_reduced_too(tmp_path: Path) -> None:
    """A captured body often begins with a line break; ltrim() alone strips only spaces,
    so such a body kept its padding through the migration."""
    path = tmp_path / "qywx.db"
    _v5_sqlite(path)
    body = "\r\n\t<xml><ToUserName>dk1</ToUserName>" + " " * 10_000
    body += "<Encrypt><![CDATA[c2lnbmVk]]></Encrypt></xml>"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO callbacks (id, received_at, instance, kind, msg_signature, "
            "timestamp, nonce, envelope, status) VALUES (1, ?, 'I', 'command', 's', '1', "
            "'n', ?, 'processed')",
            (T0, body),
        )
    with SQLiteStore(path) as s:
        assert s.get_callback(1).envelope == "c2lnbmVk"


def test_a_v5_database_with_sealed_secrets_migrates_and_opens(tmp_path: Path) -> None:
    path = tmp_path / "qywx.db"
    _v5_sqlite(path)
    keys = Keyring(SecretKey.parse(generate_key()))
    sealed = keys.seal("PERMCODE-1", Slot.permanent_code("dk1", "ww1"))
    token = keys.seal("TOKEN-1", Slot.token("suite", "dk1"))
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO corp_auths (suite_id, corp_id, permanent_code, state, created_at, "
            "updated_at) VALUES ('dk1', 'ww1', ?, 'active', 1, 1)",
            (sealed,),
        )
        conn.execute("INSERT INTO tokens VALUES ('suite', 'dk1', ?, 9e12)", (token,))
    with Store(path, keys=keys) as s:
        auth = s.get_corp_auth("ww1", "dk1")
        assert auth is not None and auth.permanent_code == "PERMCODE-1"
        cached = s.get_token("suite", "dk1")
        assert cached is not None and cached.token == "TOKEN-1"
        assert s.secrets_at_rest().plaintext == 0


def test_a_replay_racing_its_original_on_two_connections(backend: Backend) -> None:
    """One original, however the threads interleave; the rest are duplicates."""
    stores = [backend.open() for _ in range(4)]
    results: list[str] = []
    barrier = threading.Barrier(len(stores))

    def go(s: Store) -> None:
        barrier.wait()
        for _ in range(5):
            r = record(s, msg_signature="sig-race", timestamp="1", nonce="n", content_key="race")
            results.append(r.status)

    threads = [threading.Thread(target=go, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert results.count("received") == 1 and results.count("duplicate") == 19
    rows = backend.query("SELECT count(*), sum(folded) FROM callbacks")
    assert rows[0][0] + rows[0][1] == 20
    assert rows[0][0] <= 1 + 3 + 3  # original + FOLD_AFTER rows per reason


def test_a_v5_body_that_begins_with_a_newline_is_reduced_on_postgres(pg_url: str) -> None:
    import psycopg

    from qywx_cli.core.store.postgres import MIGRATIONS as PG_MIGRATIONS

    body = "\r\n\t<xml><ToUserName>dk1</ToUserName>" + " " * 10_000
    body += "<Encrypt><![CDATA[c2lnbmVk]]></Encrypt></xml>"
    with psycopg.connect(pg_url) as conn, conn.cursor() as cur:
        for step in PG_MIGRATIONS[:5]:
            step(cur)
        cur.execute("CREATE TABLE qywx_schema (version integer NOT NULL)")
        cur.execute("INSERT INTO qywx_schema VALUES (5)")
        cur.execute(
            "INSERT INTO callbacks (id, received_at, instance, kind, msg_signature, "
            "timestamp, nonce, envelope, status) VALUES (1, 1, 'I', 'command', 's', '1', "
            "'n', %s, 'processed')",
            (body,),
        )
    with Store(pg_url) as s:
        assert s.get_callback(1).envelope == "c2lnbmVk"


def test_a_redelivery_after_its_original_was_pruned(backend: Backend, clock: Clock) -> None:
    """An original older than the cutoff is pruned while its newer duplicate stays; the
    next redelivery of the same content must still be a duplicate, not work again."""
    with backend.open(now=clock) as s:
        original = record(s, content_key="same-content", status="processed")
        clock.advance(3600)
        dup = record(s, content_key="same-content")
        assert dup.duplicate_of == original.id
        clock.advance(60)
        record(s)  # the newest record is never pruned
        assert s.prune_callbacks(before=original.received_at + 1, statuses=["processed"]) == {}
        assert s.get_callback(dup.id).duplicate_of == original.id
        again = record(s, content_key="same-content")
    assert again.status == "duplicate", again


def test_db_copy_round_trips_folded_rows_and_sealed_values(
    tmp_path: Path, pg_url: str, clock: Clock
) -> None:
    from qywx_cli.core.store.maintenance import copy_store

    keys = Keyring(SecretKey.parse(generate_key()))
    src = tmp_path / "src.db"
    with Store(src, now=clock, keys=keys) as s:
        for _ in range(5):
            record(s, status="rejected", last_error="bad signature")
            clock.advance(1)
        original = record(s, content_key="c", status="processed")
        for n in range(6):
            record(s, content_key="c", msg_signature=f"other{n}")
        s.put_token("suite", "dk1", "TOKEN-1", T0 + 9e6)
        s.upsert_corp_auth("dk1", "ww1", permanent_code="PERMCODE-1", agent_id=1)
        before = [(r.id, r.folded, r.folded_at, r.duplicate_of) for r in s.list_callbacks()]
    assert any(f for _, f, _, _ in before)
    back = tmp_path / "back.db"
    copy_store(src, pg_url)
    copy_store(pg_url, back)
    for target in (pg_url, back):
        with Store(target, now=clock, keys=keys) as s:
            got = [(r.id, r.folded, r.folded_at, r.duplicate_of) for r in s.list_callbacks()]
            assert got == before
            token = s.get_token("suite", "dk1")
            assert token is not None and token.token == "TOKEN-1"
            auth = s.get_corp_auth("ww1", "dk1")
            assert auth is not None and auth.permanent_code == "PERMCODE-1"
            assert s.secrets_at_rest().plaintext == 0
            # the copy goes on recording, folding onto the copied rows
            again = record(s, content_key="c", msg_signature="yet-another")
            assert again.duplicate_of == original.id


def test_a_redelivery_recorded_while_a_prune_deletes_its_original(
    pg_url: str, clock: Clock
) -> None:
    """PostgreSQL: a prune batch holds the original (FOR UPDATE) and deletes it while a
    redelivery of the same content is being recorded against it. The recording waits
    for the prune, then must still record the callback (not fail on the foreign key)."""
    import psycopg

    with Store(pg_url, now=clock) as s:
        original = record(s, content_key="gone", status="processed")
        clock.advance(3600)
        record(s)  # the newest record is never pruned
        with psycopg.connect(pg_url) as prune:  # one prune batch, as prune_callbacks runs it
            prune.execute("SELECT id FROM callbacks WHERE id = %s FOR UPDATE", (original.id,))
            prune.execute("DELETE FROM callbacks WHERE id = %s", (original.id,))
            got: list[object] = []
            t = threading.Thread(target=lambda: got.append(_try_record(s)))
            t.start()
            t.join(1.0)
            assert t.is_alive()  # waiting on the prune's lock
            prune.commit()
            t.join(10)
        assert len(got) == 1 and not isinstance(got[0], Exception), got
        assert getattr(got[0], "status", None) == "received"


def _try_record(s: Store) -> object:
    try:
        return record(s, content_key="gone")
    except Exception as exc:
        return exc


def test_replays_on_threads_sharing_one_store_fold_in_the_group_commit(
    backend: Backend,
) -> None:
    """Many threads on one Store (SQLite commits them in groups): one original, the
    rest duplicates, and every delivery counted as a row or a fold."""
    with backend.open() as s:
        results: list[str] = []
        barrier = threading.Barrier(8)

        def go() -> None:
            barrier.wait()
            for _ in range(10):
                r = record(s, msg_signature="sig-g", timestamp="1", nonce="n", content_key="g")
                results.append(r.status)

        threads = [threading.Thread(target=go) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(set(results)) == ["duplicate", "received"] and results.count("received") == 1
    rows = backend.query("SELECT count(*), sum(folded) FROM callbacks")
    assert rows[0][0] + rows[0][1] == 80 and rows[0][0] <= 1 + 3 + 3


def test_rotate_key_while_a_server_store_keeps_writing(backend: Backend) -> None:
    """The README's rotation: the server already runs with the new key and the old one;
    rotate-key runs beside it while it caches tokens. Afterwards every secret is under
    the new key and the server reads each one."""
    from qywx_cli.core.store.maintenance import rotate_key

    old = SecretKey.parse(generate_key(), "QYWX_OLD_SECRET_KEY")
    new = SecretKey.parse(generate_key())
    with Store(backend.target, keys=Keyring(old)) as before:
        for n in range(20):
            before.upsert_corp_auth("dk1", f"ww{n}", permanent_code=f"P{n}")
            before.put_token("corp", f"ww{n}", f"T{n}", T0 * 2)
    both = Keyring(new, (old,))
    with Store(backend.target, keys=both) as server:
        stop = threading.Event()
        errors: list[BaseException] = []

        def serve() -> None:
            n = 0
            while not stop.is_set():
                try:
                    server.put_token("suite", f"dk{n % 5}", f"S{n}", T0 * 2)
                    auth = server.get_corp_auth(f"ww{n % 20}", "dk1")
                    assert auth is not None and auth.permanent_code == f"P{n % 20}"
                except BaseException as exc:
                    errors.append(exc)
                    return
                n += 1

        t = threading.Thread(target=serve)
        t.start()
        try:
            done = rotate_key(backend.target, both)
        finally:
            stop.set()
            t.join()
        assert not errors, errors
        assert done.rekeyed >= 40
        survey = server.secrets_at_rest()
        assert survey.plaintext == 0 and set(survey.by_key) == {new.kid}
    with Store(backend.target, keys=Keyring(new)) as after:
        for n in range(20):
            auth = after.get_corp_auth(f"ww{n}", "dk1")
            assert auth is not None and auth.permanent_code == f"P{n}"


def test_a_replay_of_a_duplicate_counts_against_the_original(
    backend: Backend, clock: Clock
) -> None:
    """A duplicate is never an original: replaying a redelivery's exact bytes is one
    more content duplicate of the first delivery, folded with its kind past the limit."""
    with backend.open(now=clock) as s:
        original = record(s, content_key="dd")
        redelivery = record(s, content_key="dd", msg_signature="sig-dd2")
        assert (redelivery.duplicate_of, redelivery.duplicate_reason) == (original.id, "content")
        seen = [
            record(
                s,
                content_key="dd",
                msg_signature="sig-dd2",
                timestamp=redelivery.timestamp,
                nonce=redelivery.nonce,
            )
            for _ in range(5)
        ]
    assert {(r.duplicate_of, r.duplicate_reason) for r in seen} == {(original.id, "content")}
    rows = backend.query(
        f"SELECT count(*), sum(folded) FROM callbacks WHERE duplicate_of = {original.id}"
    )
    assert rows == [(3, 3)]


def test_a_resumed_copy_after_a_prune_of_the_source_misses_nothing(
    tmp_path: Path, clock: Clock
) -> None:
    """db copy resumes after the destination's rows; the source may have been pruned
    in between (retention_days on a live server), so "the destination holds the
    source's first n" no longer names where to go on."""
    from qywx_cli.core.store.maintenance import copy_store

    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    with Store(src, now=clock) as s:
        for _ in range(100):
            record(s, status="processed")
            clock.advance(1)
    copy_store(src, dst)
    with sqlite3.connect(dst) as conn:  # the copy was interrupted after id 50
        conn.execute("DELETE FROM callbacks WHERE id > 50")
    with Store(src, now=clock) as s:
        assert s.prune_callbacks(before=T0 + 30, statuses=["processed"]) == {"processed": 30}
    # Resuming must not skip rows: it may refuse (the counts differ, the destination
    # still holds 1..30) but never report success with rows 51..80 left behind.
    with contextlib.suppress(StoreError):
        copy_store(src, dst)
    with Store(dst) as d:
        assert set(range(31, 101)) <= {r.id for r in d.iter_callbacks()}


def test_rotate_key_beside_a_reader_says_old_copies_are_left_until_run_again(
    tmp_path: Path,
) -> None:
    """README: "On SQLite the replaced bytes are zeroed and the WAL emptied". A reader
    mid-transaction (a server or log command reading as rotate-key runs) keeps the
    checkpoint from running: the old values are still on disk, and rotate-key says so
    instead of reporting a clean file. Run again once the reader is gone, it clears them."""
    from qywx_cli.core.store.maintenance import rotate_key

    path = tmp_path / "qywx.db"
    keys = Keyring(SecretKey.parse(generate_key()))

    def on_disk() -> bytes:
        files = (path, path.with_name(path.name + "-wal"))
        return b"".join(f.read_bytes() for f in files if f.exists())

    with Store(path) as s:
        s.put_token("corp", "ww1", "PLAINTEXT-TOKEN-1", T0 * 2)
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM tokens").fetchone()
        with Store(path) as server:
            server.put_token("corp", "ww2", "PLAINTEXT-TOKEN-2", T0 * 2)
            done = rotate_key(path, keys)
        assert (done.sealed, done.old_copies_left) == (2, True)
        assert b"PLAINTEXT-TOKEN" in on_disk()  # what the report warns of
    finally:
        reader.close()
    again = rotate_key(path, keys)
    assert (again.sealed, again.unchanged, again.old_copies_left) == (0, 2, False)
    assert b"PLAINTEXT-TOKEN" not in on_disk()
