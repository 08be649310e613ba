"""One captured request, padded and posted again and again, cannot fill the disk.

A real ``qywx serve`` on loopback with its SQLite file. The signature covers only the
``Encrypt`` value, so whoever captured one callback can pad its body to the 1 MiB limit
and post it as often as they like: as a byte-identical replay (answered ``success``,
logged ``duplicate``) or, once its timestamp is old, as a stale copy (403, logged
``rejected``). The database must grow by a few small rows, not by the padding times the
copies, while the original is processed once and every delivery is still counted.

The file is measured with the server stopped (its WAL checkpointed into the file), before
and after the flood, so the figure is what the flood left on disk.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qywx_cli.core import events as ev
from qywx_cli.core.store import Store
from qywx_cli.core.store.records import FOLD_AFTER
from tests.e2e.conftest import Proc, wait_for
from tests.e2e.test_hardening import INSTANCE, MIB, Edge
from tests.e2e.test_hostile import notify, request

COPIES = 20
"""Replays, and stale copies, of the one captured request."""
BOUND = 256 * 1024
"""What the whole flood may add to the file: a few pages of rows and index entries
(before v6 it added 40 MB)."""


def _on_disk(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())


def _restart(edge: Edge) -> None:
    edge.server.stop()
    edge.server = Proc(["serve", "--port", "0", "--threads", "4"], edge.env, edge.root)
    host, port = edge.server.url.removeprefix("http://").split(":")
    edge.address = (host, int(port))


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Edge]:
    world = Edge(tmp_path)
    yield world
    world.close()


def test_a_padded_request_posted_again_and_again_leaves_the_database_bounded(
    edge: Edge,
) -> None:
    assert edge.post(*edge.signed()).status == 200  # a suite_ticket: create_auth needs one
    _restart(edge)  # stopped once: the file as the flood finds it, WAL checkpointed
    edge.server.stop()
    before = _on_disk(edge.db)
    _restart(edge)

    install = ev.build_event_xml("create_auth", suite_id=edge.suite_id)
    _, unpadded = edge.signed(install)
    target, body = edge.signed(install, pad=MIB - len(unpadded))
    assert len(body) == MIB  # the largest body the server accepts
    first = edge.post(target, body)
    assert (first.status, first.body) == (200, b"success")

    def installed() -> bool:
        return any(r.info_type == "create_auth" and r.status == "processed" for r in edge.records())

    assert wait_for(installed, timeout=20, interval=0.1)
    replays = [edge.post(target, body) for _ in range(COPIES)]
    assert {(a.status, a.body) for a in replays} == {(200, b"success")}
    hour_ago = time.time() - 3600
    stale = [edge.post(*edge.signed(install, pad=MIB - len(unpadded), sent=hour_ago))]
    stale += [edge.post(*edge.signed(install, pad=MIB - len(unpadded), sent=hour_ago))
              for _ in range(COPIES - 1)]  # fmt: skip
    assert {a.status for a in stale} == {403}
    edge.server.stop()
    grown = _on_disk(edge.db) - before

    with Store(edge.db) as store:
        records = store.list_callbacks(limit=1000)
    mine = [r for r in records if r.info_type == "create_auth"]
    rejected = [r for r in records if r.status == "rejected"]
    assert sorted(r.status for r in mine) == ["duplicate"] * FOLD_AFTER + ["processed"]
    assert len(rejected) == FOLD_AFTER
    # every delivery is accounted for: rows plus what was folded into them
    duplicates = [r for r in mine if r.status == "duplicate"]
    assert len(duplicates) + sum(r.folded for r in duplicates) == COPIES
    assert len(rejected) + sum(r.folded for r in rejected) == COPIES
    assert max(len(r.envelope) for r in records) < 4096  # the ciphertext, not the body
    assert edge.fake_calls().get("service/v2/get_permanent_code") == 1
    assert grown < BOUND, f"the flood grew the database by {grown} bytes"


def test_a_year_old_handshake_replayed_many_times_adds_a_few_rows(edge: Edge) -> None:
    """A GET handshake has no clock window (WeCom's console signs it once, when the URL
    is saved), so a captured one stays valid: its replays are answered, and fold."""
    year_ago, nonce = str(int(time.time()) - 365 * 86400), "1372623149"
    echostr = edge.crypt.encrypt("8848123456789", edge.suite_id)
    target = notify(
        {
            "msg_signature": edge.crypt.sign(year_ago, nonce, echostr),
            "timestamp": year_ago,
            "nonce": nonce,
            "echostr": echostr,
        },
        INSTANCE,
    )
    answers = [request(edge.server, "GET", target) for _ in range(30)]
    assert {(a.status, a.body) for a in answers} == {(200, b"8848123456789")}
    rows = [r for r in edge.records() if r.kind == "verify"]
    assert sorted(r.status for r in rows) == ["duplicate"] * FOLD_AFTER + ["processed"]
    assert sum(r.folded for r in rows) == 30 - 1 - FOLD_AFTER
