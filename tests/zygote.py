"""A started interpreter that forks the ``qywx serve`` and ``qywx fake-wecom`` processes
of the end-to-end tests.

Each of those tests needs a real process: it is killed with SIGKILL, sent SIGTERM twice,
read on its stderr, restarted on the same database. What none of them tests is how
Python starts: a fresh ``python -m qywx_cli serve`` spent about 0.38 s of CPU importing
Typer, the command modules, the crypto bindings and granian before its first line of
qywx ran, on every one of about 140 starts per run, a third of the suite's CPU. Start-up
itself is measured where it matters: ``benchmarks/serve_startup_bench.py`` times it, the
console-script smoke set (``tests/cli/test_smoke.py``) and the import checks
(``tests/cli/test_read_imports.py``) run fresh interpreters.

So each xdist worker starts this module once (``python -m tests.zygote FD``). It imports
what a ``qywx serve`` start imports, then waits on a SOCK_SEQPACKET socket. A request is
one JSON message (argv, environment, working folder, umask) carrying four descriptors:
the child's stdin, stdout and stderr, and a socket on which this process writes the
child's pid and then, once it has reaped it, its exit status. The child is an ordinary
fork: its own pid and memory, the signals and descriptors it would have had from
``subprocess.Popen``, and an interpreter that ends the usual way (atexit handlers, threads
joined, streams flushed) once ``qywx_cli.cli.main`` returns or raises, except that it
does not tear its modules down (:func:`_end` says why).

A request whose environment would start Python differently (any ``PYTHON*``, ``LANG``,
``LC_*`` or Typer variable unlike this interpreter's) is not forked: :func:`spawn` starts
a process from nothing instead.

What a child keeps of the zygote, unlike a fresh interpreter: its hash seed (str hashes,
so the order of a set of strings, are alike in every child of one worker; the workers'
seeds differ), ``sys.stdout.seekable()`` as it was for /dev/null, ``__main__`` and
``/proc/<pid>/cmdline`` naming this module. qywx depends on none of these.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

REPO = Path(__file__).resolve().parents[1]

_PRELOAD = (
    "qywx_cli.cli",
    "qywx_cli.cli.server_cmds",
    "qywx_cli.cli.devtools_cmds",
    "qywx_cli.core.service",
    "qywx_cli.core.wsgi",
    "qywx_cli.core.instrument",
    "qywx_cli.core.store.sqlite",
    "qywx_cli.core.edge",
    "granian",
    "qywx_cli.core.wecom",
    "qywx_cli.core.fakewecom",
)
"""What ``qywx serve`` imports before it listens (granian only where it is installed),
and what the children import soon after: the WeCom client (httpx, httpcore) on the first
callback that calls WeCom, and ``qywx fake-wecom``'s server. Importing them once here
saves each child about 40 ms of CPU (measured on the end-to-end tests: 5 % of their CPU)."""

_MAX_MESSAGE = 1 << 20


def _startup_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables that decide how an interpreter starts (and those Typer reads when
    it is imported), not what qywx then does."""
    return {
        k: v
        for k, v in env.items()
        if k.startswith(("PYTHON", "LC_", "TYPER_", "_TYPER_"))
        or k in ("LANG", "LANGUAGE", "TERMINAL_WIDTH")
    }


# -- the test side ------------------------------------------------------------------------


