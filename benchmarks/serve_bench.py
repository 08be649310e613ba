"""The notify endpoint over loopback HTTP: ``qywx serve`` against a wechatpy handler.

Usage::

    pip install -e . && pip install -r benchmarks/requirements.txt
    python benchmarks/serve_bench.py                  # 3,000 callbacks, 2 rounds each
    python benchmarks/serve_bench.py --quick          # 500 callbacks, 1 round each
    python benchmarks/serve_bench.py --count 5000 --concurrency 8 --rounds 3

Both servers run as subprocesses on 127.0.0.1 and are driven by the same load
generator, ``qywx simulate-callback --count N --concurrency C --format json``: every
request is a fresh suite_ticket command callback (new ticket, nonce, timestamp and
IV), signed and encrypted for the sample instance QywxProxyTemp and judged as WeCom
judges it (HTTP 200 and exactly ``success``; later than ``--timeout`` counts as slow).

* **qywx**: ``qywx serve`` (waitress, ``--threads``) on a copy of ``sample_auths`` and
  an empty database, with ``QYWX_API_BASE`` pointing at a ``qywx fake-wecom``
  subprocess, exactly as deployed: signature, timestamp window, decrypt, typed event,
  replay/redelivery checks, one committed SQLite transaction before the reply, access
  log, and background workers storing each SuiteTicket.
* **peer**: ``benchmarks/peer_wechatpy_server.py``: wechatpy's ``WeChatCrypto`` and a
  committed SQLite insert (WAL, ``synchronous=FULL``) before ``success``, on the same
  waitress settings and thread count.

Rounds alternate (qywx, peer, qywx, peer, …), each on a fresh database, so that drift
of the shared machine hits both. A round starts with 100 untimed warm-up callbacks.
After each round the server is killed with SIGKILL and its database is opened to
count the callbacks it holds: every callback that was answered ``success`` must be
there ("durable" = acknowledged = found). The server's CPU time per callback comes
from ``/proc/<pid>/stat``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PEER = Path(__file__).resolve().with_name("peer_wechatpy_server.py")
INSTANCE = "QywxProxyTemp"
WARM_UP = 100
_LISTENING = re.compile(r"listening on (http://[0-9.]+:\d+)|fake WeCom API on (http://[0-9.]+:\d+)")


def qywx_command() -> list[str]:
    """``qywx`` from this checkout (PYTHONPATH below makes a scratch copy win too)."""
    return [sys.executable, "-m", "qywx_cli"]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QYWX_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def cpu_seconds(self) -> float:
        """utime + stime of the server process (waitress runs everything in-process)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


def start(name: str, argv: list[str], log: Path, env: dict[str, str]) -> Server:
    """Start a server with port 0 and read the URL it announces on stderr."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=sink, env=env, cwd=log.parent
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = _LISTENING.search(log.read_text(errors="replace"))
        if found:
            return Server(name, process, found.group(1) or found.group(2), log)
        if process.poll() is not None:
            raise SystemExit(f"{name} exited: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    process.kill()
    raise SystemExit(f"{name} did not start within 60 s; see {log}")


def simulate(auths: Path, url: str, count: int, concurrency: int, timeout: float) -> dict[str, Any]:
    """One ``qywx simulate-callback`` load run; its JSON summary."""
    argv = [
        *qywx_command(),
        "--auths",
        str(auths),
        "simulate-callback",
        "--auth",
        INSTANCE,
        "--url",
        f"{url}/notify/{INSTANCE}",
        "--count",
        str(count),
        "--concurrency",
        str(concurrency),
        "--timeout",
        str(timeout),
        "--format",
        "json",
    ]
    done = subprocess.run(argv, capture_output=True, env=child_env(), timeout=3600, check=False)
    if done.returncode not in (0, 1):
        raise SystemExit(f"simulate-callback failed ({done.returncode}): {done.stderr.decode()}")
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


#: The sides a benchmark can run: qywx, the durable peer, and the two references of the
#: HTTP edge (the peer storing nothing, and an app that only answers ``success``).
SIDES = ("qywx", "qywx-waitress", "peer", "peer-nodb", "empty")
LABELS = {
    "qywx": "`qywx serve` (granian, the default when installed)",
    "qywx-waitress": "`qywx serve --server waitress`",
    "peer": "wechatpy + sqlite3 (peer, durable)",
    "peer-nodb": "wechatpy, no database (peer, not durable)",
    "empty": "empty app (answers `success`)",
}


def stored(db: Path) -> int:
    """Callbacks in the side's database (0 for the sides that store nothing)."""
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM callbacks").fetchone()[0])


