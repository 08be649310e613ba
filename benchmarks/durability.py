"""Durability under ``kill -9``: no callback qywx answered ``success`` is ever lost.

Usage::

    python benchmarks/durability.py                      # 2,000 callbacks, 3 kills
    python benchmarks/durability.py --count 5000 --kills 5 --clients 16 --seed 7

What it does, with real processes on 127.0.0.1 only:

1. copies ``sample_auths/`` to a temporary folder, starts ``qywx fake-wecom`` and
   ``qywx serve`` (``QYWX_API_BASE`` pointing at the fake, so the create_auth handler's
   get_permanent_code and gettoken calls succeed) on a fresh SQLite database;
2. sends ``--count`` signed and encrypted command callbacks for ``QywxProxyTemp`` from
   ``--clients`` threads, half suite_ticket and half create_auth (each for its own corp),
   every one with a fresh timestamp and nonce, built with qywx's own
   ``WXBizMsgCrypt`` and ``events.build_event_xml``;
3. ``SIGKILL``\\s the server ``--kills`` times at random points of the stream, while
   requests are in flight, and restarts it each time on the same database;
4. after the last server has stopped, checks that every request answered exactly
   ``200 success`` is in the callback log (matched by msg_signature + timestamp + nonce);
5. follows every record a kill left ``received``: either a restarted server resumed it
   (``CallbackService.start`` queues what was acknowledged but never handled), or it is
   still held by the claim lease of the worker that died, in which case it is re-run
   with ``CallbackService.retry`` as an operator's ``qywx retry`` would once the lease
   (``store.DEFAULT_LEASE_SECONDS``) has passed; the clock of that service is moved
   forward by the lease instead of waiting five minutes.

The script prints a markdown table and exits 1 if any acknowledged callback is lost or
any record is still unprocessed at the end. ``tests/e2e/test_durability.py`` runs the
same harness with a small count.

The helpers here (:class:`QywxProcess`, :class:`Sender`, :func:`make_workdir`) are also
used by ``benchmarks/concurrency.py``.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from qywx_cli.core import events as ev  # noqa: E402
from qywx_cli.core.config import AuthInstance, find_instance  # noqa: E402
from qywx_cli.core.service import CallbackService  # noqa: E402
from qywx_cli.core.settings import Settings  # noqa: E402
from qywx_cli.core.store import DEFAULT_LEASE_SECONDS, CallbackRecord, Store  # noqa: E402
from tests.helpers import http_client  # noqa: E402

__all__ = [
    "Callback",
    "DurabilityResult",
    "QywxProcess",
    "Sender",
    "Workdir",
    "all_records",
    "make_workdir",
    "run_durability",
]

SAMPLES = REPO / "sample_auths"
INSTANCE = "QywxProxyTemp"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
REQUEST_TIMEOUT = 10.0
_URL_RE = re.compile(r"(?:listening on|fake WeCom API on) (http://[0-9.]+:\d+)")


# -- processes ---------------------------------------------------------------------------
class Child(Protocol):
    """What :class:`QywxProcess` uses of a started process (a ``subprocess.Popen``)."""

    stderr: IO[str] | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...


def popen(args: list[str], env: dict[str, str], cwd: Path, umask: int) -> Child:
    """``python -m qywx_cli ARGS``: stdin and stdout from and to /dev/null, stderr a text
    pipe; ``umask`` (if >= 0) set in the child."""
    return subprocess.Popen(
        [sys.executable, "-m", "qywx_cli", *args],
        env=env,
        cwd=cwd,
        umask=umask,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )


LAUNCH: Callable[[list[str], dict[str, str], Path, int], Child] = popen
"""How :class:`QywxProcess` starts qywx. The test suite, which starts a hundred of these
processes, puts its own in (forked from an interpreter that has imported qywx already:
``tests/zygote.py``); the benchmarks run :func:`popen`."""


class QywxProcess:
    """``python -m qywx_cli ARGS`` with its stderr collected; ``url`` once it listens.

    Construction only launches it, so several can start at the same moment;
    :meth:`wait_ready` returns once it logged its address (or kills it and raises after
    ``READY_TIMEOUT``), so callers never race a half-started server.
    """

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, *, umask: int = -1) -> None:
        self.args = args
        self.popen = LAUNCH(args, env, cwd, umask)
        self.lines: list[str] = []
        self.url = ""
        self._ready = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> QywxProcess:
        if not self._ready.wait(timeout) or not self.url:
            self.kill()
            raise RuntimeError(f"qywx {self.args[0]} did not start:\n{self.log}")
        return self

    def _pump(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line)
            match = _URL_RE.search(line)
            if match and not self.url:
                self.url = match.group(1)
                self._ready.set()
        self._ready.set()  # exited before listening: wait_ready reports the log

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        """SIGKILL: no handler runs, no buffer is flushed, exactly a crash."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(STOP_TIMEOUT)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (graceful: in-flight requests finish, workers drain); SIGKILL if stuck."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(STOP_TIMEOUT)
            return -signal.SIGKILL


