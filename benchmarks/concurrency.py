"""Several ``qywx serve`` processes on one SQLite database, with racing duplicate deliveries.

Usage::

    python benchmarks/concurrency.py                       # 3 processes, 1,500 callbacks
    python benchmarks/concurrency.py --processes 4 --distinct 3000 --clients 24

What it does, with real processes on 127.0.0.1 only:

1. starts one ``qywx fake-wecom`` and ``--processes`` ``qywx serve`` processes at the same
   moment on one fresh database (so they also race to create and migrate it);
2. builds ``--distinct`` signed callbacks for ``QywxProxyTemp`` with qywx's own crypto,
   half suite_ticket and half create_auth (each create_auth for its own corp), and sends
   them round-robin across the processes from ``--clients`` threads;
3. a ``--duplicates`` fraction of them is delivered twice *at the same instant* (a barrier
   releases both requests together) to two different processes (with ``--processes 1``,
   to two threads of the one): half as a byte-identical replay, half as a WeCom-style
   redelivery (same plaintext, re-encrypted, new signature);
4. checks what WeCom would see and what happened inside:

   * no 5xx and no ``database is locked`` in any answer or any server log;
   * every delivery answered as designed: ``200 success`` to an original and to both
     copies of a racing replay or redelivery (WeCom must stop retrying), the later copy
     stored as ``duplicate`` and not handled again;
   * in the database, each distinct callback has exactly one non-duplicate record,
     ``processed`` with ``attempts == 1``, and one record per delivery in total;
   * the fake WeCom's call counters: ``get_permanent_code`` and ``gettoken`` called
     exactly once per distinct create_auth, i.e. no event was handled twice.

It prints throughput, latency percentiles and the checks as markdown tables, and exits 1
if a check fails. ``tests/e2e/test_concurrency.py`` runs it with a small load.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from benchmarks.durability import (  # noqa: E402
    INSTANCE,
    READY_TIMEOUT,
    Callback,
    QywxProcess,
    Sender,
    all_records,
    fake_wecom,
    make_workdir,
    post,
    serve_args,
    wait_until,
)
from qywx_cli.core.config import find_instance  # noqa: E402
from tests.helpers import http_client  # noqa: E402

__all__ = ["ConcurrencyResult", "run_concurrency"]


@dataclass(frozen=True)
class _Group:
    """One distinct callback and its deliveries: (process index, request) pairs."""

    original: Callback
    deliveries: tuple[tuple[int, Callback], ...]
    race: str  # "single" | "replay" | "redelivery"


@dataclass(frozen=True)
class _Answer:
    group: int
    process: int
    status: int
    text: str
    seconds: float


@dataclass
class ConcurrencyResult:
    processes: int = 0
    distinct: int = 0
    requests: int = 0
    racing_replays: int = 0
    racing_redeliveries: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    per_process: Counter[int] = field(default_factory=Counter)
    server_errors: int = 0
    locked: int = 0
    #: groups whose answers differ from the design (see the module docstring)
    wrong_answers: int = 0
    #: distinct callbacks without exactly one non-duplicate record
    not_recorded_once: int = 0
    #: deliveries (each answered 200) with no record of their own
    acknowledged_missing: int = 0
    not_processed_once: int = 0
    create_auths: int = 0
    get_permanent_code_calls: int = 0
    gettoken_calls: int = 0
    get_suite_token_calls: int = 0
    handling_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.server_errors == 0
            and self.locked == 0
            and self.wrong_answers == 0
            and self.not_recorded_once == 0
            and self.acknowledged_missing == 0
            and self.not_processed_once == 0
            and self.get_permanent_code_calls == self.create_auths
            and self.gettoken_calls == self.create_auths
        )

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    def table(self) -> str:
        rate = self.requests / self.seconds if self.seconds else 0.0
        load = [
            ("`qywx serve` processes on one database", self.processes),
            ("distinct callbacks", self.distinct),
            ("requests (incl. racing duplicates)", self.requests),
            ("… racing byte-identical replays", self.racing_replays),
            ("… racing re-encrypted redeliveries", self.racing_redeliveries),
            (
                "requests per process",
                ", ".join(str(self.per_process[i]) for i in range(self.processes)),
            ),
            ("answers by status", ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))),
            ("throughput (requests/s)", f"{rate:.0f}"),
            ("latency p50 / p99 / max (ms)", self._latency()),
            ("all records handled after (s)", f"{self.handling_seconds:.1f}"),
        ]
        checks = [
            ("5xx answers", self.server_errors),
            ("`database is locked` in answers or logs", self.locked),
            ("groups answered unlike the design", self.wrong_answers),
            ("distinct callbacks not recorded exactly once", self.not_recorded_once),
            ("deliveries missing from the log", self.acknowledged_missing),
            ("originals not processed exactly once (attempts == 1)", self.not_processed_once),
            (
                "get_permanent_code / gettoken calls per create_auth",
                f"{self.get_permanent_code_calls} / {self.gettoken_calls} for {self.create_auths}",
            ),
            ("get_suite_token calls", self.get_suite_token_calls),
        ]
        out = ["| load | value |", "|---|---:|"]
        out += [f"| {k} | {v} |" for k, v in load]
        out += ["", "| check | value |", "|---|---:|"]
        out += [f"| {k} | {v} |" for k, v in checks]
        return "\n".join(out)

    def _latency(self) -> str:
        if not self.latencies:
            return "-"
        return (
            f"{self.percentile(50) * 1000:.1f} / {self.percentile(99) * 1000:.1f} / "
            f"{max(self.latencies) * 1000:.1f}"
        )


def _plan(
    sender: Sender, distinct: int, processes: int, duplicates: float, rng: random.Random
) -> list[_Group]:
    groups: list[_Group] = []
    for i in range(distinct):
        create = i % 2 == 1
        cb = sender.callback(
            "create_auth" if create else "suite_ticket", f"wwcon{i:013d}" if create else None
        )
        target = i % processes
        if rng.random() >= duplicates:
            groups.append(_Group(cb, ((target, cb),), "single"))
            continue
        # Another process when there is one; with a single process, two of its threads.
        other = (target + 1 + rng.randrange(processes - 1)) % processes if processes > 1 else 0
        if rng.random() < 0.5:
            groups.append(_Group(cb, ((target, cb), (other, cb)), "replay"))
        else:
            again = sender.redeliver(cb)
            groups.append(_Group(cb, ((target, cb), (other, again)), "redelivery"))
    return groups


def _expected(group: _Group, statuses: list[int]) -> bool:
    if group.race == "single":
        return statuses == [200]
    return statuses == [200, 200]


def run_concurrency(
    distinct: int = 1500,
    processes: int = 3,
    *,
    clients: int = 12,
    duplicates: float = 0.3,
    seed: int | None = None,
    workdir: Path | None = None,
    threads: int = 8,
    workers: int = 2,
) -> ConcurrencyResult:
    """Run the load described in the module docstring and check it."""
    if distinct < 2 or processes < 1 or clients < 2:
        raise ValueError("need at least 2 callbacks, 1 process and 2 clients")
    rng = random.Random(seed)
    own_tmp = workdir is None
    root = Path(tempfile.mkdtemp(prefix="qywx-concurrency-")) if workdir is None else workdir
    result = ConcurrencyResult(processes=processes, distinct=distinct)
    try:
        work = make_workdir(root)
        sender = Sender(find_instance(INSTANCE, work.auths, env={}))
        with fake_wecom(work) as fake:
            # All at once: they also race to create and migrate the new database.
            servers = [
                QywxProcess(serve_args(threads, workers), work.env, root) for _ in range(processes)
            ]
            try:
                for s in servers:
                    s.wait_ready()
                _prime(sender, servers[0].url, work.db)
                groups = _plan(sender, distinct, processes, duplicates, rng)
                answers = _send(groups, [s.url for s in servers], clients, result)
                began = time.monotonic()
                wait_until(lambda: _handled(work.db), READY_TIMEOUT * 4)
                result.handling_seconds = time.monotonic() - began
            finally:
                logs = []
                for s in servers:
                    s.stop()
                    logs.append(s.log)
            with http_client() as client:
                calls = client.get(f"{fake.url}/fake/state").json()["calls"]
        _check(result, groups, answers, work.db, logs, calls)
    finally:
        if own_tmp:
            shutil.rmtree(root, ignore_errors=True)
    return result


def _prime(sender: Sender, url: str, db: Path) -> None:
    """A handled suite_ticket first, so every create_auth can get a suite token."""
    with http_client() as client:
        r = post(client, url, sender.callback("suite_ticket"))
    if (r.status_code, r.text) != (200, "success"):
        raise RuntimeError(f"priming suite_ticket refused: {r.status_code} {r.text}")
    if not wait_until(lambda: _handled(db), READY_TIMEOUT):
        raise RuntimeError("the priming suite_ticket was never processed")


def _handled(db: Path) -> bool:
    return all(r.status != "received" for r in all_records(db))


def _send(
    groups: list[_Group], urls: list[str], clients: int, result: ConcurrencyResult
) -> list[_Answer]:
    answers: list[_Answer] = []
    lock = threading.Lock()
    local = threading.local()
    opened: list[httpx.Client] = []

    def client() -> httpx.Client:
        """One keep-alive client per sending thread, as a WeCom edge node would hold."""
        if not hasattr(local, "client"):
            local.client = http_client()
            with lock:
                opened.append(local.client)
        c: httpx.Client = local.client
        return c

    def deliver(index: int, process: int, cb: Callback, barrier: threading.Barrier | None) -> None:
        if barrier is not None:
            barrier.wait(READY_TIMEOUT)
        began = time.perf_counter()
        try:
            r = post(client(), urls[process], cb)
            status, text = r.status_code, r.text
        except httpx.HTTPError as exc:
            status, text = 599, f"{type(exc).__name__}"
        answer = _Answer(index, process, status, text[:200], time.perf_counter() - began)
        with lock:
            answers.append(answer)

    began = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        futures = []
        for index, group in enumerate(groups):
            barrier = threading.Barrier(2) if len(group.deliveries) == 2 else None
            for process, cb in group.deliveries:
                futures.append(pool.submit(deliver, index, process, cb, barrier))
        for f in futures:
            f.result(timeout=READY_TIMEOUT * 4)
    result.seconds = time.monotonic() - began
    for c in opened:
        c.close()
    return answers


def _check(
    result: ConcurrencyResult,
    groups: list[_Group],
    answers: list[_Answer],
    db: Path,
    logs: list[str],
    calls: dict[str, int],
) -> None:
    result.requests = len(answers)
    result.racing_replays = sum(1 for g in groups if g.race == "replay")
    result.racing_redeliveries = sum(1 for g in groups if g.race == "redelivery")
    result.latencies = [a.seconds for a in answers]
    result.statuses = Counter(a.status for a in answers)
    result.per_process = Counter(a.process for a in answers)
    result.server_errors = sum(1 for a in answers if a.status >= 500)
    result.locked = sum(1 for a in answers if "locked" in a.text) + sum(
        text.count("database is locked") for text in logs
    )
    result.notes += [
        line.strip() for text in logs for line in text.splitlines() if "Traceback" in line
    ]
    by_group: dict[int, list[int]] = defaultdict(list)
    for a in answers:
        by_group[a.group].append(a.status)
    for index, group in enumerate(groups):
        if not _expected(group, by_group[index]):
            result.wrong_answers += 1
            result.notes.append(f"{group.race} answered {sorted(by_group[index])}")

    records = all_records(db)
    keys = {(r.msg_signature, r.timestamp, r.nonce) for r in records}
    per_content: dict[str, list[int]] = defaultdict(list)
    originals: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for r in records:
        per_content[r.content_key or ""].append(r.id)
        if r.status != "duplicate":
            originals[r.content_key or ""].append((r.status, r.attempts))
    for group in groups:
        found = originals.get(group.original.content_key, [])
        if len(found) != 1:
            result.not_recorded_once += 1
        elif found[0] != ("processed", 1):
            result.not_processed_once += 1
            result.notes.append(f"original {group.original.info_type} ended {found[0]}")
        if len(per_content.get(group.original.content_key, [])) != len(group.deliveries):
            result.not_recorded_once += 1
        result.acknowledged_missing += sum(1 for _, cb in group.deliveries if cb.key not in keys)
    result.create_auths = sum(1 for g in groups if g.original.info_type == "create_auth")
    result.get_permanent_code_calls = int(calls.get("service/v2/get_permanent_code", 0))
    result.gettoken_calls = int(calls.get("gettoken", 0))
    result.get_suite_token_calls = int(calls.get("service/get_suite_token", 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--distinct", type=int, default=1500, help="distinct callbacks")
    parser.add_argument("--processes", type=int, default=3, help="qywx serve processes")
    parser.add_argument("--clients", type=int, default=12, help="client threads")
    parser.add_argument("--duplicates", type=float, default=0.3, help="fraction sent twice")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="work in DIR and keep it")
    args = parser.parse_args(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    result = run_concurrency(
        args.distinct,
        args.processes,
        clients=args.clients,
        duplicates=args.duplicates,
        seed=args.seed,
        workdir=args.keep,
    )
    print(
        f"qywx concurrency: {args.processes} x qywx serve on one SQLite database, "
        f"{args.clients} clients, Python {sys.version.split()[0]}"
    )
    print(result.table())
    for line in result.notes[:20]:
        print("note:", line)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
