"""Alerts from ``qywx serve`` to a webhook: a WeCom group robot or any JSON endpoint.

What raises one (:class:`AlertRules`, an observer, and :class:`Monitor`, a timer):

========================  ==================================================  ================
incident                  when                                                key
========================  ==================================================  ================
callback failed           a handler finished ``failed`` (waits for retry)     instance + event
suite_ticket stale        an active suite's newest ticket is over 30 min old  suite id
store cannot be written   a callback was refused 503 because the store failed ``store``
app not online            an active corp's app is not published (上线) yet:   suite + corp
                          read after create_auth / change_auth, then every
                          check (:func:`app_status_check`)
========================  ==================================================  ================

WeCom pushes a suite_ticket every 10 minutes (wecom-protocol.md §3.1): three missed
pushes mean WeCom cannot reach the endpoint, and without a fresh ticket no suite token
can be had once the cached one expires. An app that is installed but not online
(agent/get's customized_publish_status 0 or 1, doc 96448) refuses every login of that
corp's staff, and WeCom sends no callback when the provider publishes it: only a check
can tell.

**De-duplicated and rate-limited.** One alert per incident key per ``repeat_after``
(30 minutes): repeats inside the window are counted and reported with the next alert
of that key. On top, at most ``per_minute`` alerts a minute leave at all (a WeCom group
robot accepts 20 a minute), the rest are counted and logged.

**Never in a callback's way.** Raising an alert is a dictionary update and a
``put_nowait`` on a bounded queue; delivery (with retries and exponential backoff)
happens on the sender's own thread, and a full queue drops the alert with a log line.
A dead, failing or slow webhook therefore changes nothing for callbacks.

The webhook URL is a secret (a robot's ``key`` is its only credential): logs and
errors show it through :func:`masked_url`.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import httpx

from qywx_cli.core.errors import AlertError, QywxError, UsageError
from qywx_cli.core.observe import Handled, Observer
from qywx_cli.core.tls import client_ssl_context
from qywx_cli.core.urls import split_url

if TYPE_CHECKING:
    from qywx_cli.core.service import CallbackService, NotifyResponse

__all__ = [
    "APP_RECHECK_AFTER",
    "TICKET_STALE_AFTER",
    "Alert",
    "AlertRules",
    "AlertSender",
    "Monitor",
    "Webhook",
    "app_status_check",
    "masked_url",
    "sample_alert",
    "send_sample",
    "ticket_check",
]

log = logging.getLogger("qywx.alerts")

TICKET_STALE_AFTER = 30 * 60
"""Seconds: three missed 10-minute suite_ticket pushes."""

APP_RECHECK_AFTER = 30 * 60
"""Seconds after which a corp recorded not online is asked about again (agent/get)."""

INSTALL_EVENTS = frozenset({"create_auth", "change_auth", "reset_permanent_code"})
"""Handlers that end by reading the app's publish status: the monitor looks at once."""

WECOM_ROBOT_PATH = "/cgi-bin/webhook/send"
"""The path of a WeCom group robot (群机器人) webhook, qyapi.weixin.qq.com's and a
privately deployed WeCom's alike: such a URL gets markdown messages."""

_MARKDOWN_LIMIT = 4096  # bytes of markdown.content a robot accepts


@dataclass(frozen=True)
class Alert:
    """One incident to report; ``key`` identifies it for de-duplication."""

    key: str
    title: str
    detail: str = ""
    severity: str = "warning"
    suppressed: int = 0  # repeats of this key folded into this alert


def masked_url(url: str) -> str:
    """The URL without what authenticates it: no user info, no query values."""
    parts = split_url(url)
    if parts is None:
        return "(webhook)"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    query = "?key=***" if "key=" in parts.query else ("?…" if parts.query else "")
    return f"{parts.scheme}://{host}{parts.path}{query}"


