"""The HTTP edge on granian: callbacks answered from one event loop, written in batches.

Under waitress every request crosses threads twice: its event loop hands the request
to a worker thread, and that thread queues its record for the group commit and sleeps
until the commit is done. With 32 threads contending for the GIL those hand-offs cost
more CPU than the callback itself (benchmarks/README.md, "The HTTP edge, again").

Here granian (Rust: hyper and tokio) reads the requests and runs :class:`EdgeApp` on
one asyncio loop in this process. On SQLite, the loop verifies, decrypts and parses
each ``/notify`` request (:meth:`NotifyApp.steps`, the same steps ``qywx serve`` on
waitress drives) and awaits only its record: one :class:`RecordWriter` thread takes
every record waiting, writes them with ``Store.record_callbacks`` (one transaction,
one fsync) and wakes the loop once for the lot. A reply is still sent only after its
record is committed. On PostgreSQL each ``/notify`` request runs on the thread pool
instead, as under waitress: its reads are network round trips the loop must not wait
for, and the server groups concurrent commits by itself. Every other route
(``/healthz``, ``/metrics``, anything unknown) is the WSGI app of waitress's set-up,
run on the pool, so the two edges answer them alike.

Limits of an internet-facing endpoint, as :mod:`.httpserver` keeps them on waitress:
``header_timeout`` is granian's header read timeout; ``body_timeout`` bounds the read
of a body; a body over ``max_body`` (declared or sent) gets 413 before more of it is
read; ``connection_limit`` bounds the requests in flight (granian's backpressure) and
the descriptors are raised to fit. tokio holds an idle socket for a few hundred bytes,
so idle sockets lock no one out.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

from qywx_cli.core.errors import QywxError, ServerError, StoreError, UsageError
from qywx_cli.core.limits import DEFAULT_LIMITS, ServerLimits

if TYPE_CHECKING:
    from qywx_cli.core.service import NotifyResponse, NotifySteps, RecordRequest
    from qywx_cli.core.store import CallbackRecord, Store
    from qywx_cli.core.wsgi import NotifyApp

__all__ = ["EdgeApp", "RecordWriter", "available", "serve_granian"]

log = logging.getLogger("qywx.http")

MAX_BATCH: Final = 256
"""Records per transaction at most: a backlog is written in bounded commits."""


def available() -> bool:
    """Whether granian is installed (``pip install 'qywx-cli[granian]'``)."""
    try:
        import granian  # noqa: F401
    except ImportError:
        return False
    return True


class RecordWriter:
    """The thread that writes the records the loop's requests await, as many at once as
    wait: SQLite has one writer, so taking up to :data:`MAX_BATCH` records at a time
    makes every batch one commit (one fsync)."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._loop = loop
        self._pending: list[tuple[RecordRequest, asyncio.Future[CallbackRecord]]] = []
        self._wake = threading.Condition()
        self._idle = False  # the thread is waiting for work
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="qywx-writer", daemon=True)
        self._thread.start()

    def record(self, request: RecordRequest) -> asyncio.Future[CallbackRecord]:
        """Queue one ``record_callback`` request (in the loop); its record when committed."""
        future: asyncio.Future[CallbackRecord] = self._loop.create_future()
        with self._wake:
            if self._closing:
                raise StoreError("the server is stopping")
            self._pending.append((request, future))
            if self._idle:
                self._wake.notify()
        return future

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._closing:
                    self._idle = True
                    self._wake.wait()
                    self._idle = False
                if not self._pending:
                    return
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            results: list[Any]
            try:
                results = self._store.record_callbacks([request for request, _ in batch])
            except QywxError as exc:
                results = [exc] * len(batch)
            except Exception as exc:  # never leave a request waiting forever
                log.exception("writing %d callback record(s) failed", len(batch))
                results = [StoreError(f"database error: {type(exc).__name__}")] * len(batch)
            try:
                self._loop.call_soon_threadsafe(_settle, batch, results)
            except RuntimeError:  # the loop is closed: nobody waits any more
                return


def _settle(batch: list[tuple[Any, asyncio.Future[Any]]], results: list[Any]) -> None:
    for (_, future), result in zip(batch, results, strict=True):
        if future.done():
            continue
        if isinstance(result, StoreError):  # a fresh exception for each request's steps
            future.set_exception(StoreError(result.message))
        elif isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


