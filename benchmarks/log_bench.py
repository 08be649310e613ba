"""``qywx log list`` / ``qywx log stats`` on a 1,000,000-record callback log.

Usage::

    python benchmarks/log_bench.py                  # generate into a temp dir, measure
    python benchmarks/log_bench.py --db big.db      # keep (and reuse) the database
    python benchmarks/log_bench.py --records 200000 --runs 3 --explain

The database is created by qywx itself (``Store``: schema, indexes, WAL), then filled
in one transaction with ``executemany``. Rows carry a realistic mix for a busy
代开发 template over 30 days: mostly contact-change data callbacks and processed
records, a few percent failed / duplicate / rejected / unknown, 2,000 corps, four
instances, suite_ticket pushes every 10 minutes per suite. Each command then runs as a
real subprocess (interpreter start-up included, as an operator would see it), best
and median of ``--runs`` runs, and the result is printed as a markdown table.

The store's indexes are dropped during the bulk load and rebuilt from their own DDL
afterwards (faster than maintaining them row by row); the schema that results is
exactly the one ``qywx serve`` creates. ``ANALYZE`` is not run, because qywx does not
run it either.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qywx_cli.core.store import Store  # noqa: E402

GOAL_SECONDS = 0.5
DAYS = 30
SUITES = {
    "QywxProxyTemp": "tj1234567890abcdef",
    "QywxProxyCompanyA": "dk7f3a9c2e51b04d18",
    "QywxProxyCompanyB": "dk7f3a9c2e51b04d29",
    "QywxProxyDefault": "dk7f3a9c2e51b04d3a",
}
INSTANCE_WEIGHTS = [40, 25, 25, 10]
#: (info_type, kind, weight); None = a rejected request that never got decrypted.
EVENTS: list[tuple[str | None, str, float]] = [
    ("change_contact", "data", 55),
    ("suite_ticket", "command", 20),
    ("change_external_contact", "data", 10),
    ("change_auth", "command", 6),
    ("create_auth", "command", 3),
    ("text", "data", 2),
    ("cancel_auth", "command", 1),
    ("reset_permanent_code", "command", 0.5),
    ("verify_url", "verify", 0.5),
    ("batch_job_result", "data", 1),
    (None, "command", 1),
]
UNKNOWN_TYPES = {"text", "batch_job_result"}
ERRORS = [
    "service/get_permanent_code: WeCom errcode 40078: invalid auth_code",
    "service/get_permanent_code: WeCom errcode -1: system busy",
    "service/get_suite_token: WeCom errcode 40085: invalid suite ticket",
    "gettoken: WeCom errcode 40001: invalid credential",
    "service/get_auth_info: WeCom errcode 40084: invalid authorizer permanent code",
    "service/get_suite_token: WeCom unreachable after 3 attempt(s) (ConnectTimeout)",
    "change_auth for corp wwXXXX which has no permanent code; was its create_auth processed?",
    "no suite_ticket received yet for suite dk7f3a9c2e51b04d29; WeCom pushes one every 10 minutes",
]
CORPS = [f"ww{hashlib.sha256(str(i).encode()).hexdigest()[:16]}" for i in range(2000)]


def _rows(count: int, now: float, rng: random.Random) -> Iterator[tuple[object, ...]]:
    """Callback rows in arrival order (ids and received_at rise together, as in qywx)."""
    instances = list(SUITES)
    kinds = [e for e in EVENTS]
    weights = [e[2] for e in EVENTS]
    cipher = "".join(
        rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        for _ in range(640)
    )
    start = now - DAYS * 86400
    step = DAYS * 86400 / count
    for i in range(count):
        received = start + i * step + rng.random() * step
        instance = rng.choices(instances, INSTANCE_WEIGHTS)[0]
        info_type, kind, _ = rng.choices(kinds, weights)[0]
        roll = rng.random()
        if info_type is None:
            status, error = "rejected", "signature mismatch (-40001)"
        elif info_type in UNKNOWN_TYPES:
            status, error = "unknown", None
        elif roll < 0.03:
            status, error = "failed", rng.choice(ERRORS)
        elif roll < 0.08:
            status, error = "duplicate", None
        elif roll < 0.09:
            status, error = "received", None
        else:
            status, error = "processed", None
        corp = None if info_type in (None, "suite_ticket", "create_auth") else rng.choice(CORPS)
        envelope = (
            f"<xml><ToUserName><![CDATA[{corp or SUITES[instance]}]]></ToUserName>"
            f"<Encrypt><![CDATA[{cipher[i % 64 :]}{cipher[: i % 64]}]]></Encrypt>"
            "<AgentID><![CDATA[]]></AgentID></xml>"
        )
        content_key = None if kind == "verify" or info_type is None else f"{i:064x}"
        attempts = 0 if status in ("duplicate", "rejected", "unknown") else 1
        if status == "failed":
            attempts = rng.randint(1, 3)
        yield (
            received,
            instance,
            kind,
            info_type,
            SUITES[instance],
            corp,
            f"{rng.getrandbits(160):040x}",
            str(int(received)),
            str(rng.getrandbits(32)),
            envelope,
            content_key,
            status,
            attempts,
            error,
            received + 0.05 if status in ("processed", "failed") else None,
        )


def generate(path: Path, count: int, seed: int = 7) -> float:
    """Create the database with qywx's own schema and fill it; returns seconds taken."""
    began = time.perf_counter()
    Store(path).close()  # schema, indexes, WAL, 0600: exactly what qywx serve creates
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -262144")
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'callbacks' AND sql IS NOT NULL"
        ).fetchall()
        now = time.time()
        rng = random.Random(seed)
        conn.execute("BEGIN")
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}")
        conn.executemany(
            "INSERT INTO callbacks (received_at, instance, kind, info_type, suite_id, corp_id, "
            "msg_signature, timestamp, nonce, envelope, content_key, status, attempts, "
            "last_error, processed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _rows(count, now, rng),
        )
        for _, sql in indexes:
            conn.execute(sql)
        # The latest pushes: one suite's tickets stopped arriving 45 minutes ago.
        for n, suite in enumerate(SUITES.values()):
            last = now - (2700 if n == 3 else 120)
            conn.executemany(
                "INSERT INTO suite_tickets (id, suite_id, ticket, timestamp, received_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        n * 100 + k + 1,
                        suite,
                        f"ticket-{suite}-{k}",
                        int(last - 600 * k),
                        last - 600 * k,
                    )
                    for k in range(20)
                ],
            )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.perf_counter() - began