class Webhook:
    """Formats and POSTs one alert; :meth:`send` raises AlertError when it did not land."""

    def __init__(
        self,
        url: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 5.0,
        host: str | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.shown = masked_url(url)
        parts = split_url(url)
        self.is_wecom = parts is not None and parts.path.rstrip("/") == WECOM_ROBOT_PATH
        self.host = host or socket.gethostname()
        self.wall = wall
        self._http = httpx.Client(transport=transport, timeout=timeout, verify=client_ssl_context())

    @property
    def kind(self) -> str:
        return "WeCom group robot (markdown)" if self.is_wecom else "JSON webhook"

    def close(self) -> None:
        self._http.close()

    def payload(self, alert: Alert) -> dict[str, Any]:
        when = datetime.fromtimestamp(self.wall(), timezone.utc).isoformat(timespec="seconds")
        if not self.is_wecom:
            return {
                "source": "qywx",
                "key": alert.key,
                "severity": alert.severity,
                "title": alert.title,
                "detail": alert.detail,
                "suppressed": alert.suppressed,
                "host": self.host,
                "time": when,
            }
        color = "warning" if alert.severity == "warning" else "info"
        lines = [f'**qywx: <font color="{color}">{alert.title}</font>**']
        lines += [f"> {line}" for line in alert.detail.splitlines() if line.strip()]
        if alert.suppressed:
            lines.append(f"> and {alert.suppressed} more like it since the last alert")
        lines.append(f"> host: {self.host} · {when}")
        content = "\n".join(lines)
        while len(content.encode()) > _MARKDOWN_LIMIT:
            content = content[: len(content) * 9 // 10]
        return {"msgtype": "markdown", "markdown": {"content": content}}

    def send(self, alert: Alert) -> None:
        """One POST; a non-2xx, an unreachable host or a robot errcode is an AlertError."""
        try:
            response = self._http.post(self.url, json=self.payload(alert))
        except httpx.HTTPError as exc:
            raise AlertError(f"alert webhook {self.shown}: {type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise AlertError(f"alert webhook {self.shown} answered HTTP {response.status_code}")
        if self.is_wecom:
            try:
                data = response.json()
            except ValueError:
                raise AlertError(f"alert webhook {self.shown}: reply is not JSON") from None
            errcode = data.get("errcode") if isinstance(data, dict) else None
            if errcode != 0:
                errmsg = str(data.get("errmsg", ""))[:80] if isinstance(data, dict) else ""
                raise AlertError(f"alert webhook {self.shown}: errcode {errcode} {errmsg}".strip())


@dataclass
class _Incident:
    sent_at: float
    suppressed: int = 0


@dataclass
class AlertSender:
    """De-duplicates, rate-limits and delivers alerts on a thread of its own.

    ``clock`` (monotonic seconds) drives the windows and ``sleep`` the backoff, so a
    test moves time instead of waiting; :meth:`flush` returns once the queue is empty.
    """

    webhook: Webhook
    repeat_after: float = 30 * 60
    per_minute: int = 20
    retries: int = 3
    backoff: float = 2.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], object] | None = None
    queue_size: int = 100
    dropped: int = 0
    delivered: int = 0
    failed: int = 0
    _incidents: dict[str, _Incident] = field(default_factory=dict)
    _recent: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _queue: queue.Queue[Alert | None] = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event)
    _retry_at: float | None = None
    """While a delivery waits out its backoff: when (time.monotonic) it tries again."""
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._queue = queue.Queue(maxsize=self.queue_size)
        if self.sleep is None:
            self.sleep = self._stop.wait  # a stop interrupts a backoff

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="qywx-alerts", daemon=True)
        self._thread.start()

    def raise_alert(self, alert: Alert) -> bool:
        """Queue ``alert`` unless its incident was reported within ``repeat_after``.

        Never blocks and never raises: it runs on request and worker threads.
        """
        now = self.clock()
        with self._lock:
            incident = self._incidents.get(alert.key)
            if incident is not None and now - incident.sent_at < self.repeat_after:
                incident.suppressed += 1
                return False
            self._recent = [t for t in self._recent if now - t < 60]
            if len(self._recent) >= self.per_minute:
                self.dropped += 1
                log.warning("alert rate limit reached; not sent: %s", alert.title)
                return False
            self._recent.append(now)
            folded = incident.suppressed if incident is not None else 0
            self._incidents[alert.key] = _Incident(sent_at=now)
        try:
            self._queue.put_nowait(
                Alert(alert.key, alert.title, alert.detail, alert.severity, folded)
            )
        except queue.Full:
            with self._lock:
                self.dropped += 1
            log.warning("alert queue full; not sent: %s", alert.title)
            return False
        return True

    def deliver(self, alert: Alert) -> bool:
        """Send with retries and exponential backoff; False once every attempt failed."""
        assert self.sleep is not None
        for attempt in range(self.retries + 1):
            try:
                self.webhook.send(alert)
            except AlertError as exc:
                if attempt == self.retries or self._stop.is_set():
                    log.warning("alert not delivered after %d attempt(s): %s", attempt + 1, exc)
                    return False
                delay = self.backoff * (2**attempt)
                self._retry_at = time.monotonic() + delay
                try:
                    self.sleep(delay)
                finally:
                    self._retry_at = None
            else:
                return True
        return False

    def _run(self) -> None:
        while (alert := self._queue.get()) is not None:
            try:
                if self.deliver(alert):
                    self.delivered += 1
                else:
                    self.failed += 1
            except Exception:  # a bug here must not end the thread
                log.exception("alert delivery crashed")
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def flush(self) -> None:
        """Wait until every queued alert was delivered or given up on."""
        self._queue.join()

    def close(self, grace: float = 5.0) -> None:
        """Stop after up to ``grace`` seconds of delivering what is queued; then a pending
        backoff is cut short and what is left is not sent (shutdown must not hang).

        A retry that would come after the grace is not waited for: the backoff is cut
        short at once and each alert still queued gets one more attempt. Waiting the
        grace out for it only made every stop of ``qywx serve`` 5 s longer while the
        webhook was down; a retry within the grace (the first, 2 s on) is still made."""
        deadline = time.monotonic() + grace
        while self._thread is not None and self._queue.unfinished_tasks:
            retry_at = self._retry_at
            if time.monotonic() >= deadline or (retry_at is not None and retry_at > deadline):
                break
            time.sleep(0.05)
        self._stop.set()
        if self._thread is not None:
            while True:  # make room for the sentinel without blocking on a full queue
                try:
                    self._queue.put_nowait(None)
                    break
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        self._queue.task_done()
                    except queue.Empty:
                        pass
            self._thread.join(10)
        self.webhook.close()