def start(args: list[str], env: dict[str, str], cwd: Path, *, umask: int = -1) -> QywxProcess:
    """Start and wait until it listens; ``umask`` (if >= 0) is set in the child."""
    return QywxProcess(args, env, cwd, umask=umask).wait_ready()


@dataclass(frozen=True)
class Workdir:
    """A private auths/ copy and database path, and the environment qywx runs with."""

    root: Path
    auths: Path
    db: Path
    env: dict[str, str]

    def settings(self) -> Settings:
        return Settings(auths_dir=self.auths, db_path=self.db, api_base=self.env["QYWX_API_BASE"])


def make_workdir(root: Path) -> Workdir:
    auths = root / "auths"
    if not auths.exists():
        shutil.copytree(SAMPLES, auths)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QYWX_")}
    env.update(
        QYWX_AUTHS=str(auths),
        QYWX_DB=str(root / "qywx.db"),
        PYTHONPATH=str(REPO),
        QYWX_API_BASE="http://127.0.0.1:9/cgi-bin",  # replaced once the fake listens
    )
    return Workdir(root, auths, root / "qywx.db", env)


@contextmanager
def fake_wecom(work: Workdir) -> Iterator[QywxProcess]:
    """A ``qywx fake-wecom`` for the run; ``QYWX_API_BASE`` in ``work.env`` points at it."""
    fake = start(["fake-wecom", "--port", "0"], work.env, work.root)
    work.env["QYWX_API_BASE"] = fake.url + "/cgi-bin"
    try:
        yield fake
    finally:
        fake.stop()


def serve_args(threads: int = 8, workers: int = 2) -> list[str]:
    return ["serve", "--port", "0", "--threads", str(threads), "--workers", str(workers)]


# -- callbacks ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Callback:
    """One signed, encrypted command callback as WeCom would POST it."""

    info_type: str
    corp_id: str | None
    plaintext: str
    params: dict[str, str]
    body: bytes
    content_key: str

    @property
    def key(self) -> tuple[str, str, str]:
        """How the log identifies this exact request (the replay key)."""
        return (self.params["msg_signature"], self.params["timestamp"], self.params["nonce"])


class Sender:
    """Builds callbacks for one instance with qywx's own crypto and event templates."""

    def __init__(self, instance: AuthInstance) -> None:
        self.instance = instance
        self._crypt = instance.crypto()

    def callback(self, info_type: str, corp_id: str | None = None) -> Callback:
        """A new event (fresh SuiteTicket / AuthCode) with a fresh timestamp and nonce."""
        xml = ev.build_event_xml(info_type, suite_id=self.instance.suite_id, corp_id=corp_id)
        return self.encrypt(info_type, corp_id, xml)

    def redeliver(self, original: Callback) -> Callback:
        """The same event re-encrypted under a fresh signature: what a WeCom retry looks like."""
        return self.encrypt(original.info_type, original.corp_id, original.plaintext)

    def encrypt(self, info_type: str, corp_id: str | None, xml: str) -> Callback:
        timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**12))
        envelope = self._crypt.encrypt_msg(xml, self.instance.suite_id, timestamp, nonce)
        return Callback(
            info_type=info_type,
            corp_id=corp_id,
            plaintext=xml,
            params=envelope.query(),
            body=envelope.request_xml(self.instance.suite_id).encode("utf-8"),
            content_key=ev.content_key(self.instance.name, xml.encode("utf-8")),
        )


