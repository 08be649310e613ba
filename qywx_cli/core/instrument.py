"""What ``qywx serve`` attaches to a callback service: metrics, alerts, JSON event logs.

Kept out of the CLI so the command stays parse, one call, render, and so an embedding
application can wire the same pieces around its own server. Everything here is off
unless asked for; nothing is imported until it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qywx_cli.core.errors import UsageError
from qywx_cli.core.observe import Observers

if TYPE_CHECKING:
    from qywx_cli.core.metrics import Metrics
    from qywx_cli.core.service import CallbackService

__all__ = ["Instrumentation", "instrument"]

log = logging.getLogger("qywx.serve")

WSGIApp = Callable[..., Iterable[bytes]]


@dataclass
class Instrumentation:
    """The pieces attached to one service; :meth:`close` stops what they started."""

    service: CallbackService
    metrics: Metrics | None = None
    metrics_token: str | None = None
    metrics_url: str | None = None
    alerts_to: str | None = None
    _stops: list[Callable[[], None]] = field(default_factory=list)

    def wrap(self, app: WSGIApp) -> WSGIApp:
        """The public app: ``app``, plus ``/metrics`` behind the bearer token if one is set."""
        if self.metrics is None or not self.metrics_token:
            return app
        from qywx_cli.core.metrics import MetricsRoute

        return MetricsRoute(app, self.metrics, self.metrics_token)

    def describe(self) -> list[str]:
        """One line per attached piece, for the start-up log (never a secret)."""
        lines = []
        if self.metrics_url:
            lines.append(f"metrics on {self.metrics_url}")
        if self.metrics is not None and self.metrics_token:
            lines.append("metrics on the public port at /metrics (bearer token)")
        if self.alerts_to:
            lines.append(f"alerts to {self.alerts_to}")
        return lines

    def close(self) -> None:
        while self._stops:
            self._stops.pop()()


def _observers(service: CallbackService) -> Observers:
    if not isinstance(service.observer, Observers):
        service.observer = Observers([service.observer])
    return service.observer


def _attach_alerts(done: Instrumentation, url: str) -> None:
    """Alerts: rules on the observer seam, a monitor thread, a sender thread."""
    from qywx_cli.core.alerts import (
        AlertRules,
        AlertSender,
        Monitor,
        Webhook,
        app_status_check,
        ticket_check,
    )

    sender = AlertSender(Webhook(url))
    monitor = Monitor(sender)
    monitor.add_check(ticket_check(done.service))
    monitor.add_check(app_status_check(done.service))
    # After create_auth / change_auth the monitor reads the stored publish status at once.
    _observers(done.service).add(AlertRules(sender, wake=monitor.wake))
    sender.start()
    monitor.start()
    done._stops.append(sender.close)
    done._stops.append(monitor.close)  # popped first: no check raises after the sender stops
    done.alerts_to = f"{sender.webhook.shown} ({sender.webhook.kind})"


def instrument(
    service: CallbackService,
    *,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    metrics_token: str | None = None,
    alert_webhook: str | None = None,
) -> Instrumentation:
    """Attach what is asked for to ``service`` and start its listeners and threads."""
    from qywx_cli.core.logfmt import EventLog

    done = Instrumentation(service, metrics_token=metrics_token)
    _observers(service).add(EventLog())
    if alert_webhook:
        _attach_alerts(done, alert_webhook)
    if metrics_port is None and not metrics_token:
        return done
    from qywx_cli.core.metrics import Metrics, MetricsRoute, load_prometheus

    if metrics_port is not None and not 0 <= metrics_port <= 65535:
        raise UsageError(f"--metrics-port must be between 0 and 65535, not {metrics_port}")
    metrics = Metrics(service)
    if metrics_token:
        MetricsRoute(lambda e, s: [], metrics, metrics_token)  # checks the token's length
    _observers(service).add(metrics)
    done.metrics = metrics
    if metrics_port is not None:
        prom: Any = load_prometheus()
        try:
            httpd, thread = prom.start_http_server(
                metrics_port, addr=metrics_host, registry=metrics.registry
            )
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {metrics_host}:{metrics_port} for metrics: {exc.strerror or exc}"
            ) from None

        def stop() -> None:
            httpd.shutdown()
            httpd.server_close()
            thread.join(5)

        done._stops.append(stop)
        host = httpd.server_address[0]
        shown = f"[{host}]" if ":" in host else host
        done.metrics_url = f"http://{shown}:{httpd.server_port}/metrics"
    return done
