"""Real processes on loopback: ``qywx serve`` and ``qywx fake-wecom`` as users run them."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from benchmarks.durability import Child
from qywx_cli.core.sealing import Keyring
from qywx_cli.core.store import Store
from tests.helpers import LoopbackWeCom, http_client, loopback_fake, qywx_env
from tests.zygote import spawn

_T = TypeVar("_T")

_URL_RE = re.compile(r"(?:listening on|fake WeCom API on) (http://[0-9.]+:\d+)")


class Proc:
    """A qywx process whose stderr is collected; ``url`` is where it listens. It is forked
    from this worker's already started interpreter (:mod:`tests.zygote`)."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.args = args
        self.popen = spawn(args, env, cwd)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.url = ""
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._ready.wait(20):
            self.stop()
            raise RuntimeError(f"qywx {args[0]} did not start:\n{self.log}")

    def _pump(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line)
            m = _URL_RE.search(line)
            if m and not self.url:
                self.url = m.group(1)
                self._ready.set()
        self._ready.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()


@pytest.fixture
def forked_benchmark_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``benchmarks/`` harnesses (durability, concurrency) start their ``qywx serve``
    and ``qywx fake-wecom`` processes as :class:`Proc` does, forked from the zygote."""
    import benchmarks.durability

    def launch(args: list[str], env: dict[str, str], cwd: Path, umask: int) -> Child:
        # The harness passes this process's environment on; bytecode writing stays on,
        # as in every qywx process the tests start (tests.helpers.qywx_env).
        env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        return spawn(args, env, cwd, umask=umask, stdout=False)

    monkeypatch.setattr(benchmarks.durability, "LAUNCH", launch)


@pytest.fixture
def env(auths: Path, tmp_path: Path) -> dict[str, str]:
    """The environment of the processes: the ``auths`` copy and a database in tmp_path."""
    return qywx_env(QYWX_AUTHS=str(auths), QYWX_DB=str(tmp_path / "qywx.db"))


@pytest.fixture
def fake_wecom(env: dict[str, str]) -> Iterator[LoopbackWeCom]:
    """The WeCom ``qywx serve`` talks to: a FakeWeCom served from the test process
    (tests of the ``qywx fake-wecom`` command start that process themselves)."""
    with loopback_fake() as fake:
        env["QYWX_API_BASE"] = fake.api_base
        yield fake


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path, fake_wecom: object) -> Iterator[Proc]:
    proc = Proc(["serve", "--port", "0", "--threads", "4"], env, tmp_path)
    yield proc
    proc.stop()


SHORT_LEASE_SECONDS = 4.0
"""The claim lease of the tests that wait for another host's claims to lapse: the
default 10 s made each of them wait 10-13 s. Renewed every 1.2 s by a live host."""
LONG_LEASE_SECONDS = 600.0
"""The claim lease of the tests where a process on this machine is killed: its claims
are taken back because it has ended, never because 10 minutes passed, so a take-over
within the test proves the process check did it. Swept every 3 s all the same."""


def short_lease(root: Path, seconds: float = SHORT_LEASE_SECONDS) -> None:
    """Write ``root/qywx.toml`` with a claim lease of ``seconds``, for processes that run
    in ``root`` (qywx reads qywx.toml from its working folder)."""
    (root / "qywx.toml").write_text(f"lease_seconds = {seconds}\n", encoding="utf-8")


TOOK_BACK = "took back 1 claim(s) of ended process(es)"
"""What a server logs when it frees the claim of a process that ended on its machine."""


def wait_for(predicate: Callable[[], _T], timeout: float = 10.0, interval: float = 0.05) -> _T:
    """Poll until ``predicate()`` is truthy (background handling is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def stored_permanent_code(db: str, corp: str, keys: Keyring | None = None) -> str | None:
    """The permanent code the database holds for ``corp``, read as a second host would
    (None until its installation is stored); poll it with :func:`wait_for`."""
    with Store(db, keys=keys) as store:
        auth = store.get_corp_auth(corp)
        return auth.permanent_code if auth is not None else None


def http() -> httpx.Client:
    return http_client()
