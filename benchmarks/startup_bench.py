"""CLI start-up: ``qywx --help`` and ``qywx validate sample_auths`` against ``import typer``.

Usage::

    pip install -e .
    python benchmarks/startup_bench.py            # hyperfine if installed, else 30 runs
    python benchmarks/startup_bench.py --quick    # 10 runs
    python benchmarks/startup_bench.py --no-hyperfine
    python benchmarks/startup_bench.py --no-hyperfine --against /tmp/qywx-main   # A/B

``--against DIR`` also runs every qywx command from another checkout (``git worktree
add /tmp/qywx-main main``, or ``git archive main | tar -x -C DIR``), alternated with this
one in the same loop, and prints its ratios beside ours: on a shared machine the load
changes from minute to minute, so before/after figures only compare within one run.
The loop reports process CPU time (user + system of the child) next to wall time;
other jobs on the machine inflate the wall figure far more than the CPU one.

Every command is a fresh interpreter, so the figures are what an operator or a CI job
waits for. The floor is ``python -c "import typer"``: qywx's CLI is built on Typer,
so no qywx command can start faster than that; the goal is ``qywx validate`` within
1.5× of it. ``qywx`` is the console script pip installed next to this Python (or
``python -m qywx_cli`` if there is none), with this checkout first on ``PYTHONPATH``.

hyperfine (``apt-get install hyperfine``) runs each command with warm-up and reports
mean ± σ and min; without it the script times ``--runs`` runs itself. A second table
comes from ``python -X importtime``: the modules ``qywx validate`` imports beyond
what ``import typer`` already imports, by their own import time, which is where lazy
imports would pay.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL = 1.5


def qywx() -> list[str]:
    script = Path(sys.executable).with_name("qywx")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "qywx_cli"]


def env(tree: Path = REPO) -> dict[str, str]:
    """The environment of a timed run: ``tree`` first on the path, bytecode cache on.

    ``PYTHONDONTWRITEBYTECODE`` is dropped: with it, every module changed since the
    last cache write is compiled again on every run, which users never pay.
    """
    out = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("QYWX_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), out.get("PYTHONPATH")]))
    return out


def checkout(text: str) -> Path:
    """``--against``'s argument: a folder holding a qywx checkout, resolved.

    A folder that is not one would be put on ``PYTHONPATH`` to no effect, so the run
    would time this checkout against itself and print the ratio as if it were an A/B.
    """
    tree = Path(text).resolve()
    if not (tree / "qywx_cli" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(
            f"{text} is not a qywx checkout (no qywx_cli/__init__.py in it); make one with "
            "git archive REV | tar -x -C DIR"
        )
    return tree


@dataclass(frozen=True)
class Timing:
    label: str
    argv: list[str]
    mean: float
    stdev: float
    best: float
    cpu: float | None = None  # median process CPU seconds (the loop only)


_DB: list[str] = []  # the log database the `log` commands read (made in main)


def make_log_db(folder: Path, records: int = 60) -> Path:
    """A small callback log written by this checkout's own Store."""
    sys.path.insert(0, str(REPO))
    from qywx_cli.core.store import Store

    path = folder / "qywx.db"
    with Store(path) as store:
        for i in range(records):
            store.record_callback(
                instance="QywxProxyTemp",
                kind="command",
                info_type="suite_ticket",
                suite_id="tj1234567890abcdef",
                corp_id=None,
                msg_signature=f"{i:040x}",
                timestamp=str(1_700_000_000 + i),
                nonce=f"n{i}",
                envelope=f"<xml><Encrypt><![CDATA[c{i}]]></Encrypt></xml>",
                content_key=f"{i:064x}",
                status="processed",
            )
    return path