def post(client: httpx.Client, url: str, cb: Callback) -> httpx.Response:
    return client.post(
        f"{url}/notify/{INSTANCE}",
        params=cb.params,
        content=cb.body,
        headers={"Content-Type": "text/xml; charset=utf-8"},
    )


def all_records(db: Path | str) -> list[CallbackRecord]:
    with Store(db) as store:
        total = store.callback_stats().total
        return store.list_callbacks(limit=max(total, 1), newest_first=False)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


# -- the run -----------------------------------------------------------------------------
@dataclass
class DurabilityResult:
    """Figures of one run; ``ok`` is the pass criterion (nothing lost, nothing stuck)."""

    sent: int = 0
    acknowledged: int = 0
    found: int = 0
    lost: int = 0
    kills: int = 0
    #: requests cut by a kill (connection reset / refused), never answered
    unanswered: int = 0
    #: of those, committed before the kill (WeCom's retry would be a content duplicate)
    unanswered_recorded: int = 0
    #: records a kill left ``received`` (distinct ids over all kills)
    left_received: int = 0
    resumed_on_restart: int = 0
    #: held by a dead worker's claim lease, then re-run with ``CallbackService.retry``
    rerun_after_lease: int = 0
    rerun_failed: int = 0
    #: run again by a restarted server (its sweep, once the dead worker's lease ran out)
    #: and failed: the killed worker had already exchanged the single-use AuthCode
    resumed_failed: int = 0
    #: permanent codes the fake WeCom issued that never reached the database: the
    #: AuthCode was spent by a worker killed before it stored the answer
    permanent_codes_lost: int = 0
    #: non-duplicate records not ``processed`` at the end, other than those above
    stuck: int = 0
    create_auth_acknowledged: int = 0
    corps_authorized: int = 0
    get_permanent_code_calls: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.stuck == 0

    def table(self) -> str:
        rows: list[tuple[str, object]] = [
            ("callbacks sent (incl. 1 priming suite_ticket)", self.sent),
            ("`kill -9` of `qywx serve`, each followed by a restart", self.kills),
            ("**acknowledged** (`200 success`)", self.acknowledged),
            ("**found** in the log (msg_signature + timestamp + nonce)", self.found),
            ("**lost**", self.lost),
            ("cut by a kill, never answered", self.unanswered),
            ("… of which committed before the kill", self.unanswered_recorded),
            ("records a kill left `received`", self.left_received),
            ("… resumed by the restarted server", self.resumed_on_restart),
            ("… held by the dead worker's lease, re-run by `retry`", self.rerun_after_lease),
            ("… re-run failed (AuthCode already spent)", self.rerun_failed),
            (
                "… resumed by the restarted server, failed (AuthCode already spent)",
                self.resumed_failed,
            ),
            ("permanent codes issued to a killed worker, never stored", self.permanent_codes_lost),
            ("records stuck unprocessed at the end", self.stuck),
            ("create_auth acknowledged", self.create_auth_acknowledged),
            ("… corps authorized in the database", self.corps_authorized),
            ("get_permanent_code calls (fake WeCom)", self.get_permanent_code_calls),
            ("wall time (s)", f"{self.seconds:.1f}"),
        ]
        lines = ["| figure | value |", "|---|---:|"]
        lines += [f"| {name} | {value} |" for name, value in rows]
        return "\n".join(lines)


