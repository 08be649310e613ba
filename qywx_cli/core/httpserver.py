"""waitress as ``qywx serve --server waitress`` runs it, with limits for the internet.

``qywx serve`` is reached by WeCom and by anyone else on the internet. waitress reads
every request completely in its event loop before a worker thread sees it, so a slow
client costs a socket, not a thread; what it lacks out of the box is a bound on *how
long* a client may take to send one request (its ``channel_timeout`` is an inactivity
timeout, which a client sending one header line every few seconds never trips), and a
connection limit sized for that (its default of 100 lets 100 idle sockets lock WeCom
out). So:

* ``connection_limit`` (default 4,096) open sockets, with the process's descriptor
  limit raised to fit (the event loop uses ``poll``, not ``select``'s 1,024 cap);
* ``header_timeout`` (default 10 s) from a request's first byte to the end of its
  headers, and ``body_timeout`` (default 30 s) from there to the end of its body: a
  request slower than that is dropped, so slow-loris sockets give their slots back;
* ``channel_timeout`` (default 30 s) for an idle keep-alive connection.

A signed WeCom callback is a few KiB sent at once, so none of these ever bites WeCom.
waitress's own error pages (a malformed request line, a body over the cap) become the
same one-line texts the notify endpoint answers with. benchmarks/README.md ("The HTTP
server") compares this set-up with granian and gunicorn on the same machine; granian,
the default edge, is :mod:`.edge`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import time
from typing import Any, Final

from qywx_cli.core.errors import ServerError, UsageError
from qywx_cli.core.limits import DEFAULT_LIMITS, ServerLimits

__all__ = [
    "DEFAULT_LIMITS",
    "ServerLimits",
    "check_server_args",
    "create_server",
    "fit_descriptors",
    "listen_error",
]

log = logging.getLogger("qywx.http")

_FD_HEADROOM: Final = 64
"""Descriptors kept free beside the connections: the database, WAL, logs, API calls."""


def fit_descriptors(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE toward ``wanted`` + headroom; the connections that fit."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + _FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft >= need:
        return wanted
    fits = max(1, soft - _FD_HEADROOM)
    log.warning(
        "connection limit lowered from %d to %d: the open-file limit is %d (raise `ulimit -n`)",
        wanted,
        fits,
        soft,
    )
    return fits


def _one_line_error_task() -> type:
    from waitress.task import ErrorTask

    class OneLineErrorTask(ErrorTask):  # type: ignore[misc]
        """waitress's error page, as one short line of text like the endpoint's own."""

        def execute(self) -> None:
            error = self.request.error
            detail = " ".join(str(error.body).split())[:200]
            body = f"{error.reason.lower()}: {detail}".encode()
            self.status = f"{error.code} {error.reason}"
            self.response_headers.extend(
                [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]
            )
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    return OneLineErrorTask


def _channel_class(limits: ServerLimits) -> type:
    """waitress's channel, stamping when the request being read began and its headers ended."""
    from waitress.channel import HTTPChannel

    error_task = _one_line_error_task()

    class TimedChannel(HTTPChannel):  # type: ignore[misc]
        error_task_class = error_task
        _partial: Any = None
        _partial_since = 0.0
        _headers_at = 0.0

        def received(self, data: bytes) -> bool:
            result = bool(super().received(data))
            request = self.request
            now = time.monotonic()
            if request is not self._partial:
                self._partial, self._partial_since, self._headers_at = request, now, 0.0
            if request is not None and request.headers_finished and not self._headers_at:
                self._headers_at = now
            return result

        def overdue(self, now: float) -> bool:
            """A request still being read after its header or body time is up."""
            if self.requests or self.request is None or self.request is not self._partial:
                return False
            if not self._headers_at:
                return now - self._partial_since > limits.header_timeout
            return now - self._headers_at > limits.body_timeout

    return TimedChannel


def check_server_args(limits: ServerLimits, threads: int, port: int) -> None:
    """What either HTTP server (waitress here, granian in :mod:`.edge`) refuses to
    start with: UsageError, one line."""
    limits.check()
    if threads < 1 or threads > 256:
        raise UsageError("--threads must be between 1 and 256")
    if not 0 <= port <= 65535:  # the socket layer would silently take it modulo 65536
        raise UsageError(f"--port must be between 0 and 65535, not {port}")


def listen_error(host: str, port: int, exc: OSError) -> ServerError:
    """The one line for an address that cannot be listened on (a port in use, say)."""
    why = exc.strerror or str(exc)
    hint = "; stop what holds it or pick another --port" if exc.errno == errno.EADDRINUSE else ""
    return ServerError(f"cannot listen on {host}:{port}: {why}{hint}")


def create_server(
    app: Any,
    *,
    host: str,
    port: int,
    threads: int,
    max_body: int,
    limits: ServerLimits = DEFAULT_LIMITS,
    ident: str = "qywx",
) -> Any:
    """A waitress server for ``app`` with ``limits``; bodies over ``max_body`` get 413.

    Raises UsageError for a bad port, thread count or address, ServerError when the
    address cannot be listened on (one line, no traceback).
    """
    from waitress.server import create_server as waitress_server

    check_server_args(limits, threads, port)
    connection_limit = fit_descriptors(limits.connection_limit)
    shortest = min(limits.channel_timeout, limits.header_timeout, limits.body_timeout)
    try:
        server = waitress_server(
            app,
            host=host,
            port=port,
            threads=threads,
            # waitress refuses a body of max_request_body_size bytes or more; the
            # contract is "more than max_body", so exactly max_body is accepted.
            max_request_body_size=max_body + 1,
            connection_limit=connection_limit,
            channel_timeout=limits.channel_timeout,
            cleanup_interval=max(0.5, min(shortest / 4, 5.0)),
            asyncore_use_poll=True,
            backlog=1024,
            ident=ident,
            clear_untrusted_proxy_headers=True,
        )
    except OSError as exc:  # a port in use is the deployment's problem, not a usage error
        raise listen_error(host, port, exc) from None
    except ValueError:  # waitress: a --host that is not an address: the command line is wrong
        raise UsageError(f"cannot listen on {host}:{port}: not a valid host") from None
    server.channel_class = _channel_class(limits)
    idle_maintenance = server.maintenance

    def maintenance(now: float) -> None:
        idle_maintenance(now)  # idle keep-alive connections, as waitress does
        tick = time.monotonic()
        for channel in list(server.active_channels.values()):
            overdue = getattr(channel, "overdue", None)
            if overdue is not None and overdue(tick):
                channel.will_close = True

    server.maintenance = maintenance
    return server