def commands() -> list[tuple[str, list[str]]]:
    log = ["--db", _DB[0]] if _DB else []
    return [
        ('python -c "import typer"', [sys.executable, "-c", "import typer"]),
        ("qywx --version", [*qywx(), "--version"]),
        ("qywx --help", [*qywx(), "--help"]),
        ("qywx validate sample_auths", [*qywx(), "validate", "sample_auths"]),
        (
            "qywx validate sample_auths --format json",
            [*qywx(), "validate", "sample_auths", "--format", "json"],
        ),
        ("qywx log list --format json", [*qywx(), *log, "log", "list", "--format", "json"]),
        ("qywx log list", [*qywx(), *log, "log", "list"]),
        ("qywx log tail --format json", [*qywx(), *log, "log", "tail", "--format", "json"]),
        ("qywx log show 1 --format json", [*qywx(), *log, "log", "show", "1", "--format", "json"]),
        ("qywx log stats --format json", [*qywx(), *log, "log", "stats", "--format", "json"]),
    ]


def time_with_hyperfine(runs: int) -> list[Timing]:
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "hyperfine.json"
        argv = ["hyperfine", "--warmup", "3", "--runs", str(runs), "-N", "--export-json"]
        argv += [str(export), "--style", "none"]
        labelled = commands()
        for _, cmd in labelled:
            argv.append(shlex.join(cmd))
        subprocess.run(argv, check=True, cwd=REPO, env=env(), stdout=subprocess.DEVNULL)
        results = json.loads(export.read_text())["results"]
    return [
        Timing(label, cmd, r["mean"], r["stddev"] or 0.0, r["min"])
        for (label, cmd), r in zip(labelled, results, strict=True)
    ]


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_with_loop(runs: int, against: Path | None = None) -> list[Timing]:
    """Every command ``runs`` times, interleaved; with ``against``, that checkout's qywx
    commands too (labelled ``… [against]``), alternated with ours."""
    plan: list[tuple[str, list[str], dict[str, str]]] = [
        (label, cmd, env()) for label, cmd in commands()
    ]
    if against is not None:
        plan += [
            (f"{label} [against]", cmd, env(against))
            for label, cmd in commands()
            if label.startswith("qywx")
        ]
    walls: dict[str, list[float]] = {label: [] for label, _, _ in plan}
    cpus: dict[str, list[float]] = {label: [] for label, _, _ in plan}
    for _ in range(3):  # warm the page cache and .pyc files
        for _, cmd, environ in plan:
            subprocess.run(cmd, cwd=REPO, env=environ, capture_output=True, check=True)
    for _ in range(runs):  # interleaved, so drift hits every command alike
        for label, cmd, environ in plan:
            cpu = _child_cpu()
            started = time.perf_counter()
            subprocess.run(cmd, cwd=REPO, env=environ, capture_output=True, check=True)
            walls[label].append(time.perf_counter() - started)
            cpus[label].append(_child_cpu() - cpu)
    return [
        Timing(
            label,
            cmd,
            statistics.mean(walls[label]),
            statistics.stdev(walls[label]),
            min(walls[label]),
            statistics.median(cpus[label]),
        )
        for label, cmd, _ in plan
    ]