class AlertRules(Observer):
    """Turns what the pipeline reports into alerts (the cheap, request-thread half).

    ``wake`` (:meth:`Monitor.wake`) is called after an install or authorization change
    was handled: the handler has just stored the app's publish status, and the monitor
    reads it on its own thread, since an observer may not query the store.
    """

    def __init__(self, sender: AlertSender, *, wake: Callable[[], None] | None = None) -> None:
        self.sender = sender
        self.wake = wake

    def handled(self, run: Handled) -> None:
        if run.status == "processed" and run.event in INSTALL_EVENTS and self.wake is not None:
            self.wake()
        if run.status != "failed":
            return
        self.sender.raise_alert(
            Alert(
                f"callback-failed:{run.instance}:{run.event or '-'}",
                f"{run.event or 'callback'} failed for {run.instance}",
                f"record {run.record_id}: {run.error or 'no error recorded'}\n"
                f"re-run it with: qywx retry {run.record_id}",
            )
        )

    def request(self, route: str, response: NotifyResponse, seconds: float) -> None:
        if response.outcome == "rejected: store":
            self.sender.raise_alert(
                Alert(
                    "store",
                    "the store cannot be written: callbacks are refused with 503",
                    f"{response.text}\nWeCom retries refused callbacks; fix the database "
                    "(disk, permissions, PostgreSQL) before its retries run out",
                    severity="critical",
                )
            )


Check = Callable[[], Iterable[Alert]]


