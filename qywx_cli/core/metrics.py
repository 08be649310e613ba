"""Prometheus metrics for ``qywx serve`` (``pip install 'qywx-cli[metrics]'``).

Two kinds of figure, kept apart on purpose:

* **This process's own**, counted as they happen on the request and worker threads
  (a counter increment or a histogram observation, nothing more, so the hot path
  stays cheap): callbacks by instance, kind, event and outcome; reply and handler
  latency; WeCom API calls by API and errcode; token refreshes; the worker queue.
  Prometheus sums them across processes.
* **The store's**, read from the store at scrape time by :class:`StoreCollector`:
  records pending and failed, and the age of each active suite's latest
  suite_ticket. Every process sharing a store reports the same numbers, so several
  processes or hosts agree, and a process that restarts loses nothing.

The suite_ticket age is the signal that callbacks stopped arriving: WeCom pushes a
ticket every 10 minutes (wecom-protocol.md §3.1), so an age past 30 minutes means
WeCom cannot reach the endpoint. A suite with no ticket yet reports ``+Inf``.

Exposure is the operator's choice, and off by default: ``--metrics-port`` serves
``/metrics`` on a separate listener bound to 127.0.0.1, and ``--metrics-token``
serves it on the public port only to ``Authorization: Bearer <token>``. The notify
port faces the internet (WeCom must reach it); the metrics name instances and suite
ids and show traffic, which is for the operator's monitoring only.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from qywx_cli.core.errors import QywxError, UsageError
from qywx_cli.core.observe import Handled, Observer

if TYPE_CHECKING:
    from qywx_cli.core.service import CallbackService, NotifyResponse

__all__ = ["REPLY_BUCKETS", "Metrics", "MetricsRoute", "StoreCollector", "load_prometheus"]

REPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Seconds; WeCom gives up on a reply after about 1 s (wecom-protocol.md §3.8)."""

HANDLER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds; a handler calls WeCom's API (up to three attempts of 5 s each)."""

_NONE = "-"


def load_prometheus() -> Any:
    """The prometheus_client module, or a one-line UsageError naming the extra."""
    try:
        import prometheus_client
    except ImportError:
        raise UsageError(
            "metrics need prometheus_client: pip install 'qywx-cli[metrics]'"
        ) from None
    return prometheus_client


class StoreCollector:
    """Figures read from the store at each scrape (a prometheus_client custom collector)."""

    def __init__(self, service: CallbackService, now: Callable[[], float] = time.time) -> None:
        self.service = service
        self.now = now
        load_prometheus()
        from prometheus_client import core

        self._families = core

    def describe(self) -> Iterable[Any]:
        return []  # collected lazily: registering must not query the store

    def collect(self) -> Iterator[Any]:
        core = self._families
        up = core.GaugeMetricFamily(
            "qywx_store_up", "1 when the store answered this scrape's queries, else 0."
        )
        try:
            stats = self.service.store.callback_stats()
            suites = sorted({i.suite_id for i in self.service.active_instances()})
            tickets = {s: self.service.store.latest_suite_ticket(s) for s in suites}
        except QywxError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        pending = core.GaugeMetricFamily(
            "qywx_records_pending",
            "Callbacks acknowledged to WeCom whose handler has not finished (status received).",
        )
        pending.add_metric([], stats.by_status.get("received", 0))
        yield pending
        failed = core.GaugeMetricFamily(
            "qywx_records_failed",
            "Callbacks whose handler failed and waits for `qywx retry` (status failed).",
        )
        failed.add_metric([], stats.by_status.get("failed", 0))
        yield failed
        age = core.GaugeMetricFamily(
            "qywx_suite_ticket_age_seconds",
            "Seconds since the newest suite_ticket of each active suite was stored "
            "(+Inf before the first); WeCom pushes one every 10 minutes.",
            labels=["suite_id"],
        )
        now = self.now()
        for suite in suites:
            ticket = tickets[suite]
            value = math.inf if ticket is None else max(0.0, now - ticket.received_at)
            age.add_metric([suite], value)
        yield age