@dataclass
class Round:
    side: str
    throughput: float
    p50: float
    mean: float
    p99: float
    ok: int
    slow: int
    failed: int
    acknowledged: int
    found: int
    cpu_ms: float


def start_server(
    side: str, folder: Path, auths: Path, db: Path, threads: int, api_base: str
) -> Server:
    """``qywx serve`` (its WeCom API at ``api_base``) or the peer, on a free port."""
    if side in ("qywx", "qywx-waitress"):
        argv = [*qywx_command(), "--auths", str(auths), "--db", str(db), "serve"]
        argv += ["--server", "waitress"] if side == "qywx-waitress" else []
        env = child_env(QYWX_API_BASE=api_base)
    else:
        argv = [sys.executable, str(PEER), "--instance", str(auths / INSTANCE), "--db", str(db)]
        argv += {"peer-nodb": ["--no-db"], "empty": ["--empty"]}.get(side, [])
        env = child_env()
    argv += ["--port", "0", "--threads", str(threads)]
    return start(side, argv, folder / "server.log", env)


def start_fake_wecom(work: Path) -> Server:
    return start(
        "fake-wecom",
        [*qywx_command(), "fake-wecom", "--port", "0"],
        work / "fake-wecom.log",
        child_env(),
    )


def work_folder(keep: Path | None, prefix: str) -> Path:
    """A fresh subfolder of ``keep`` (so --keep can be reused), else a temporary one."""
    if keep is None:
        return Path(tempfile.mkdtemp(prefix=prefix))
    work = keep / time.strftime("run-%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    return work


def print_header(script: str, argv: list[str] | None) -> None:
    given = sys.argv[1:] if argv is None else argv
    print(f"Machine: {machine_line()}", flush=True)
    print(f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"Command: python benchmarks/{script} {' '.join(given)}".rstrip())


def run_round(side: str, work: Path, api_base: str, args: argparse.Namespace, index: int) -> Round:
    folder = work / f"{index:02d}-{side}"
    folder.mkdir()
    auths = folder / "auths"
    shutil.copytree(REPO / "sample_auths", auths)
    db = folder / "callbacks.db"
    server = start_server(side, folder, auths, db, args.threads, api_base)
    try:
        warm = simulate(auths, server.url, WARM_UP, args.concurrency, args.timeout)
        cpu_before = server.cpu_seconds()
        summary = simulate(auths, server.url, args.count, args.concurrency, args.timeout)
        cpu = server.cpu_seconds() - cpu_before
    finally:
        server.kill()  # SIGKILL: only what was committed before each reply survives
    acknowledged = sum(s["ok"] + s["slow"] for s in (warm, summary))
    return Round(
        side=side,
        throughput=summary["throughput_rps"],
        p50=summary["latency_ms"]["p50"],
        mean=summary["latency_ms"]["mean"],
        p99=summary["latency_ms"]["p99"],
        ok=summary["ok"],
        slow=summary["slow"],
        failed=summary["wrong_reply"] + summary["errors"],
        acknowledged=acknowledged,
        found=stored(db),
        cpu_ms=cpu * 1000 / max(1, summary["sent"]),
    )


def fsync_ms(folder: Path, commits: int = 200) -> float:
    """What one committed transaction costs on this disk (WAL, synchronous=FULL)."""
    with sqlite3.connect(folder / "fsync.db", isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (x TEXT)")
        started = time.perf_counter()
        for _ in range(commits):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?)", ("x" * 600,))
            conn.execute("COMMIT")
        return (time.perf_counter() - started) / commits * 1000


def machine_line() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = ", ".join(
        f"{dist} {importlib.metadata.version(dist)}" for dist in ("wechatpy", "waitress")
    )
    return (
        f"{os.cpu_count()} CPU ({cpu}), Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {versions}"
    )


def _row(label: str, rounds: Sequence[Round]) -> str:
    med = statistics.median
    lost: int | str = sum(max(0, r.acknowledged - r.found) for r in rounds)
    if rounds[0].side in ("peer-nodb", "empty"):
        lost = "not stored"
    return (
        f"| {label} | {med(r.throughput for r in rounds):,.0f} "
        f"| {med(r.p50 for r in rounds):.1f} | {med(r.mean for r in rounds):.1f} "
        f"| {med(r.p99 for r in rounds):.1f} "
        f"| {med(r.cpu_ms for r in rounds):.2f} "
        f"| {sum(r.ok + r.slow for r in rounds):,} ({sum(r.slow for r in rounds)} slow, "
        f"{sum(r.failed for r in rounds)} failed) "
        f"| {sum(r.acknowledged for r in rounds):,} / {sum(r.found for r in rounds):,} "
        f"| {lost} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000, help="timed callbacks per round")
    parser.add_argument("--concurrency", type=int, default=8, help="load generator connections")
    parser.add_argument("--threads", type=int, default=8, help="waitress threads, both servers")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per side, alternating")
    parser.add_argument("--timeout", type=float, default=1.0, help="reply deadline (WeCom: 1 s)")
    parser.add_argument("--quick", action="store_true", help="500 callbacks, 1 round each")
    parser.add_argument("--keep", type=Path, help="keep databases and logs under this folder")
    parser.add_argument(
        "--sides", default="qywx,peer", help=f"comma-separated, in order, of {', '.join(SIDES)}"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.rounds = 500, 1
    sides = [s for s in args.sides.split(",") if s]
    if not set(sides) <= set(SIDES):
        parser.error(f"--sides takes {', '.join(SIDES)}")

    work = work_folder(args.keep, "qywx-serve-bench-")
    print_header("serve_bench.py", argv)
    print(
        f"{args.count} suite_ticket callbacks per round after {WARM_UP} warm-up, "
        f"concurrency {args.concurrency}, {args.threads} waitress threads, "
        f"{args.rounds} round(s) per side; one committed SQLite transaction "
        f"(WAL, synchronous=FULL) costs {fsync_ms(work):.2f} ms on this disk",
        flush=True,
    )
    fake = start_fake_wecom(work)
    results: dict[str, list[Round]] = {side: [] for side in sides}
    try:
        for i in range(args.rounds):
            for side in sides if i % 2 == 0 else sides[::-1]:
                r = run_round(side, work, f"{fake.url}/cgi-bin", args, i)
                results[side].append(r)
                print(
                    f"  round {i + 1} {side}: {r.throughput:,.0f} callbacks/s, "
                    f"p50 {r.p50:.1f} ms, p99 {r.p99:.1f} ms, "
                    f"acknowledged {r.acknowledged}, found {r.found}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        fake.kill()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    print(
        "\n| server | callbacks/s (median) | p50 ms | mean ms | p99 ms | server CPU ms / callback "
        "| answered `success` | acknowledged / found after kill -9 | lost |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for side in sides:
        print(_row(LABELS[side], results[side]))
    if "qywx" in results:
        q = statistics.median(r.throughput for r in results["qywx"])
        qc = statistics.median(r.cpu_ms for r in results["qywx"])
        for side in sides:
            if side != "qywx":
                p = statistics.median(r.throughput for r in results[side])
                pc = statistics.median(r.cpu_ms for r in results[side])
                print(
                    f"\nqywx ÷ {side}: throughput {q / p:.2f}×, server CPU per callback "
                    f"{qc / pc:.2f}×"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