def import_times(argv: list[str]) -> dict[str, tuple[int, int]]:
    """module → (self µs, cumulative µs) from ``-X importtime`` for ``argv``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        check=True,
    )
    out: dict[str, tuple[int, int]] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative, name = line.removeprefix("import time:").split("|")
        out[name.strip()] = (int(self_us), int(cumulative))
    return out


def beyond_typer(top: int, *args: str) -> tuple[list[tuple[str, int, int]], int]:
    """The modules ``qywx ARGS`` imports that ``import typer`` does not."""
    script = qywx()
    if script[0] == sys.executable:
        argv = script[1:]
    else:  # run the console script's code under -X importtime
        argv = ["-c", "import sys; from qywx_cli.cli import main; sys.exit(main())"]
    ours = import_times([*argv, *args])
    typer_only = import_times(["-c", "import typer"])
    extra = [(name, s, c) for name, (s, c) in ours.items() if name not in typer_only]
    extra.sort(key=lambda row: -row[1])
    return extra[:top], sum(s for _, s, _ in extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per command")
    parser.add_argument("--quick", action="store_true", help="10 runs per command")
    parser.add_argument("--no-hyperfine", action="store_true", help="time with a Python loop")
    parser.add_argument("--top", type=int, default=20, help="rows of the import table")
    parser.add_argument(
        "--against", type=checkout, help="another checkout to run alternately (implies the loop)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 10
    tmp = tempfile.TemporaryDirectory(prefix="qywx-startup-")
    try:
        return _run(args, Path(tmp.name), sys.argv[1:] if argv is None else argv)
    finally:
        tmp.cleanup()


def _run(args: argparse.Namespace, tmp: Path, given: list[str]) -> int:
    use_hyperfine = (
        shutil.which("hyperfine") is not None and not args.no_hyperfine and args.against is None
    )
    _DB.append(str(make_log_db(tmp)))
    timings = (
        time_with_hyperfine(args.runs) if use_hyperfine else time_with_loop(args.runs, args.against)
    )

    print(f"Machine: {os.cpu_count()} CPU, Python {platform.python_version()}")
    print(f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"Command: python benchmarks/startup_bench.py {' '.join(given)}".rstrip())
    tool = "hyperfine -N --warmup 3" if use_hyperfine else "time.perf_counter around subprocess"
    print(f"{args.runs} runs per command ({tool}); qywx = {shlex.join(qywx())}\n")
    if args.against is not None:
        print(f"[against] = the same command from {args.against}, alternated with this run\n")
    floor = timings[0]
    cpu_floor = floor.cpu
    cpu_head = " | CPU median (ms) | CPU ÷ import typer" if cpu_floor else ""
    print(f"| command | mean ± σ (ms) | min (ms) | ÷ import typer{cpu_head} |")
    print("|---|---:|---:|---:|" + ("---:|---:|" if cpu_floor else ""))
    for t in timings:
        cpu_cells = (
            f" | {t.cpu * 1000:.1f} | {t.cpu / cpu_floor:.2f}×"
            if cpu_floor and t.cpu is not None
            else ""
        )
        print(
            f"| `{t.label}` | {t.mean * 1000:.1f} ± {t.stdev * 1000:.1f} "
            f"| {t.best * 1000:.1f} | {t.mean / floor.mean:.2f}×{cpu_cells} |"
        )
    floor = timings[0].mean
    validate = next(t for t in timings if t.label == "qywx validate sample_auths")
    verdict = "met" if validate.mean / floor <= GOAL else "NOT met"
    print(f"\nGoal `qywx validate` ≤ {GOAL}× `import typer`: {verdict}")
    listing = next(t for t in timings if t.label == "qywx log list --format json")
    verdict = "met" if listing.mean / floor <= GOAL else "NOT met"
    print(
        f"Goal `qywx log list --format json` ≤ {GOAL}× `import typer`: {verdict} "
        f"({listing.mean / floor:.2f}× wall"
        + (
            f", {listing.cpu / timings[0].cpu:.2f}× CPU)"
            if listing.cpu is not None and timings[0].cpu
            else ")"
        )
    )

    log = ["--db", _DB[0]] if _DB else []
    for shown, words in (
        ("qywx validate sample_auths", ["validate", "sample_auths"]),
        ("qywx log list --format json", [*log, "log", "list", "--format", "json"]),
    ):
        rows, total = beyond_typer(args.top, *words)
        print(
            f"\nModules `{shown}` imports beyond `import typer` "
            f"(-X importtime, one run; their own time adds up to {total / 1000:.1f} ms):\n"
        )
        print("| module | self (ms) | cumulative (ms) |")
        print("|---|---:|---:|")
        for name, self_us, cumulative in rows:
            print(f"| `{name}` | {self_us / 1000:.2f} | {cumulative / 1000:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