class Metrics(Observer):
    """This process's counters and histograms, plus the store's figures, in one registry.

    A registry of its own (not prometheus_client's global one), so several services in
    one process, and tests, never share counters.
    """

    def __init__(self, service: CallbackService, *, now: Callable[[], float] = time.time) -> None:
        prom = load_prometheus()
        self.registry = registry = prom.CollectorRegistry(auto_describe=True)
        from qywx_cli.core.service import PROVIDER_ROUTE

        self._instances = frozenset([*service.instances, PROVIDER_ROUTE])
        self._children: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}
        self.callbacks = prom.Counter(
            "qywx_callbacks",
            "Requests to the notify endpoint, by instance, kind, event and outcome.",
            ["instance", "kind", "event", "outcome"],
            registry=registry,
        )
        self.reply_seconds = prom.Histogram(
            "qywx_reply_seconds",
            "Time from request to reply at the notify endpoint (record committed first).",
            ["kind"],
            buckets=REPLY_BUCKETS,
            registry=registry,
        )
        self.handler_seconds = prom.Histogram(
            "qywx_handler_seconds",
            "Time a worker spent running a callback's handler, by event and result.",
            ["event", "status"],
            buckets=HANDLER_BUCKETS,
            registry=registry,
        )
        self.api_calls = prom.Counter(
            "qywx_wecom_api_calls",
            'WeCom server API calls by API and errcode ("0" ok, "transport" unreachable).',
            ["api", "errcode"],
            registry=registry,
        )
        self.token_refreshes = prom.Counter(
            "qywx_token_refreshes",
            "Access tokens fetched from WeCom (not served from the cache), by kind.",
            ["kind"],
            registry=registry,
        )
        queue = prom.Gauge(
            "qywx_worker_queue_depth",
            "Callbacks waiting for a worker thread in this process.",
            registry=registry,
        )
        queue.set_function(service.queue_depth)
        registry.register(StoreCollector(service, now))
        self._generate = prom.generate_latest
        self.content_type: str = prom.CONTENT_TYPE_LATEST

    # -- Observer --------------------------------------------------------------------
    def request(self, route: str, response: NotifyResponse, seconds: float) -> None:
        if route != "notify":
            return
        # Only names of configured instances become labels: a path segment is the
        # client's to choose, and every distinct label value is a new time series.
        instance = response.instance if response.instance in self._instances else _NONE
        key = (instance, response.kind or _NONE, response.event or _NONE, response.outcome)
        children = self._children.get(key)
        if children is None:  # labels() validates and locks: once per label set, not per call
            children = self._children[key] = (
                self.callbacks.labels(*key),
                self.reply_seconds.labels(key[1]),
            )
        children[0].inc()
        children[1].observe(seconds)

    def handled(self, run: Handled) -> None:
        self.handler_seconds.labels(run.event or _NONE, run.status).observe(run.seconds)

    def api_call(self, api: str, errcode: str) -> None:
        self.api_calls.labels(api, errcode).inc()

    def token_refresh(self, kind: str) -> None:
        self.token_refreshes.labels(kind).inc()

    # -- exposition ------------------------------------------------------------------
    def render(self) -> bytes:
        """The registry in Prometheus text format (this scrape reads the store)."""
        data: bytes = self._generate(self.registry)
        return data

    def wsgi_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        """``/metrics`` as a WSGI app (any other path: a one-line 404)."""
        if (environ.get("PATH_INFO") or "/") not in ("/metrics", "/metrics/"):
            return _text(start_response, "404 Not Found", "not found (try /metrics)")
        body = self.render()
        start_response(
            "200 OK",
            [("Content-Type", self.content_type), ("Content-Length", str(len(body)))],
        )
        return [body]


def _text(
    start_response: Callable[..., Any], status: str, text: str, *headers: tuple[str, str]
) -> list[bytes]:
    body = text.encode()
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *headers,
        ],
    )
    return [body]


class MetricsRoute:
    """``/metrics`` on the public port for a bearer token; every other path goes to ``app``.

    The token is compared in constant time; a missing or wrong one gets a one-line 401
    that never echoes what was sent.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], metrics: Metrics, token: str) -> None:
        if len(token) < 16:
            raise UsageError("--metrics-token must be at least 16 characters")
        self.app = app
        self.metrics = metrics
        self._expected = f"Bearer {token}".encode()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if (environ.get("PATH_INFO") or "/") != "/metrics":
            return self.app(environ, start_response)
        sent = (environ.get("HTTP_AUTHORIZATION") or "").encode("latin-1", "replace")
        if not hmac.compare_digest(sent, self._expected):
            return _text(
                start_response,
                "401 Unauthorized",
                "metrics need Authorization: Bearer <token>",
                ("WWW-Authenticate", 'Bearer realm="qywx metrics"'),
            )
        return self.metrics.wsgi_app(environ, start_response)