def record_count(path: Path) -> int:
    with Store(path) as store:
        return int(store.healthcheck().get("callbacks", 0))  # type: ignore[call-overload]


def time_command(args: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    """Best and median wall time of ``qywx ARGS`` as a subprocess."""
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "qywx_cli", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        times.append(time.perf_counter() - began)
        if proc.returncode != 0:
            raise SystemExit(f"qywx {' '.join(args)} failed: {proc.stderr.strip()}")
    return min(times), statistics.median(times)


def stats_windows(db: Path, runs: int) -> str:
    """``callback_stats(since=…)`` in process (no start-up): its cost against the window.

    The reference is the same store's cheapest possible read of the window, counting it
    through the index range (``count(*) … WHERE received_at >= ?``), in the same run;
    "proportional to the window" means the ratio stays flat as the window grows.
    """
    now = time.time()
    lines = [
        "",
        "| window | records in it | `callback_stats` ms | count of the window ms "
        "| ratio | µs per record |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    conn = sqlite3.connect(db)
    with Store(db) as store:
        for label, seconds in (("2h", 7200), ("1d", 86400), ("7d", 7 * 86400), ("all", None)):
            since = now - seconds if seconds is not None else None
            stats_ms = count_ms = float("inf")
            rows = 0
            for _ in range(runs):
                began = time.perf_counter()
                store.callback_stats(since=since)
                stats_ms = min(stats_ms, (time.perf_counter() - began) * 1e3)
                began = time.perf_counter()
                rows = conn.execute(
                    "SELECT count(*) FROM callbacks WHERE received_at >= ?",
                    (since if since is not None else -1.0,),
                ).fetchone()[0]
                count_ms = min(count_ms, (time.perf_counter() - began) * 1e3)
            per = stats_ms * 1e3 / rows if rows else float("nan")
            lines.append(
                f"| {label} | {rows:,} | {stats_ms:.2f} | {count_ms:.2f} "
                f"| {stats_ms / count_ms:.1f}× | {per:.2f} |"
            )
    conn.close()
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="Database to use (generated if missing).")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--explain", action="store_true", help="Print the query plans too.")
    opts = parser.parse_args()

    tmp = None
    if opts.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="qywx-log-bench-")
        opts.db = Path(tmp.name) / "qywx.db"
    if opts.db.exists():
        print(f"using {opts.db} ({record_count(opts.db):,} records)", file=sys.stderr)
    else:
        print(f"generating {opts.records:,} records into {opts.db} …", file=sys.stderr)
        took = generate(opts.db, opts.records)
        size = opts.db.stat().st_size / 2**20
        print(f"generated in {took:.1f} s ({size:.0f} MiB)", file=sys.stderr)

    env = {k: v for k, v in os.environ.items() if not k.startswith("QYWX_")}
    env.update(
        QYWX_DB=str(opts.db),
        QYWX_AUTHS=str(REPO / "sample_auths"),
        PYTHONPATH=str(REPO),
        COLUMNS="200",
    )
    corp = CORPS[17]
    cases = [
        ["--version"],
        ["log", "list", "--limit", "50"],
        ["log", "list", "--limit", "50", "--format", "json"],
        ["log", "list", "--limit", "50", "--status", "failed"],
        ["log", "list", "--limit", "50", "--event", "create_auth"],
        ["log", "list", "--limit", "50", "--corp", corp],
        ["log", "list", "--limit", "50", "--instance", "QywxProxyCompanyB"],
        ["log", "list", "--limit", "50", "--since", "2h"],
        ["log", "list", "--limit", "50", "--status", "failed", "--since", "7d"],
        ["log", "list", "--limit", "50", "--event", "cancel_auth", "--corp", corp],
        ["log", "stats"],
        ["log", "stats", "--format", "json"],
        ["log", "stats", "--since", "1d"],
        ["log", "stats", "--since", "2h"],
    ]
    print("| command | best (s) | median (s) | < 0.5 s |")
    print("|---|---:|---:|:-:|")
    for args in cases:
        best, median = time_command(args, env, opts.runs)
        ok = "—" if args == ["--version"] else ("yes" if best < GOAL_SECONDS else "**no**")
        shown = "qywx " + " ".join(args).replace(corp, "<corp>")
        print(f"| `{shown}` | {best:.3f} | {median:.3f} | {ok} |", flush=True)

    print(stats_windows(opts.db, opts.runs))

    if opts.explain:
        with Store(opts.db) as store:
            for label, filters in (
                ("none", {}),
                ("status", {"status": "failed"}),
                ("event", {"info_type": "create_auth"}),
                ("corp", {"corp_id": corp}),
                ("instance", {"instance": "QywxProxyCompanyB"}),
                ("since", {"since": time.time() - 7200}),
                ("status+since", {"status": "failed", "since": time.time() - 7 * 86400}),
                ("event+corp", {"info_type": "cancel_auth", "corp_id": corp}),
            ):
                print(f"list[{label}]: {' / '.join(store.explain_list_callbacks(**filters))}")
            print(f"stats: {' / '.join(store.explain_callback_stats())}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