class _Stream:
    """Client threads sending callbacks to whichever server is up, while kills happen."""

    def __init__(self, sender: Sender, count: int, types: list[str]) -> None:
        self.sender = sender
        self.count = count
        self.types = types
        self.url = ""
        self.up = threading.Event()
        self.lock = threading.Lock()
        self.next_index = 0
        self.acked: list[Callback] = []
        self.unanswered: list[Callback] = []
        self.refused: list[tuple[Callback, int, str]] = []

    def wait_for_index(self, index: int, timeout: float) -> bool:
        """Until ``index`` callbacks have been started (a kill point), or ``timeout``."""
        return wait_until(lambda: self.next_index >= index, timeout, 0.001)

    def take(self) -> int | None:
        with self.lock:
            if self.next_index >= self.count:
                return None
            self.next_index += 1
            return self.next_index - 1

    def client_loop(self) -> None:
        with http_client() as client:
            while (i := self.take()) is not None:
                if not self.up.wait(READY_TIMEOUT * 2):
                    return
                corp = f"wwdur{i:013d}" if self.types[i] == "create_auth" else None
                cb = self.sender.callback(self.types[i], corp)
                try:
                    r = post(client, self.url, cb)
                except httpx.HTTPError:
                    with self.lock:
                        self.unanswered.append(cb)
                    continue
                with self.lock:
                    if r.status_code == 200 and r.text == "success":
                        self.acked.append(cb)
                    else:
                        self.refused.append((cb, r.status_code, r.text[:200]))


