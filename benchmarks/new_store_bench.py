"""What opening a new SQLite database costs: this checkout, and another beside it.

Usage::

    pip install -e .
    python benchmarks/new_store_bench.py                      # this checkout alone
    mkdir /tmp/then && git archive b8c8ba7 | tar -x -C /tmp/then
    python benchmarks/new_store_bench.py --against /tmp/then  # both, rounds alternated

Each side runs in a child process of its own (this interpreter, ``PYTHONPATH`` at its
checkout), which opens and closes ``--count`` stores on files that do not exist yet
(``SQLiteStore``: private file, WAL, ``synchronous=FULL``, the schema) in a folder under
``--dir`` (``/dev/shm`` by default, so that no disk's journal is timed), and reports the
process CPU (``time.process_time``) of the first one and the median of the rest. The
first pays for whatever a process builds once; the rest is what a process that makes
several databases pays for each. Rounds alternate the sides; the best round of each
figure is shown, with the ratio to the other checkout's in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(count: int, folder: Path) -> dict[str, float]:
    """Open ``count`` new stores in ``folder``; CPU ms of the first and of each later one."""
    from qywx_cli.core.store.sqlite import SQLiteStore

    costs = []
    for n in range(count):
        started = time.process_time()
        SQLiteStore(folder / f"{n}.db").close()
        costs.append((time.process_time() - started) * 1e3)
    return {"first": costs[0], "each": statistics.median(costs[1:])}


def run_side(checkout: Path, count: int, base: Path) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="new-store-", dir=base))
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(count), str(folder)],
            env=env,
            cwd=checkout,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return dict(json.loads(out.stdout))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="new stores per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("/dev/shm"), help="where they go")
    parser.add_argument("--against", type=Path, help="another checkout, run beside this one")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(int(args.child[0]), Path(args.child[1]))))
        return 0
    if args.count < 2 or args.rounds < 1:
        parser.error("--count must be at least 2 and --rounds at least 1")
    if not args.dir.is_dir():
        parser.error(f"--dir {args.dir} is not a folder")
    sides = {"here": REPO}
    if args.against is not None:
        if not (args.against / "qywx_cli" / "core" / "store").is_dir():
            parser.error(f"--against {args.against} is not a qywx checkout")
        sides["against"] = args.against.resolve()
    sys.path.insert(0, str(REPO))  # here, not in the child: it imports the side's checkout
    from benchmarks.serve_bench import print_header

    print_header("new_store_bench.py", argv)
    print()
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for side, checkout in sides.items():
            got = run_side(checkout, args.count, args.dir)
            mine = best.setdefault(side, dict(got))
            for key, value in got.items():
                mine[key] = min(mine[key], value)
    print(f"{args.count} new stores a round, {args.rounds} rounds, best round of each\n")
    print("| side | first new store in a process | each later one | later, ratio |")
    print("|---|---:|---:|---:|")
    reference = best.get("against", best["here"])
    for side, figures in best.items():
        ratio = figures["each"] / reference["each"]
        print(
            f"| {side} ({sides[side]}) | {figures['first']:.2f} ms | "
            f"{figures['each']:.2f} ms | {ratio:.2f}× |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