class EdgeApp:
    """The RSGI application granian runs: ``/notify`` in the loop, the rest on threads."""

    def __init__(
        self,
        notify: NotifyApp,
        wsgi: Callable[[dict[str, Any], Any], Iterable[bytes]],
        writer: RecordWriter | None,
        *,
        max_body: int,
        limits: ServerLimits,
        pool: ThreadPoolExecutor,
    ) -> None:
        self._notify = notify
        self._wsgi = wsgi
        self._writer = writer
        self._max_body = max_body
        self._limits = limits
        self._pool = pool
        # Bodies being read, and when each is overdue: one sweep cancels the late ones
        # (a timer per request, as asyncio.wait_for sets, cost 8 % of the loop's CPU).
        self._reading: dict[asyncio.Task[Any], float] = {}
        self._overdue: set[asyncio.Task[Any]] = set()

    async def sweep(self) -> None:
        """Cancel body reads past ``body_timeout``, checking a few times per timeout."""
        every = min(1.0, self._limits.body_timeout / 4)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every)
            now = loop.time()
            for task, deadline in list(self._reading.items()):
                if now > deadline and task not in self._overdue:
                    self._overdue.add(task)
                    task.cancel()

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":  # no websockets here
            return
        try:
            body = await self._body(scope, proto)
        except _Refused as refused:
            proto.response_bytes(*refused.answer)
            return
        path = scope.path
        loop = asyncio.get_running_loop()
        if path == "/notify" or path.startswith("/notify/"):
            steps = self._notify.steps(_environ(scope, body))
            if self._writer is not None:
                response = await self._drive(steps)
            else:  # reads are network round trips: not in the loop (see serve_granian)
                from qywx_cli.core.service import drive

                record = self._notify.service.store.record_callback
                response = await loop.run_in_executor(self._pool, drive, steps, record)
            proto.response_bytes(response.status, response.headers, _payload(scope, response))
            return
        status, headers, payload = await loop.run_in_executor(
            self._pool, _call_wsgi, self._wsgi, _environ(scope, body, full=True)
        )
        proto.response_bytes(status, headers, payload)

    def __rsgi_init__(self, loop: Any) -> None:  # granian's hooks; nothing to set up
        pass

    def __rsgi_del__(self, loop: Any) -> None:
        pass

    async def _drive(self, steps: NotifySteps) -> NotifyResponse:
        """:func:`~.service.drive`, awaiting each record instead of blocking on it."""
        assert self._writer is not None
        try:
            request = next(steps)
            while True:
                try:
                    written = await self._writer.record(request)
                except Exception as exc:
                    request = steps.throw(exc)
                else:
                    request = steps.send(written)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def _body(self, scope: Any, proto: Any) -> bytes:
        """The request body, at most ``max_body`` bytes, read within ``body_timeout``."""
        if scope.method in ("GET", "HEAD"):
            return b""
        coding = scope.headers.get("transfer-encoding")
        if coding is not None:
            codings = [c.strip().lower() for c in coding.split(",")]
            if codings.count("chunked") > 1 or "chunked" in codings[:-1]:
                raise _Refused(400, "Transfer-Encoding must apply chunked once, last")
            if codings != ["chunked"]:
                # hyper would hand the body over still gzip'ed (or whatever was named);
                # RFC 9112 §6.1: 501 for a transfer coding the server does not implement.
                raise _Refused(501, f"transfer coding {coding.strip()[:40]!r} is not implemented")
        declared = scope.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise _Refused(400, "Content-Length is not a number")
            if int(declared) > self._max_body:
                raise _Refused(413, f"request body larger than {self._max_body} bytes")
        task = asyncio.current_task()
        assert task is not None
        self._reading[task] = asyncio.get_running_loop().time() + self._limits.body_timeout
        try:
            return bytes(await proto()) if declared is not None else await self._chunks(proto)
        except asyncio.CancelledError:
            if task not in self._overdue:
                raise
            self._overdue.discard(task)
            if hasattr(task, "uncancel"):  # Python 3.11+: the cancel was ours, and is spent
                task.uncancel()
            raise _Refused(
                408, f"request body not received within {self._limits.body_timeout:g} s"
            ) from None
        finally:
            del self._reading[task]

    async def _chunks(self, proto: Any) -> bytes:
        data = bytearray()
        async for chunk in proto:
            data += chunk
            if len(data) > self._max_body:
                raise _Refused(413, f"request body larger than {self._max_body} bytes")
        return bytes(data)


