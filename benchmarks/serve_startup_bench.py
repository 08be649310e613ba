"""``qywx serve`` start-up: from the command to the first answer of ``/healthz``.

Usage::

    python benchmarks/serve_startup_bench.py                    # 15 starts
    python benchmarks/serve_startup_bench.py --runs 20 --against /tmp/qywx-main   # A/B

A server is started far more often than an operator sees: every deploy and restart, a
supervisor bringing a crashed host back, and about a hundred times per run of this
repository's own tests. Each run here starts ``python -m qywx_cli serve --port 0`` on a
fresh copy of ``sample_auths`` and an initialised SQLite database, waits for the
"listening on" line, then for the first 200 from ``/healthz``, and reads the server's
own CPU time at that moment from ``/proc/<pid>/stat`` (user + system, so the load of
other jobs does not count), before stopping it with SIGTERM.

The reference is ``python -c "import typer"``, run in the same loop: no qywx command
starts faster than Typer itself. ``--against DIR`` runs another checkout's server in
the same loop, alternated with this one, so before and after meet the same load.
Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.startup_bench import _child_cpu, checkout  # noqa: E402
from benchmarks.startup_bench import env as tree_env  # noqa: E402

_LISTENING = re.compile(rb"listening on (http://[0-9.]+:\d+)")
_TICKS = os.sysconf("SC_CLK_TCK")


def env(tree: Path, auths: Path, db: Path) -> dict[str, str]:
    """startup_bench's environment for ``tree`` (first on the path, the bytecode cache
    on), with qywx pointed at the copies."""
    return {**tree_env(tree), "QYWX_AUTHS": str(auths), "QYWX_DB": str(db)}


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def start_once(environ: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(seconds to the first /healthz answer, server CPU seconds by then)."""
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "qywx_cli", "serve", "--port", "0", "--host", "127.0.0.1"],
        env=environ,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert server.stderr is not None
        url = ""
        for line in server.stderr:
            found = _LISTENING.search(line)
            if found:
                url = found.group(1).decode()
                break
        if not url:
            raise SystemExit(f"qywx serve did not start (exit {server.wait()})")
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.005)
        ready = time.perf_counter() - started
        cpu = proc_cpu(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
    return ready, cpu


def typer_once() -> tuple[float, float]:
    """(wall, CPU) of ``python -c "import typer"``."""
    cpu, started = _child_cpu(), time.perf_counter()
    subprocess.run([sys.executable, "-c", "import typer"], check=True)
    return time.perf_counter() - started, _child_cpu() - cpu


def prepare(folder: Path, tree: Path) -> tuple[Path, Path]:
    """A copy of sample_auths and a database made by ``tree``'s own qywx."""
    auths, db = folder / "auths", folder / "qywx.db"
    shutil.copytree(REPO / "sample_auths", auths)
    made = subprocess.run(
        [sys.executable, "-m", "qywx_cli", "db", "upgrade"],
        env=env(tree, auths, db),
        cwd=folder,
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:  # a checkout older than `qywx db upgrade`, say
        last = (made.stderr.strip().splitlines() or ["no message"])[-1]
        raise SystemExit(f"{tree} could not make its database with `qywx db upgrade`: {last}")
    return auths, db


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="starts per side")
    parser.add_argument("--against", type=checkout, help="another checkout, run alternately")
    args = parser.parse_args(argv)
    if not Path("/proc/self/stat").exists():
        raise SystemExit("this benchmark reads /proc: Linux only")

    with tempfile.TemporaryDirectory(prefix="qywx-serve-startup-") as tmp:
        sides: list[tuple[str, Path]] = [("this checkout", REPO)]
        if args.against is not None:
            sides.append((f"against {args.against}", args.against))
        plan = []
        for index, (label, tree) in enumerate(sides):
            folder = Path(tmp) / f"side{index}"
            folder.mkdir()
            auths, db = prepare(folder, tree)
            plan.append((label, env(tree, auths, db), folder))
        for _, environ, folder in plan:  # warm the page cache and the .pyc files
            start_once(environ, folder)
        walls: dict[str, list[float]] = {label: [] for label, _, _ in plan}
        cpus: dict[str, list[float]] = {label: [] for label, _, _ in plan}
        typer_wall: list[float] = []
        typer_cpu: list[float] = []
        for _ in range(args.runs):
            wall, cpu = typer_once()
            typer_wall.append(wall)
            typer_cpu.append(cpu)
            for label, environ, folder in plan:
                wall, cpu = start_once(environ, folder)
                walls[label].append(wall)
                cpus[label].append(cpu)

    load = os.getloadavg()[0]
    print(f"Machine: {os.cpu_count()} CPU, Python {platform.python_version()}, load {load:.1f}")
    print(f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}")
    given = sys.argv[1:] if argv is None else argv
    print(f"Command: python benchmarks/serve_startup_bench.py {' '.join(given)}".rstrip())
    print(f"{args.runs} starts per side, alternated; medians\n")
    floor_cpu = statistics.median(typer_cpu)
    print("| what | to first /healthz answer (ms) | CPU by then (ms) | CPU ÷ import typer |")
    print("|---|---:|---:|---:|")
    print(
        f'| `python -c "import typer"` (reference) | {statistics.median(typer_wall) * 1000:.0f} '
        f"| {floor_cpu * 1000:.0f} | 1.00× |"
    )
    for label, _, _ in plan:
        cpu = statistics.median(cpus[label])
        print(
            f"| `qywx serve`, {label} | {statistics.median(walls[label]) * 1000:.0f} "
            f"| {cpu * 1000:.0f} | {cpu / floor_cpu:.2f}× |"
        )
    if len(plan) == 2:
        ours, theirs = (statistics.median(cpus[label]) for label, _, _ in plan)
        print(f"\nCPU to ready, this checkout ÷ the other: {ours / theirs:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