class Monitor:
    """Periodic checks on a thread of its own (store reads never run on a request).

    ``add_check`` adds a condition: a callable returning the alerts due now. The checks
    run every ``interval`` seconds, and at once after :meth:`wake` (an event worth
    looking at was handled), so an incident is not left for up to a minute.
    """

    def __init__(
        self,
        sender: AlertSender,
        *,
        interval: float = 60.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.sender = sender
        self.interval = interval
        self.now = now
        self.checks: list[Check] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add_check(self, check: Check) -> None:
        self.checks.append(check)

    def check_now(self) -> int:
        """Run every check once; the number of alerts raised (after de-duplication)."""
        raised = 0
        for check in self.checks:
            try:
                alerts = list(check())
            except QywxError as exc:
                alerts = [Alert("monitor", "a monitoring check failed", exc.message)]
            except Exception:
                log.exception("monitoring check crashed")
                continue
            raised += sum(self.sender.raise_alert(a) for a in alerts)
        return raised

    def wake(self) -> None:
        """Run the checks now rather than at the next tick; never blocks (any thread)."""
        self._wake.set()

    def start(self) -> None:
        def run() -> None:
            while True:
                self._wake.wait(self.interval)
                if self._stop.is_set():
                    return
                # Cleared before the checks read the store: a wake during them (a newer
                # write) makes another round instead of being lost.
                self._wake.clear()
                self.check_now()

        self._thread = threading.Thread(target=run, name="qywx-monitor", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)


def ticket_check(
    service: CallbackService,
    *,
    now: Callable[[], float] = time.time,
    stale_after: float = TICKET_STALE_AFTER,
) -> Check:
    """Alerts for active suites whose newest suite_ticket is older than ``stale_after``.

    A suite with no ticket at all is reported once the check has itself been running
    ``stale_after`` seconds: a fresh deployment waits for WeCom's first push.
    """
    started = now()

    def check() -> list[Alert]:
        alerts = []
        at = now()
        for suite in sorted({i.suite_id for i in service.active_instances()}):
            ticket = service.store.latest_suite_ticket(suite)
            if ticket is None:
                if at - started < stale_after:
                    continue
                age_text = f"no suite_ticket received in {int(at - started) // 60} min"
            else:
                age = at - ticket.received_at
                if age <= stale_after:
                    continue
                age_text = f"newest suite_ticket is {int(age) // 60} min old"
            alerts.append(
                Alert(
                    f"ticket-stale:{suite}",
                    f"suite_ticket stale for {suite}",
                    f"{age_text} (WeCom pushes one every 10 min)\n"
                    "check that WeCom can reach the notify URL: qywx doctor --auth NAME --url …",
                )
            )
        return alerts

    return check


def app_status_check(
    service: CallbackService,
    *,
    now: Callable[[], float] = time.time,
    recheck_after: float = APP_RECHECK_AFTER,
) -> Check:
    """Alerts for active corps whose app is recorded not online (customized_publish_status
    0 or 1), for the suites of the service's active instances.

    The status is what create_auth, change_auth or ``qywx corp refresh`` stored. Since
    WeCom sends no callback when the provider publishes the app, a status older than
    ``recheck_after`` is read again (agent/get, on the monitor's thread) before it is
    reported: one call per such corp per half hour, and a published app stops alerting
    without an operator's refresh. A failed read is logged and the stored status used.
    A corp whose status was never read is left to ``qywx doctor`` (its ``unknown``).
    """
    from qywx_cli.core.provider import NOT_ONLINE_HINT, is_online, publish_label, read_app_status

    def check() -> list[Alert]:
        suites = {i.suite_id for i in service.active_instances()}
        alerts = []
        for auth in service.store.list_corp_auths(state="active"):
            if auth.suite_id not in suites or is_online(auth.publish_status) is not False:
                continue
            status = auth.publish_status
            checked = auth.publish_checked_at
            if checked is None or now() - checked >= recheck_after:
                try:
                    read = read_app_status(service.store, service.client, auth)
                except QywxError as exc:
                    log.warning("agent/get for corp %s failed: %s", auth.corp_id, exc.message)
                else:
                    if read is not None:
                        if read.is_online:
                            continue
                        status = read.customized_publish_status
            name = f" ({auth.corp_name})" if auth.corp_name else ""
            alerts.append(
                Alert(
                    f"app-not-online:{auth.suite_id}:{auth.corp_id}",
                    f"app not online in corp {auth.corp_id}{name}",
                    f"suite {auth.suite_id}, agentid {auth.agent_id}: customized_publish_status "
                    f"{publish_label(status)}\n"
                    f"{NOT_ONLINE_HINT}; its staff cannot log in until then\n"
                    f"after publishing: qywx corp refresh {auth.corp_id}",
                )
            )
        return alerts

    return check


def sample_alert() -> Alert:
    """What ``qywx alert test`` sends."""
    return Alert(
        "test",
        "test alert",
        "qywx alert test: this webhook receives qywx serve's alerts",
        severity="info",
    )


def send_sample(url: str | None, *, transport: httpx.BaseTransport | None = None) -> Webhook:
    """Send :func:`sample_alert` once to ``url``; the Webhook (for its masked name) on success.

    No webhook configured is a UsageError; one that refuses is an AlertError.
    """
    if not url:
        raise UsageError(
            "no alert webhook: pass --webhook URL, or set QYWX_ALERT_WEBHOOK or "
            "[serve] alert_webhook in qywx.toml"
        )
    if split_url(url) is None or not url.startswith(("http://", "https://")):
        raise UsageError("the alert webhook must be an absolute http(s) URL")
    hook = Webhook(url, transport=transport)
    try:
        hook.send(sample_alert())
    finally:
        hook.close()
    return hook