class _Refused(Exception):
    """A request refused at the edge: a one-line answer, and the connection closed."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        body = text.encode()
        self.answer = (
            status,
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
                ("Connection", "close"),
            ],
            body,
        )


def _payload(scope: Any, response: NotifyResponse) -> bytes:
    return b"" if scope.method == "HEAD" else response.body


def _environ(scope: Any, body: bytes, *, full: bool = False) -> dict[str, Any]:
    """The WSGI environ of a request: what NotifyApp reads, or (``full``) all of it."""
    client = scope.client or ""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope.method,
        "PATH_INFO": scope.path,
        "QUERY_STRING": scope.query_string,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "REMOTE_ADDR": client.rpartition(":")[0] or client,
    }
    if full:
        for name, value in scope.headers.items():
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_LENGTH", "CONTENT_TYPE"):
                key = "HTTP_" + key
            environ[key] = value
        server = scope.server or ":"
        host, _, port = server.rpartition(":")
        environ.update(
            {
                "SCRIPT_NAME": "",
                "SERVER_NAME": host,
                "SERVER_PORT": port,
                "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
                "wsgi.version": (1, 0),
                "wsgi.url_scheme": scope.scheme,
                "wsgi.errors": io.StringIO(),
                "wsgi.multithread": True,
                "wsgi.multiprocess": False,
                "wsgi.run_once": False,
            }
        )
    return environ


def _call_wsgi(
    app: Callable[[dict[str, Any], Any], Iterable[bytes]], environ: dict[str, Any]
) -> tuple[int, list[tuple[str, str]], bytes]:
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        answer["status"], answer["headers"] = int(status[:3]), headers

    chunks = app(environ, start_response)
    try:
        payload = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return answer["status"], list(answer["headers"]), payload


def _listen_address(host: str, port: int) -> str:
    """The numeric address to bind for ``--host``: granian takes only an IP address, so
    a name (``localhost``) is resolved and ``[::1]`` unbracketed, as waitress does."""
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        found = socket.getaddrinfo(
            name or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except (OSError, UnicodeError):
        raise UsageError(f"cannot listen on {host}:{port}: not a valid host") from None
    return str(found[0][4][0])


def _free_port(host: str, port: int) -> int:
    """Check that ``host:port`` can be listened on; the port, or a free one for 0."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            return int(probe.getsockname()[1])
    except OSError as exc:
        from qywx_cli.core.httpserver import listen_error

        raise listen_error(host, port, exc) from None


def _raise_stopped(serving: asyncio.Future[Any], host: str, port: int) -> None:
    """One line for a granian that stopped by itself: its error's first line (granian's
    messages may carry a Rust backtrace), never a traceback."""
    try:
        serving.result()
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        why = (lines[0] if lines else type(exc).__name__)[:200]
        raise ServerError(f"cannot listen on {host}:{port}: {why}") from None
    raise ServerError(f"cannot listen on {host}:{port}: the HTTP server stopped")