def run_durability(
    count: int = 2000,
    kills: int = 3,
    *,
    clients: int = 8,
    seed: int | None = None,
    workdir: Path | None = None,
    threads: int = 8,
    workers: int = 2,
) -> DurabilityResult:
    """Send ``count`` callbacks through ``kills`` SIGKILLs; see the module docstring."""
    if count < 10 or kills < 0:
        raise ValueError("count must be at least 10 and kills not negative")
    rng = random.Random(seed)
    own_tmp = workdir is None
    root = Path(tempfile.mkdtemp(prefix="qywx-durability-")) if workdir is None else workdir
    result = DurabilityResult()
    started = time.monotonic()
    try:
        work = make_workdir(root)
        sender = Sender(find_instance(INSTANCE, work.auths, env={}))
        types = [rng.choice(("suite_ticket", "create_auth")) for _ in range(count)]
        kill_points = sorted(rng.sample(range(count // 10, count * 9 // 10), kills))
        stream = _Stream(sender, count, types)
        logs: list[str] = []
        left: set[int] = set()
        with fake_wecom(work) as fake:
            server = start(serve_args(threads, workers), work.env, work.root)
            try:
                _prime(sender, server.url, work.db, stream)
                stream.url = server.url
                stream.up.set()
                pool = [
                    threading.Thread(target=stream.client_loop, daemon=True) for _ in range(clients)
                ]
                for t in pool:
                    t.start()
                for point in kill_points:
                    stream.wait_for_index(point, REQUEST_TIMEOUT * 6)
                    stream.up.clear()
                    server.kill()
                    result.kills += 1
                    logs.append(server.log)
                    left |= {r.id for r in all_records(work.db) if r.status == "received"}
                    server = start(serve_args(threads, workers), work.env, work.root)
                    stream.url = server.url
                    stream.up.set()
                for t in pool:
                    t.join(REQUEST_TIMEOUT * 6)
                # Let the last server handle what it was given, then stop it gracefully.
                wait_until(lambda: _settled(work.db), READY_TIMEOUT * 2)
            finally:
                server.stop()
                logs.append(server.log)
            _count_requests(result, stream, work.db)
            _follow_left_received(result, work, left)
            _check_handling(result, stream, work, sender.instance.suite_id, fake.url)
        for text in logs:
            result.notes += [
                line.strip()
                for line in text.splitlines()
                if "Traceback" in line or "database is locked" in line
            ]
    finally:
        if own_tmp:
            shutil.rmtree(root, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result


def _prime(sender: Sender, url: str, db: Path, stream: _Stream) -> None:
    """One suite_ticket, handled, before the stream: create_auth needs a suite token."""
    cb = sender.callback("suite_ticket")
    with http_client() as client:
        r = post(client, url, cb)
    if (r.status_code, r.text) != (200, "success"):
        raise RuntimeError(f"priming suite_ticket refused: {r.status_code} {r.text}")
    stream.acked.append(cb)
    if not wait_until(lambda: any(x.status == "processed" for x in all_records(db)), READY_TIMEOUT):
        raise RuntimeError("the priming suite_ticket was never processed")


def _settled(db: Path) -> bool:
    """Nothing left that a live worker could still be about to handle."""
    return not any(r.status == "received" and r.claimed_by is None for r in all_records(db))


def _count_requests(result: DurabilityResult, stream: _Stream, db: Path) -> None:
    """Acknowledged vs found: the durability figure itself."""
    keys = {(r.msg_signature, r.timestamp, r.nonce) for r in all_records(db)}
    result.sent = len(stream.acked) + len(stream.unanswered) + len(stream.refused)
    result.acknowledged = len(stream.acked)
    result.found = sum(1 for cb in stream.acked if cb.key in keys)
    result.lost = result.acknowledged - result.found
    result.unanswered = len(stream.unanswered)
    result.unanswered_recorded = sum(1 for cb in stream.unanswered if cb.key in keys)
    result.notes += [f"refused: {status} {text}" for _, status, text in stream.refused]


def _follow_left_received(result: DurabilityResult, work: Workdir, left: set[int]) -> None:
    """Resumed on restart, or held by a dead worker's lease and re-run by ``retry``."""
    by_id = {r.id: r for r in all_records(work.db)}
    result.left_received = len(left)
    result.resumed_on_restart = sum(1 for i in left if by_id[i].status == "processed")
    for i in sorted(left):
        if by_id[i].status == "failed":
            result.resumed_failed += 1
            result.notes.append(
                f"resumed record {i} ({by_id[i].info_type}) failed: "
                f"{(by_id[i].last_error or '')[:80]}"
            )
    held = sorted(i for i in left if by_id[i].status == "received" and by_id[i].claimed_by)
    if not held:
        return
    # `qywx retry` once the lease has run out, without waiting DEFAULT_LEASE_SECONDS.
    shift = DEFAULT_LEASE_SECONDS + 1
    with CallbackService(
        work.settings(), now=lambda: time.time() + shift, background=False
    ) as service:
        for record_id in held:
            done = service.retry(record_id).record
            if done.status == "processed":
                result.rerun_after_lease += 1
            else:
                result.rerun_failed += 1
                result.notes.append(
                    f"re-run of record {record_id} ({done.info_type}): {done.status}: "
                    f"{(done.last_error or '')[:80]}"
                )


def _check_handling(
    result: DurabilityResult, stream: _Stream, work: Workdir, suite_id: str, fake_url: str
) -> None:
    """Every original handled; failures only where a killed worker spent the AuthCode."""
    with http_client() as client:
        state = client.get(f"{fake_url}/fake/state").json()
    issued = {p["corp_id"] for p in state["permanent_codes"] if p["suite_id"] == suite_id}
    result.get_permanent_code_calls = int(state["calls"].get("service/v2/get_permanent_code", 0))
    with Store(work.db) as store:
        stored = {a.corp_id for a in store.list_corp_auths(suite_id, state="active")}
    spent = issued - stored
    result.permanent_codes_lost = len(spent)
    acked_corps = {cb.corp_id for cb in stream.acked if cb.info_type == "create_auth"}
    result.create_auth_acknowledged = len(acked_corps)
    result.corps_authorized = len(acked_corps & stored)
    corp_of = {cb.content_key: cb.corp_id for cb in [*stream.acked, *stream.unanswered]}
    for r in all_records(work.db):
        if r.status in ("processed", "duplicate", "rejected"):
            continue
        explained = (
            r.status == "failed"
            and "40078" in (r.last_error or "")
            and corp_of.get(r.content_key or "") in spent
        )
        if not explained:
            result.stuck += 1
            result.notes.append(f"record {r.id} ({r.info_type}) left {r.status}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="callbacks to send")
    parser.add_argument("--kills", type=int, default=3, help="kill -9s during the stream")
    parser.add_argument("--clients", type=int, default=8, help="client threads")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill points")
    parser.add_argument("--keep", type=Path, default=None, help="work in DIR and keep it")
    args = parser.parse_args(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    result = run_durability(
        args.count, args.kills, clients=args.clients, seed=args.seed, workdir=args.keep
    )
    print(
        f"qywx durability: {args.count} callbacks, {args.kills} x kill -9, "
        f"{args.clients} clients, Python {sys.version.split()[0]}"
    )
    print(result.table())
    for line in result.notes[:20]:
        print("note:", line)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
