"""The store contract suite's fixtures: one ``backend`` per database, a ``store`` on it.

Every test that takes ``store`` or ``backend`` runs once per backend: a SQLite file in
tmp_path, and a database on the session's real PostgreSQL server that is new or holds
only qywx's current schema (``pg_store_url``).
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qywx_cli.core.store import CallbackRecord, Store
from tests.helpers import Clock

T0 = 1_700_000_000.0


@dataclass
class Backend:
    """A database for one test: where it is, how to open it, and raw SQL on it."""

    name: str
    target: str
    query: Callable[[str], list[tuple[Any, ...]]]

    def open(self, now: Callable[[], float] | None = None) -> Store:
        return Store(self.target) if now is None else Store(self.target, now=now)


def _sqlite_backend(tmp_path: Path) -> Backend:
    path = tmp_path / "qywx.db"

    def query(sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as conn:
            return list(conn.execute(sql).fetchall())

    return Backend("sqlite", str(path), query)


def _postgres_backend(url: str) -> Backend:
    def query(sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            return [tuple(r) for r in conn.execute(sql).fetchall()]

    return Backend("postgres", url, query)


BACKEND_NAMES = ("sqlite", "postgres")


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return _sqlite_backend(tmp_path)
    return _postgres_backend(request.getfixturevalue("pg_store_url"))


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def store(backend: Backend, clock: Clock) -> Iterator[Store]:
    with backend.open(now=clock) as s:
        yield s


_seq = itertools.count(1)


def make_record(store: Store, **overrides: Any) -> CallbackRecord:
    """A fresh, distinct callback unless the test overrides the dedupe keys."""
    return store.record_callback(**callback_fields(**overrides))


def callback_fields(**overrides: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`make_record`'s ``record_callback`` call."""
    n = next(_seq)
    fields: dict[str, Any] = {
        "instance": "QywxProxyTemp",
        "kind": "command",
        "info_type": "suite_ticket",
        "suite_id": "dk0001",
        "corp_id": None,
        "msg_signature": f"sig{n:040d}",
        "timestamp": str(1_700_000_000 + n),
        "nonce": f"nonce{n}",
        "envelope": f"<xml><Encrypt><![CDATA[cipher{n}]]></Encrypt></xml>",
        "content_key": f"content{n}",
    }
    fields.update(overrides)
    return fields


@pytest.fixture
def record() -> Callable[..., CallbackRecord]:
    return make_record