async def _accepting(
    serving: asyncio.Future[Any], host: str, port: int, stopping: Callable[[], bool]
) -> bool:
    """True once ``host:port`` accepts connections, so the banner never runs ahead of
    the socket (granian's worker binds it after ``serve()`` starts, and says nothing);
    False when the server stopped because ``stopping()`` (a signal during start-up)."""
    probe = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    for _ in range(1000):  # 10 s at most
        if serving.done():
            if stopping():
                return False  # asked to stop before it was up: no error of its own
            _raise_stopped(serving, host, port)
        try:
            _, writer = await asyncio.open_connection(probe, port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        writer.close()
        return True
    raise ServerError(f"cannot listen on {host}:{port}: not accepting after 10 s")


class _Signals:
    """SIGINT and SIGTERM while :func:`serve_granian` runs, its drain included: the first
    asks the server to stop, and any later one is ignored, as on waitress. A second
    Ctrl-C or SIGTERM so never cuts short the handling of an acknowledged callback
    (with the loop's own handlers gone, SIGTERM's default action killed the process).

    Python-level handlers, not ``loop.add_signal_handler``: the loop removes those, back
    to the defaults, when it closes, and the workers are drained after that.
    """

    def __init__(self) -> None:
        self.requested = False
        self._saved: dict[int, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: Callable[[], None] | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers; the embedding app owns them
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._saved[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        while self._saved:
            signum, handler = self._saved.popitem()
            signal.signal(signum, handler)

    def attach(self, loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
        """Stop the server on the first signal (or now, if it already came)."""
        self._loop, self._stop = loop, stop
        if self.requested:
            loop.call_soon(stop)

    def detach(self) -> None:
        self._loop = self._stop = None

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            return  # a second signal during shutdown is ignored
        self.requested = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                loop.call_soon_threadsafe(stop)


def _run_loop(main: Any) -> None:
    """Run ``main`` on uvloop when it is installed (it is, with qywx, on Linux and macOS):
    its loop schedules and wakes in C, 8 % less CPU per callback than asyncio's own in
    benchmarks/README.md; else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def serve_granian(
    notify: NotifyApp,
    wsgi: Callable[[dict[str, Any], Any], Iterable[bytes]],
    *,
    host: str,
    port: int,
    threads: int,
    banner: Callable[[str], None],
    on_closing: Callable[[], None] = lambda: None,
    on_stop: Callable[[], None] = lambda: None,
    max_body: int,
    limits: ServerLimits = DEFAULT_LIMITS,
) -> None:
    """Serve until SIGINT/SIGTERM; then stop accepting, finish what is in flight, write
    every queued record, and run ``on_stop`` (always, even if serving failed to start),
    with further signals ignored until it returns."""
    signals = _Signals()
    signals.install()
    try:
        from granian.constants import HTTPModes, Interfaces
        from granian.http import HTTP1Settings
        from granian.server.embed import Server

        from qywx_cli.core.httpserver import check_server_args, fit_descriptors

        check_server_args(limits, threads, port)
        host = _listen_address(host, port)
        port = _free_port(host, port)
        connections = fit_descriptors(limits.connection_limit)
        store = notify.service.store
        # SQLite: the loop answers /notify and one writer commits the batches; its reads (a
        # corp's auth for a data callback) are on a connection of their own, local and
        # short. Other backends: each /notify request on the pool, as under waitress: their
        # reads are network round trips the loop must not wait for, and PostgreSQL groups
        # concurrent commits into one WAL flush by itself.
        in_loop = store.backend == "sqlite"

        async def main() -> None:
            loop = asyncio.get_running_loop()
            writer = RecordWriter(store, loop) if in_loop else None
            pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="qywx-http")
            app = EdgeApp(notify, wsgi, writer, max_body=max_body, limits=limits, pool=pool)
            server = Server(
                app,
                address=host,
                port=port,
                interface=Interfaces.RSGI,
                http=HTTPModes.http1,
                websockets=False,
                backlog=1024,
                backpressure=connections,
                http1_settings=HTTP1Settings(
                    header_read_timeout=int(limits.header_timeout * 1000), keep_alive=True
                ),
                log_enabled=False,
            )

            sweeper = asyncio.ensure_future(app.sweep())

            stopped = False

            def stop() -> None:
                nonlocal stopped
                if not stopped:
                    stopped = True
                    on_closing()
                    server.stop()  # type: ignore[no-untyped-call]

            signals.attach(loop, stop)
            serving = asyncio.ensure_future(server.serve())
            try:
                if await _accepting(serving, host, port, lambda: stopped):
                    banner(f"http://{host}:{port}")
                try:
                    await serving
                except Exception:
                    if not stopped:
                        _raise_stopped(serving, host, port)
            finally:
                signals.detach()
                sweeper.cancel()
                if writer is not None:
                    await loop.run_in_executor(None, writer.close)
                pool.shutdown(wait=True)

        logging.getLogger("_granian").setLevel(logging.WARNING)
        logging.getLogger("granian").setLevel(logging.ERROR)
        _run_loop(main())
    finally:
        try:
            on_stop()
        finally:
            signals.restore()