def _umask() -> int:
    """This process's umask, read without setting it (setting and restoring it would
    give a thread creating a file in between the wrong mode)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise RuntimeError("no Umask in /proc/self/status")


class ForkedProcess:
    """The part of :class:`subprocess.Popen` the tests use, for a forked child."""

    def __init__(
        self, args: list[str], status: socket.socket, stdout: IO[str] | None, stderr: IO[str]
    ) -> None:
        self.args = args
        self.stdout: IO[str] | None = stdout
        self.stderr: IO[str] | None = stderr
        self.returncode: int | None = None
        self._status = status
        self._buffer = b""
        self._lock = threading.Lock()
        #: a pidfd the zygote opened before it could reap the child: a signal sent
        #: through it after the child has exited fails, and can never reach a process
        #: that has since been given the same pid
        self._pidfd: int | None = None
        self.pid = int(self._line(timeout=20))

    def _line(self, timeout: float | None) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._status.settimeout(left)
            try:
                chunk, fds, _, _ = socket.recv_fds(self._status, 64, 1)
            except (TimeoutError, BlockingIOError):
                raise subprocess.TimeoutExpired(self.args, timeout or 0) from None
            for fd in fds:
                self._pidfd = fd
            if not chunk:
                raise RuntimeError(f"the zygote went away while running {self.args}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def wait(self, timeout: float | None = None) -> int:
        with self._lock:
            if self.returncode is None:
                self.returncode = int(self._line(timeout))
                self._status.close()
                if self._pidfd is not None:
                    os.close(self._pidfd)
                    self._pidfd = None
            return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.wait(0)
            except subprocess.TimeoutExpired:
                return None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """As Popen does: nothing once the exit status is known, and no error if the
        child has only just exited."""
        with self._lock:
            if self.returncode is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                if self._pidfd is not None:
                    signal.pidfd_send_signal(self._pidfd, sig)
                else:  # a kernel without pidfds
                    os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Zygote:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.zygote", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        self.lock = threading.Lock()
        atexit.register(self.close)

    def close(self) -> None:
        """End the zygote and wait for it, so that its CPU time (and its children's)
        counts in this process's, as a subprocess's would."""
        self.control.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def spawn(
        self, args: list[str], env: Mapping[str, str], cwd: Path, umask: int, stdout: bool
    ) -> ForkedProcess:
        request = json.dumps({"args": args, "env": dict(env), "cwd": str(cwd), "umask": umask})
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        stdin = os.open(os.devnull, os.O_RDONLY)
        out_r, out_w = os.pipe() if stdout else (-1, os.open(os.devnull, os.O_WRONLY))
        err_r, err_w = os.pipe()
        try:
            with self.lock:
                socket.send_fds(
                    self.control, [request.encode()], [theirs.fileno(), stdin, out_w, err_w]
                )
        finally:
            for fd in (theirs.fileno(), stdin, out_w, err_w):
                os.close(fd)
            theirs.detach()
        return ForkedProcess(
            args,
            ours,
            # text pipes, as Popen(text=True) gives
            open(out_r, encoding="utf-8") if stdout else None,
            open(err_r, encoding="utf-8", errors="replace"),
        )


_ZYGOTE: _Zygote | None = None
_START = threading.Lock()


def spawn(
    args: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    *,
    umask: int = -1,
    stdout: bool = True,
) -> ForkedProcess | subprocess.Popen[str]:
    """``python -m qywx_cli ARGS`` in ``cwd`` with exactly ``env``: stdin from /dev/null,
    stderr a text pipe, stdout one too (or /dev/null when ``stdout`` is False), and this
    process's umask unless ``umask`` (>= 0) says otherwise, as ``Popen(umask=...)``.
    Forked from this worker's zygote when ``env`` starts Python as the zygote was
    started; a fresh process otherwise."""
    global _ZYGOTE
    from tests.helpers import QYWX, qywx_env

    wanted = _startup_env(env)
    with _START:
        if _ZYGOTE is not None and _ZYGOTE.process.poll() is not None:
            _ZYGOTE.control.close()  # it died: a new one is started below
            _ZYGOTE = None
        if _ZYGOTE is None:
            base = qywx_env()
            if wanted == _startup_env(base):
                _ZYGOTE = _Zygote(base)
        zygote = _ZYGOTE
    # Compared with the environment the zygote itself was started with: a variable a
    # test has set in this process since then is not in the zygote's interpreter.
    if zygote is not None and wanted == _startup_env(zygote.env):
        return zygote.spawn(list(args), env, cwd, _umask() if umask < 0 else umask, stdout)
    return subprocess.Popen(
        [*QYWX, *args],
        env=dict(env),
        cwd=cwd,
        umask=umask,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )


# -- the zygote ---------------------------------------------------------------------------


def _serve(control: socket.socket) -> dict[str, Any] | None:
    """Fork a child per request; in the child, return its request (None: the tests ended)."""
    children: dict[int, socket.socket] = {}
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is wake_r:
                os.read(wake_r, 4096)
                _reap(children)
                continue
            message, fds, _, _ = socket.recv_fds(control, _MAX_MESSAGE, 4)
            if not message:  # the worker has ended: no test will stop what is left
                signal.set_wakeup_fd(-1)
                for pid in list(children):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                return None
            status = socket.socket(fileno=fds[0])
            if threading.active_count() != 1:
                raise RuntimeError("the zygote started a thread; it cannot fork safely")
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                selector.close()
                for fd in (wake_r, wake_w):
                    os.close(fd)
                control.close()
                status.close()
                for other in children.values():
                    other.close()
                for target, fd in enumerate(fds[1:]):
                    os.dup2(fd, target)
                    os.close(fd)
                request: dict[str, Any] = json.loads(message)
                return request
            for fd in fds[1:]:
                os.close(fd)
            children[pid] = status
            # Opened before this loop can reap the child, so it always names this one.
            pidfd = _pidfd(pid)
            try:
                socket.send_fds(status, [f"{pid}\n".encode()], [] if pidfd is None else [pidfd])
            except OSError:  # the test stopped waiting: nobody would ever stop the child
                os.kill(pid, signal.SIGKILL)
            finally:
                if pidfd is not None:
                    os.close(pidfd)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # Linux before 5.3
        return None


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        channel = children.pop(pid, None)
        if channel is not None:
            with contextlib.suppress(OSError):  # the test gave up on it
                channel.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
            channel.close()


def _become(request: dict[str, Any]) -> None:
    """Turn this forked child into ``python -m qywx_cli ARGS`` as a Popen would start it."""
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    sys.argv = [str(REPO / "qywx_cli" / "__main__.py"), *request["args"]]
    sys.path[0] = os.getcwd()  # where ``python -m`` puts the working folder
    from qywx_cli.cli import main

    interrupted = False
    try:
        main()
        status = 0
    except SystemExit as exc:  # as the interpreter reports it
        if exc.code is None or isinstance(exc.code, int):
            status = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            status = 1
    except BaseException as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
        interrupted, status = isinstance(exc, KeyboardInterrupt), 1
    _end(status, interrupted)


def _end(status: int, interrupted: bool) -> NoReturn:
    """End the child as an interpreter ends, up to the point where it would tear down
    its modules: non-daemon threads joined, atexit handlers run, stdout and stderr
    flushed; then ``os._exit``, as multiprocessing's forked children end.

    The teardown is what is skipped. Freeing every module and object the child shares
    with the zygote writes to each page of that heap, and the kernel copies each page
    written: a child's exit cost 150 ms of CPU, against 70 ms for a fresh interpreter's.
    Nothing qywx does at exit depends on it: the store and the servers close what they
    opened before ``main`` returns, and logging flushes from its atexit handler.
    """
    threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx calls first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if interrupted:  # an uncaught Ctrl-C ends the process by SIGINT, as Python's does
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(status)


def _main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    import importlib

    for name in _PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            if name != "granian":
                raise
    # The per-process TLS contexts (qywx_cli.core.tls), 55 ms of CPU each, made once here
    # instead of in every child. A child whose SSL_CERT_FILE / SSL_CERT_DIR differ from
    # the zygote's still makes its own: the cache is keyed by them.
    from qywx_cli.core.tls import client_ssl_context

    client_ssl_context()
    client_ssl_context(trust_env=False)
    # Likewise the statements a new SQLite database is made with: the store reads them
    # back from the first new file a process migrates (6 ms), and most children are a
    # `qywx serve` on a database that does not exist yet.
    import shutil
    import tempfile

    from qywx_cli.core.store.sqlite import SQLiteStore

    first = tempfile.mkdtemp(prefix="qywx-zygote-", dir=os.environ.get("PYTEST_DEBUG_TEMPROOT"))
    try:
        SQLiteStore(Path(first) / "first.db").close()
    finally:
        shutil.rmtree(first, ignore_errors=True)
    request = _serve(control)
    if request is not None:
        _become(request)


if __name__ == "__main__":
    _main()
