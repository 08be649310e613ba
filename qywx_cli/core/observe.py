"""The one seam through which metrics, structured logs and alerts watch qywx.

The pipeline calls an :class:`Observer` at four points and knows nothing of what
listens: the notify endpoint after each reply (:meth:`Observer.request`), a worker
after each handler (:meth:`Observer.handled`), the WeCom client after each API call
(:meth:`Observer.api_call`) and after each token it had to fetch
(:meth:`Observer.token_refresh`). ``qywx serve`` plugs in Prometheus counters
(:mod:`.metrics`), a JSON event log and the alert sender (:mod:`.alerts`).

The calls run on the request and worker threads, so an observer must be cheap
(count, enqueue; never a store query or a network call) and must not raise:
:class:`Observers` logs and swallows what one raises, so watching a callback can
never change its answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qywx_cli.core.service import NotifyResponse

__all__ = ["NOOP", "Handled", "Observer", "Observers"]

log = logging.getLogger("qywx.observe")


class Handled:
    """One finished handler run, as a worker reports it."""

    __slots__ = ("error", "event", "instance", "record_id", "seconds", "status")

    def __init__(
        self,
        record_id: int,
        instance: str,
        event: str | None,
        status: str,
        seconds: float,
        error: str | None = None,
    ) -> None:
        self.record_id = record_id
        self.instance = instance
        self.event = event
        self.status = status
        self.seconds = seconds
        self.error = error


class Observer:
    """Every hook is a no-op; a listener overrides the ones it needs."""

    def request(self, route: str, response: NotifyResponse, seconds: float) -> None:
        """After a reply is built: ``route`` is notify, healthz or not-found."""

    def handled(self, run: Handled) -> None:
        """After a worker (or a retry) ran a callback's handler."""

    def api_call(self, api: str, errcode: str) -> None:
        """After a WeCom API call: errcode "0", WeCom's number, or "transport"."""

    def token_refresh(self, kind: str) -> None:
        """After a token of ``kind`` (suite, corp, …) was fetched rather than cached."""


class Observers(Observer):
    """Several observers as one; a failing one is logged and never propagates."""

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self.observers = list(observers)

    def add(self, observer: Observer) -> None:
        self.observers.append(observer)

    def _each(self, hook: str, *args: object) -> None:
        for observer in self.observers:
            try:
                getattr(observer, hook)(*args)
            except Exception:  # an observer's bug must not reach a callback's reply
                log.exception("observer %s failed in %s", type(observer).__name__, hook)

    def request(self, route: str, response: NotifyResponse, seconds: float) -> None:
        self._each("request", route, response, seconds)

    def handled(self, run: Handled) -> None:
        self._each("handled", run)

    def api_call(self, api: str, errcode: str) -> None:
        self._each("api_call", api, errcode)

    def token_refresh(self, kind: str) -> None:
        self._each("token_refresh", kind)


NOOP = Observer()
"""What the pipeline calls when nothing watches."""
