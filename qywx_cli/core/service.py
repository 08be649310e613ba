"""QywxProxyAuthService: the callback pipeline, retries and (with login.py) logins.

One callback (docs/architecture.md, "One callback, end to end")::

    verify signature → decrypt (receiveid checked) → parse event
      → store.record_callback (committed, deduplicated)   ← reply only after this
      → reply "success" (POST) / the echostr plaintext (GET)
      → worker thread: handler for the InfoType → record processed | failed

WeCom wants the reply within 1 s for auth events (wecom-protocol.md §3.2, §3.8) and
AuthCode is valid for 10 minutes, so API calls never run before the reply: the
reply waits only for one SQLite commit. A crash between the commit and the handler
leaves the record ``received``; :meth:`CallbackService.start` picks those up again.
Events whose handling needs no WeCom call are finished inside that one commit
instead: a suite_ticket is one more INSERT (§3.1), and change_contact and the other
events qywx only records have no handler at all, so the busiest callbacks cost one
transaction and no worker round trip.

The provider's 系统事件接收URL is the route ``/notify/provider`` (:data:`PROVIDER_ROUTE`):
signed and encrypted with the provider's own Token and EncodingAESKey (settings
``provider_token``, ``provider_encoding_aes_key``), receiveid the provider corp id
(wecom-provider-apis.md §7.2). Its callbacks are recorded under the instance name
``provider`` and go through the same record → reply → handle path, dedupe and retry
included; a request signed with a template's key is refused there (-40001).

Repeats are idempotent: a byte-identical replay (same instance, msg_signature,
timestamp, nonce) and a redelivery of the same content under a fresh signature (what
a WeCom retry looks like) are both logged ``duplicate`` and answered ``success``, the
answer the first delivery got, so WeCom stops retrying; neither is processed again,
except that a repeat of a ``failed`` record runs that record once more.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from qywx_cli.core import events as ev
from qywx_cli.core.config import AuthInstance, Diagnostic, validate_paths
from qywx_cli.core.crypto import Decrypted, WXBizMsgCrypt
from qywx_cli.core.errors import (
    CallbackCryptoError,
    ConfigError,
    EventError,
    QywxError,
    RecordNotFound,
    RequestRejected,
    StoreError,
    WeComAPIError,
    WeComTransportError,
)
from qywx_cli.core.observe import Handled, Observer, Observers
from qywx_cli.core.sealing import Verdict
from qywx_cli.core.settings import Settings
from qywx_cli.core.store import (
    CallbackRecord,
    Store,
    claimants,
    open_store,
)
from qywx_cli.core.store.leases import LeaseKeeper
from qywx_cli.core.store.records import (
    LEASE_RENEW_SECONDS,
    MAX_CIPHERTEXT,
    MAX_STORED_ERROR,
    renew_interval,
)
from qywx_cli.core.store.rules import RETRYING_MARK, clip_error
from qywx_cli.core.xmlsafe import envelope_encrypt

if TYPE_CHECKING:
    from qywx_cli.core.retention import PruneReport
    from qywx_cli.core.store import CorpAuth
    from qywx_cli.core.wecom import WeComClient

__all__ = [
    "PROVIDER_ROUTE",
    "CallbackService",
    "NotifyResponse",
    "NotifySteps",
    "RecordRequest",
    "RetryOutcome",
    "drive",
    "provider_crypto",
]

log = logging.getLogger("qywx.service")

_RETRYABLE = frozenset({"received", "failed", "unknown"})

PROVIDER_ROUTE = "provider"
"""``/notify/provider``, and the instance column of what arrives there."""


def provider_crypto(settings: Settings) -> WXBizMsgCrypt | None:
    """The system event URL's crypto (receiveid: the provider corp id only), if configured."""
    if not settings.has_provider_callbacks:
        return None
    assert settings.provider_token and settings.provider_encoding_aes_key
    assert settings.provider_corp_id
    return WXBizMsgCrypt(
        settings.provider_token,
        settings.provider_encoding_aes_key,
        {settings.provider_corp_id: "provider_corp"},
    )


_WRITE_KEYS = frozenset({"writable", "error", "installs_need_recovery"})

AUTH_CODE_TTL_SECONDS = 600.0
"""An AuthCode is valid for 10 minutes (wecom-protocol.md §3.2): transient failures are
retried by the server itself for that long after the callback arrived."""

TRANSIENT_ERRCODES = frozenset({-1, 45009, 45033})
"""WeCom's "system busy" and its rate limits: the same call a little later succeeds."""

RECOVERY_40078 = (
    "AuthCode already used or expired (WeCom 40078) and no permanent code was stored for "
    "this installation; to recover, reset the app's Secret in the provider console "
    "(代开发应用 → 重置Secret): WeCom then sends reset_permanent_code with a fresh AuthCode"
)
"""The one way back when an installation's single-use code was spent without a trace."""


def recovery_step(
    rec: CallbackRecord, event: ev.CreateAuthEvent | ev.ResetPermanentCodeEvent
) -> str:
    """:data:`RECOVERY_40078`, plus what tells the operator which installation it was.

    No WeCom API gives a permanent code back without its AuthCode (get_auth_info needs
    the permanent code itself, wecom-provider-apis.md §2.4), so the answer lost with a
    killed worker cannot be fetched again: only the console's 重置Secret can. What the
    record does know is said: an earlier attempt that sent this AuthCode and never
    finished (a worker killed mid-exchange, or an answer lost on the way), and the
    authorization link's state, which names the customer who scanned it (doc 98744).
    create_auth carries no corp id, so that state is often the only pointer.
    """
    hints = []
    if rec.attempts > 1:
        hints.append(
            f"attempt {rec.attempts}: an earlier attempt had sent this AuthCode to WeCom "
            "and its answer was never stored (the worker stopped mid-exchange, or the "
            "answer was lost on the way)"
        )
    link_state = getattr(event, "state", None)
    if link_state:
        hints.append(
            f"the corp installed through the authorization link with state {link_state[:64]!r}"
        )
    return RECOVERY_40078 + (f" ({'; '.join(hints)})" if hints else "")


RERUN_GAP_SECONDS = 5.0
"""A repeat re-runs a failed record at most this often: a replay flood of a failed
create_auth must not become a flood of WeCom API calls."""


@dataclass(frozen=True)
class NotifyResponse:
    """What the notify endpoint answers; also a WSGI app, so a framework can return it."""

    status: int
    body: bytes
    outcome: str
    record_id: int | None = None
    instance: str | None = None
    content_type: str = "text/plain; charset=utf-8"
    extra_headers: tuple[tuple[str, str], ...] = ()
    #: the callback's kind (verify, command, data) and InfoType/Event, once decrypted;
    #: what metrics and structured logs label a request with
    kind: str | None = None
    event: str | None = None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [
            ("Content-Type", self.content_type),
            ("Content-Length", str(len(self.body))),
            ("Cache-Control", "no-store"),
            *self.extra_headers,
        ]

    def __call__(
        self, environ: Mapping[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        start_response(_status_line(self.status), self.headers)
        if str(environ.get("REQUEST_METHOD") or "").upper() == "HEAD":
            return []  # GET's headers, Content-Length included, and no body (RFC 9110 §9.3.2)
        return [self.body]


_STATUS_LINES: dict[int, str] = {}


def _status_line(status: int) -> str:
    """``"200 OK"``: looked up once per status (an enum call per reply cost more than
    building the rest of the headers)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = f"{status} {HTTPStatus(status).phrase}"
    return line


RecordRequest = dict[str, Any]
"""The keyword arguments of one ``Store.record_callback`` call."""

NotifySteps = Generator[RecordRequest, CallbackRecord, NotifyResponse]
"""An answer to WeCom that yields the records it needs written
(:meth:`CallbackService.notify_steps`)."""


def drive(steps: NotifySteps, record: Callable[..., CallbackRecord]) -> NotifyResponse:
    """Run ``steps`` to its answer, writing each record it asks for with ``record``.

    What ``record`` raises is thrown back in at the step that asked, so the steps meet
    a failed write exactly where a direct ``store.record_callback`` call would raise.
    """
    try:
        request = next(steps)
        while True:
            try:
                written = record(**request)
            except Exception as exc:
                request = steps.throw(exc)
            else:
                request = steps.send(written)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def _reply(status: int, text: str, outcome: str, **kw: Any) -> NotifyResponse:
    return NotifyResponse(status, text.encode("utf-8"), outcome, **kw)


def _check_ciphertext(value: str, what: str) -> None:
    """Refuse a ciphertext longer than any record keeps, before its signature is checked:
    no WeCom callback comes near the bound (:data:`~.store.records.MAX_CIPHERTEXT`)."""
    if len(value) > MAX_CIPHERTEXT:
        raise CallbackCryptoError(
            CallbackCryptoError.PARSE_XML,
            f"{what} is longer than {MAX_CIPHERTEXT // 1024} KiB; no WeCom callback is",
        )


def _refusal(exc: QywxError, **kw: Any) -> NotifyResponse:
    """Map a refusal to an HTTP status; the body is the one-line reason, never a secret."""
    if isinstance(exc, CallbackCryptoError):
        status = (
            400
            if exc.wecom_code in (CallbackCryptoError.PARSE_XML, CallbackCryptoError.DECODE_BASE64)
            else 403
        )
    elif isinstance(exc, RequestRejected):
        status = 403
    elif isinstance(exc, StoreError):
        status = 503  # WeCom retries on anything but 200: the callback is not lost
    else:
        status = 400
    return _reply(status, exc.message, f"rejected: {exc.code}", **kw)


_HANDLED: frozenset[type] = frozenset(
    {
        ev.SuiteTicketEvent,
        ev.CreateAuthEvent,
        ev.ResetPermanentCodeEvent,
        ev.ChangeAuthEvent,
        ev.CancelAuthEvent,
        ev.UnlicensedNotifyEvent,
    }
)
"""The events of a template's URL that a worker handles (the keys of
``CallbackService._handlers``); any other event is finished as it is recorded."""
_SYSTEM_HANDLED: frozenset[type] = frozenset({ev.AutoActivateEvent})
"""The same for the system event URL (``CallbackService._system_handlers``)."""


@dataclass(frozen=True)
class RetryOutcome:
    record: CallbackRecord
    ran: bool
    reason: str = ""


@dataclass
class _Worker:
    """Background handlers: a bounded queue and a few threads, drained on shutdown."""

    handle: Callable[[int], object]
    threads: int = 2
    _queue: queue.Queue[int | None] = field(default_factory=lambda: queue.Queue(maxsize=10_000))
    _threads: list[threading.Thread] = field(default_factory=list)
    # Ids queued and not yet taken: the sweeper finds them pending again every few
    # seconds, and queueing one twice would only cost a claim that fails.
    _queued: set[int] = field(default_factory=set)
    _queued_lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, name=f"qywx-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def submit(self, record_id: int) -> None:
        with self._queued_lock:
            if record_id in self._queued:
                return
            self._queued.add(record_id)
        try:
            self._queue.put_nowait(record_id)
        except queue.Full:  # stays 'received'; the sweeper offers it again later
            with self._queued_lock:
                self._queued.discard(record_id)
            log.warning("worker queue full; callback %s left for the next sweep", record_id)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            with self._queued_lock:
                self._queued.discard(item)
            try:
                self.handle(item)
            except Exception:  # the handler records failures itself; never kill the thread
                log.exception("handler crashed for callback %s", item)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def join(self) -> None:
        self._queue.join()

    def depth(self) -> int:
        return self._queue.qsize()

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()
        self._threads.clear()


class CallbackService:
    """The notify endpoint's logic, the event handlers and retries, over one store.

    ``background=False`` runs handlers inline after the reply is built (tests, the
    element API without a server); ``start()`` starts the worker threads.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        client: WeComClient | None = None,
        instances: Iterable[AuthInstance] | None = None,
        now: Callable[[], float] = time.time,
        background: bool = True,
        threads: int = 2,
        rescan_interval: float | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.settings = settings
        self.now = now
        #: told of every reply, handler run and WeCom call (metrics, logs, alerts)
        self.observer: Observer = observer if observer is not None else Observers()
        self.store = (
            store
            if store is not None
            else open_store(settings.db_path, now=now, keys=settings.secret_keys)
        )
        self._client = client
        self._client_lock = threading.Lock()
        #: instances found but not usable (name → first error) and errors across the
        #: loaded ones: ``qywx serve`` reports both, and ``--strict`` refuses to start
        self.not_loaded: dict[str, str] = {}
        self.conflicts: list[Diagnostic] = []
        if instances is None:
            report = validate_paths([settings.auths_dir])
            found = list(report.instances)
            self.not_loaded = report.not_loaded()
            self.conflicts = report.conflicts()
        else:
            found = list(instances)
        self.instances: dict[str, AuthInstance] = {i.name: i for i in found}
        # One WXBizMsgCrypt per instance (the key is decoded once, not per request).
        self._crypto: dict[str, WXBizMsgCrypt] = {
            i.name: i.crypto(i.receive_ids(provider_corp_id=settings.provider_corp_id))
            for i in found
        }
        self._provider = provider_crypto(settings)
        if self._provider is not None and PROVIDER_ROUTE in self.instances:
            raise ConfigError(
                f"auth instance {PROVIDER_ROUTE!r} would shadow the system event URL "
                f"/notify/{PROVIDER_ROUTE}; rename the instance"
            )
        self.worker_id = f"{uuid.uuid4().hex[:8]}"
        self._background = background
        self._worker = _Worker(self._run_queued, threads=threads) if background else None
        #: claims keep other workers away this long unless renewed (qywx.toml); the
        #: sweeper looks for lapsed ones as often as claims are renewed, by default
        self.lease_seconds = settings.lease_seconds
        renew = renew_interval(self.lease_seconds)
        self.rescan_interval = renew if rescan_interval is None else rescan_interval
        #: and for claims of ended processes (release_ended_claims) at least every
        #: LEASE_RENEW_SECONDS: they need no lapse, so a long lease must not slow them
        self.takeover_interval = min(self.rescan_interval, LEASE_RENEW_SECONDS)
        self._stopping = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._retainer: threading.Thread | None = None
        self._health_lock = threading.Lock()
        self._health: tuple[float, dict[str, Any]] | None = None
        self._leases = LeaseKeeper(self.store, every=renew)

    @property
    def client(self) -> WeComClient:
        """The WeCom API client, built on first use.

        Most callbacks (every suite_ticket) never call WeCom, and the client costs a
        server's start-up about a third of its CPU: httpx and its stack, the API
        families' result types and a TLS context with the CA bundle. The first event
        that needs WeCom pays that instead, once.
        """
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    from qywx_cli.core.wecom import WeComClient

                    self._client = WeComClient(
                        self.store,
                        base_url=self.settings.api_base,
                        now=self.now,
                        observer=self.observer,
                    )
                client = self._client
        return client

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> int:
        """Start the workers and queue what a previous run acknowledged but never handled."""
        if self._worker is None:
            return 0
        self._worker.start()
        self._release_ended_claims_logged()
        resumed = self._submit_pending()
        self._sweeper = threading.Thread(target=self._sweep, name="qywx-sweeper", daemon=True)
        self._sweeper.start()
        if self.settings.retention_days:
            self._retainer = threading.Thread(
                target=self._retain, name="qywx-retention", daemon=True
            )
            self._retainer.start()
        return resumed

    def apply_retention(self) -> PruneReport | None:
        """Prune the log by ``retention_days`` now (None when it is not set): finished
        records older than that go; received and failed ones stay until handled."""
        days = self.settings.retention_days
        if not days:
            return None
        from qywx_cli.core.retention import apply_retention

        report = apply_retention(self.store, days, now=self.now())
        if report.total:
            log.info(
                "retention: deleted %d callback record(s) older than %d days (%s)",
                report.total,
                days,
                ", ".join(f"{status} {n}" for status, n in report.deleted.items()),
            )
        return report

    def _retain(self) -> None:
        """``retention_days`` at start and every RETENTION_EVERY seconds after."""
        from qywx_cli.core.retention import RETENTION_EVERY

        while True:
            try:
                self.apply_retention()
            except QywxError as exc:  # a busy or unreachable database: next round
                log.warning("retention prune failed: %s", exc.message)
            if self._stopping.wait(RETENTION_EVERY):
                return

    def release_ended_claims(self) -> int:
        """Drop the claims of processes on this machine that have ended (killed, say),
        so their records are run now rather than when their lease lapses; the claims of
        other hosts, and of any process this one cannot vouch for, wait for the lease
        (:mod:`.store.claimants`). Returns how many were dropped; 0 without looking
        when qywx.toml's ``same_host_takeover`` is false."""
        if not self.settings.same_host_takeover:
            return 0
        held = self.store.held_claims(
            lease_seconds=self.lease_seconds,
            failed_since=self.now() - AUTH_CODE_TTL_SECONDS,
        )
        return self._take_back(held)

    def _take_back(self, claims: Iterable[tuple[int, str]]) -> int:
        """Release those of ``claims`` whose process has certainly ended, and say so."""
        ended = [(rid, worker) for rid, worker in claims if claimants.ended(worker)]
        released = self.store.release_claims(ended) if ended else 0
        if released:
            log.warning(
                "took back %d claim(s) of ended process(es) %s: running their records now",
                released,
                ", ".join(sorted({worker for _, worker in ended})),
            )
        return released

    def _release_ended_claims_logged(self) -> int:
        """:meth:`release_ended_claims` for the sweeper: a failure is logged, never
        allowed to stop the scan for pending records that follows."""
        try:
            return self.release_ended_claims()
        except QywxError as exc:  # a busy database: the next sweep tries again
            log.warning("looking for claims of ended processes failed: %s", exc.message)
            return 0

    def _submit_pending(self, limit: int = 10_000) -> int:
        assert self._worker is not None
        pending = self.store.pending_callbacks(limit=limit, lease_seconds=self.lease_seconds)
        for rec in pending:
            self._worker.submit(rec.id)
        # Transient failures whose AuthCode is still valid: a killed host's timers are
        # gone, so whoever sweeps next runs them (the claim keeps it to one run).
        recent = self.store.list_callbacks(
            status="failed", since=self.now() - AUTH_CODE_TTL_SECONDS, limit=1000
        )
        for rec in recent:
            if (rec.last_error or "").endswith(RETRYING_MARK):
                self._worker.submit(rec.id)
        return len(pending)

    def _retry_delay(self, rec: CallbackRecord) -> float | None:
        """When to run a transiently failed record again: exponential back-off with jitter
        (1 s, 2 s, 4 s … at most 60 s, ×0.5-1.5), only while its AuthCode lives; None when
        no worker runs here or the AuthCode will have expired."""
        if self._worker is None or self._stopping.is_set():
            return None
        left = rec.received_at + AUTH_CODE_TTL_SECONDS - self.now()
        delay = min(60.0, 2.0 ** max(0, rec.attempts - 1)) * random.uniform(0.5, 1.5)
        return delay if delay < left else None

    def _retry_later(self, record_id: int, delay: float) -> None:
        worker = self._worker
        if worker is None:
            return

        def again() -> None:
            if not self._stopping.is_set():
                worker.submit(record_id)

        timer = threading.Timer(delay, again)
        timer.daemon = True
        timer.start()

    def _sweep(self) -> None:
        """Re-queue what no live worker holds: records a killed process (or host) had
        claimed come back once their short lease lapses, within seconds, without a
        restart; records another host recorded but has not claimed yet are shared.

        Every ``takeover_interval`` it looks for claims of ended processes, and queues
        at once what it frees; the full rescan (which also re-runs transient failures,
        whose back-off must not shrink to this pace) waits for ``rescan_interval``."""
        last = time.monotonic()
        while not self._stopping.wait(self.takeover_interval):
            try:
                freed = self._release_ended_claims_logged()
                if freed or time.monotonic() - last >= self.rescan_interval - 0.01:
                    last = time.monotonic()
                    self._submit_pending(limit=1000)
            except QywxError as exc:  # a busy database: try again next round
                log.warning("rescan of pending callbacks failed: %s", exc.message)
            except Exception:  # a bug or a row no qywx wrote: log it, keep sweeping
                log.exception("rescan of pending callbacks failed")

    def queue_depth(self) -> int:
        """Callbacks waiting for a worker in this process (0 without workers)."""
        return self._worker.depth() if self._worker is not None else 0

    def drain(self) -> None:
        """Wait until every submitted callback has been handled."""
        if self._worker is not None:
            self._worker.join()

    def close(self) -> None:
        self._stopping.set()
        if self._sweeper is not None:
            self._sweeper.join()
        if self._retainer is not None:
            self._retainer.join()
        if self._worker is not None:
            self._worker.stop()
        self._leases.close()
        if self._client is not None:
            self._client.close()
        self.store.close()

    def __enter__(self) -> CallbackService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- routing ------------------------------------------------------------------
    def active_instances(self) -> list[AuthInstance]:
        return [i for i in self.instances.values() if i.is_active]

    def instance(self, name: str) -> AuthInstance:
        inst = self.instances.get(name.removeprefix("auths."))
        if inst is None:
            raise RecordNotFound(f"no auth instance named {name!r}")
        return inst

    def _candidates(self, name: str | None) -> list[AuthInstance]:
        if name is None:
            return self.active_instances()
        inst = self.instances.get(name)
        if inst is None and name == PROVIDER_ROUTE:
            raise RecordNotFound(
                f"the system event URL /notify/{PROVIDER_ROUTE} is not configured: set "
                "provider_token, provider_encoding_aes_key and provider_corp_id"
            )
        if inst is None and name in self.not_loaded:  # not a wrong name: a broken config
            raise RecordNotFound(
                f"auth instance {name!r} was not loaded at start-up: its configuration has "
                "an error, named in the server's log"
            )
        if inst is None or not inst.is_active:
            raise RecordNotFound(f"no active auth instance named {name!r}")
        return [inst]

    def _pick(
        self, name: str | None, msg_signature: str, timestamp: str, nonce: str, encrypt: str
    ) -> AuthInstance:
        """The instance whose token verifies the signature (bare /notify tries each)."""
        for inst in self._candidates(name):
            try:
                self._crypto[inst.name].verify(msg_signature, timestamp, nonce, encrypt)
            except CallbackCryptoError:
                continue
            return inst
        raise CallbackCryptoError(CallbackCryptoError.VALIDATE_SIGNATURE)

    def _decrypt(self, inst: AuthInstance, encrypt: str) -> Decrypted:
        """Decrypt and accept a receiveid from the suite, the provider or an authorized corp."""
        dec = self._crypto[inst.name].decrypt(encrypt, check_receive_id=False)
        # Either form of an authorized corp's id, once its mapping is known (ID upgrade).
        if (
            dec.receive_id_kind == "unknown"
            and self.store.get_corp_auth(dec.receive_id, inst.suite_id) is None
        ):
            raise CallbackCryptoError(
                CallbackCryptoError.VALIDATE_RECEIVE_ID,
                f"receiveid {dec.receive_id!r} is not accepted",
            )
        return dec

    # -- notify -------------------------------------------------------------------
    def notify(
        self,
        *,
        msg_signature: str | None,
        timestamp: str | None,
        nonce: str | None,
        echostr: str | None = None,
        body: bytes | str | None = None,
        instance: str | None = None,
        method: str | None = None,
    ) -> NotifyResponse:
        """Answer one request from WeCom: GET handshake if ``echostr``, else a POST callback."""
        return drive(
            self.notify_steps(
                msg_signature=msg_signature,
                timestamp=timestamp,
                nonce=nonce,
                echostr=echostr,
                body=body,
                instance=instance,
                method=method,
            ),
            self.store.record_callback,
        )

    def notify_steps(
        self,
        *,
        msg_signature: str | None,
        timestamp: str | None,
        nonce: str | None,
        echostr: str | None = None,
        body: bytes | str | None = None,
        instance: str | None = None,
        method: str | None = None,
    ) -> NotifySteps:
        """:meth:`notify` as steps: each record it needs is yielded, not written.

        The caller writes each yielded :data:`RecordRequest` with
        ``store.record_callback(**request)`` and sends the record back, or throws in
        what that raised (:func:`drive` does exactly this). An event loop can so answer
        a callback without a thread of its own: it verifies, decrypts and parses in the
        loop and awaits only the commit, which one writer thread shares among every
        request waiting for one (:mod:`.edge`).
        """
        method = method or ("GET" if echostr is not None else "POST")
        missing = [
            n
            for n, v in (
                ("msg_signature", msg_signature),
                ("timestamp", timestamp),
                ("nonce", nonce),
            )
            if not v
        ]
        if method == "GET" and not echostr:
            missing.append("echostr")
        if method == "POST" and not missing and not body:
            return _reply(
                400,
                "POST callback without a body: pass the raw request body (body=...)",
                "rejected: bad-request",
            )
        if missing:
            return _reply(
                400, f"missing query parameter(s): {', '.join(missing)}", "rejected: bad-request"
            )
        assert msg_signature and timestamp and nonce
        try:
            if method == "GET":
                assert echostr is not None
                return (
                    yield from self._handshake(instance, msg_signature, timestamp, nonce, echostr)
                )
            return (
                yield from self._callback(instance, msg_signature, timestamp, nonce, body or b"")
            )
        except RecordNotFound as exc:
            return _reply(404, exc.message, "rejected: unknown-instance")
        except QywxError as exc:
            return _refusal(exc, instance=instance)

    def _handshake(
        self, name: str | None, sig: str, ts: str, nonce: str, echostr: str
    ) -> NotifySteps:
        echostr = echostr.replace(" ", "+")  # a proxy decoded '+' as space (§5.3)
        _check_ciphertext(echostr, "echostr")
        if self._is_provider_route(name):
            assert self._provider is not None
            dec = self._provider.verify_url(sig, ts, nonce, echostr)
            route, suite_id = PROVIDER_ROUTE, None
        else:
            inst = self._pick(name, sig, ts, nonce, echostr)
            dec = self._decrypt(inst, echostr)
            route, suite_id = inst.name, inst.suite_id
        if dec.message.lstrip().startswith(b"<"):
            # A handshake's echostr is a random string. XML is a callback's Encrypt sent
            # as a GET with its own signature, timestamp and nonce: the signature covers
            # the same four values, so echoing the plaintext would hand a suite ticket or
            # an AuthCode, of any age, to whoever captured (or was shown) the request.
            raise RequestRejected("echostr decrypts to a callback, not a handshake string")
        rec = yield dict(
            instance=route,
            kind="verify",
            info_type="verify_url",
            suite_id=suite_id,
            corp_id=dec.receive_id if dec.receive_id_kind != "suite" else None,
            msg_signature=sig,
            timestamp=ts,
            nonce=nonce,
            envelope=echostr,
            content_key=None,
            status="processed",
        )
        # The plaintext exactly: no quotes, BOM or newline (§1.4).
        return NotifyResponse(
            200, dec.message, "handshake", rec.id, route, kind="verify", event="verify_url"
        )

    def _is_provider_route(self, name: str | None) -> bool:
        """``/notify/provider`` is the system event URL once the provider key is set."""
        return name == PROVIDER_ROUTE and self._provider is not None

    def _callback(
        self, name: str | None, sig: str, ts: str, nonce: str, body: bytes | str
    ) -> NotifySteps:
        try:  # WeCom sends UTF-8
            envelope = body.decode("utf-8") if isinstance(body, bytes) else body
        except UnicodeDecodeError:
            raise CallbackCryptoError(
                CallbackCryptoError.PARSE_XML, "envelope is not UTF-8"
            ) from None
        # Only the signed Encrypt value is kept: the rest of the body is not covered by
        # the signature, so whatever surrounds it (padding, say) is never stored.
        encrypt = envelope_encrypt(envelope)
        _check_ciphertext(encrypt, "Encrypt")
        if self._is_provider_route(name):
            provider = self._provider
            assert provider is not None
            provider.verify(sig, ts, nonce, encrypt)  # a template's key fails here: -40001
            # receiveid must be the provider corp id (-40005 otherwise).
            return (
                yield from self._accept(
                    PROVIDER_ROUTE,
                    None,
                    None,
                    lambda: provider.decrypt(encrypt),
                    sig,
                    ts,
                    nonce,
                    encrypt,
                )
            )
        inst = self._pick(name, sig, ts, nonce, encrypt)
        return (
            yield from self._accept(
                inst.name,
                inst.suite_id,
                inst,
                lambda: self._decrypt(inst, encrypt),
                sig,
                ts,
                nonce,
                encrypt,
            )
        )

    def _accept(
        self,
        route: str,
        suite_id: str | None,
        inst: AuthInstance | None,
        decrypt: Callable[[], Decrypted],
        sig: str,
        ts: str,
        nonce: str,
        encrypt: str,
    ) -> NotifySteps:
        """Record a signature-checked callback durably, reply, then hand it to a worker.

        The record keeps the signed ciphertext only (``encrypt``), and the store folds a
        flood of one kind of refusal into a count, so neither a padded body nor many
        copies of one can grow the database by more than a few small rows."""
        common: dict[str, Any] = dict(
            instance=route, msg_signature=sig, timestamp=ts, nonce=nonce, envelope=encrypt
        )
        try:
            self._check_clock(ts)
            dec = decrypt()
            event = ev.parse_event(dec.message)
            if inst is not None:
                self._check_addressee(inst, event, dec)
        except (CallbackCryptoError, EventError, RequestRejected) as exc:
            # Signed with our token, yet unusable: keep it for the operator to inspect.
            rec = yield dict(
                kind="command",
                info_type=None,
                suite_id=suite_id,
                corp_id=None,
                content_key=None,
                status="rejected",
                last_error=exc.message,
                **common,
            )
            return _refusal(exc, record_id=rec.id, instance=route)
        unknown = isinstance(event, ev.UnknownEvent)
        ticket = self._ticket_of(inst, event) if inst is not None else None
        # Events that need no WeCom call are finished in the recording transaction; only
        # the rest (create_auth, change_auth, …) go to the workers.
        handled = _HANDLED if inst is not None else _SYSTEM_HANDLED
        done = ticket is not None or type(event) not in handled
        corp_id = event.corp_id
        if event.kind == "data" and not corp_id and dec.receive_id_kind != "suite":
            corp_id = dec.receive_id  # the ciphertext names the corp when ToUserName is bare
        rec = yield dict(
            kind=event.kind,
            info_type=event.info_type,
            suite_id=event.suite_id or suite_id,
            corp_id=self._stored_corp_id(corp_id, inst),
            content_key=ev.content_key(route, dec.message),
            status="unknown" if unknown else ("processed" if done else "received"),
            suite_ticket=ticket,
            **common,
        )
        tags = dict(record_id=rec.id, instance=route, kind=event.kind, event=event.info_type)
        if rec.status == "duplicate":
            return self._duplicate(rec, tags)
        if rec.status == "received":
            if self._worker is not None:
                self._worker.submit(rec.id)
            else:
                self.process(rec.id)
        return _reply(200, "success", "accepted", **tags)

    def _check_addressee(self, inst: AuthInstance, event: ev.Event, dec: Decrypted) -> None:
        """Refuse a callback encrypted for the other URL's receiveid (§2.2).

        WeCom encrypts the template's command callbacks (指令回调URL) for the suite id and
        an app's data callbacks (数据回调URL) for the authorized corp. One route serves
        both, so the pairing is what tells a misconfigured sender (the app's events
        signed as the template's, or the reverse) from WeCom; and a data callback must
        be addressed (ToUserName) to the corp its ciphertext was encrypted for.
        """
        kind = dec.receive_id_kind
        what = f"{event.kind} callback {event.info_type}"
        if event.kind == "data" and kind == "suite":
            raise CallbackCryptoError(
                CallbackCryptoError.VALIDATE_RECEIVE_ID,
                f"{what} is encrypted for the suite id; WeCom encrypts an app's data "
                "callbacks for the authorized corp (receiveid = the corp id)",
            )
        if event.kind == "command" and kind in ("authorized_corp", "unknown"):
            raise CallbackCryptoError(
                CallbackCryptoError.VALIDATE_RECEIVE_ID,
                f"{what} is encrypted for corp {dec.receive_id}; WeCom encrypts the "
                "template's command callbacks for the suite id",
            )
        if event.kind == "data" and event.corp_id and kind in ("authorized_corp", "unknown"):
            named = self._stored_corp_id(event.corp_id, inst)
            if named != self._stored_corp_id(dec.receive_id, inst):
                raise CallbackCryptoError(
                    CallbackCryptoError.VALIDATE_RECEIVE_ID,
                    f"{what} is addressed to {event.corp_id} but encrypted for {dec.receive_id}",
                )

    def _stored_corp_id(self, corp_id: str | None, inst: AuthInstance | None) -> str | None:
        """The id the store knows the corp by: during the ID upgrade WeCom may send the
        open corp id of a corp stored under its plain one (or the reverse, docs 97104), and
        the log files the callback under the corp it belongs to."""
        if not corp_id:
            return corp_id
        auth = self.store.get_corp_auth(corp_id, inst.suite_id if inst is not None else None)
        return auth.corp_id if auth is not None else corp_id

    def _duplicate(self, rec: CallbackRecord, tags: dict[str, Any]) -> NotifyResponse:
        """Answer a repeat of a recorded callback as its first delivery deserved: ``success``.

        WeCom counts anything but HTTP 200 as a failed push and sends it again, and the
        same bytes come back when our first reply was lost or late (a proxy timeout); a
        replay gains an attacker nothing because it is never processed twice. A repeat
        of a callback whose handling ``failed`` (a transient WeCom error, say) runs that
        original again: WeCom redelivering it is the best moment to retry, and the claim
        keeps it to one run at a time (and RERUN_GAP_SECONDS apart).
        """
        reason = rec.duplicate_reason or "content"
        outcome = f"duplicate: {'replay' if reason == 'replay' else 'redelivery'}"
        if rec.duplicate_of is not None:
            with contextlib.suppress(RecordNotFound):
                original = self.store.get_callback(rec.duplicate_of)
                rested = self.now() - (original.processed_at or 0) >= RERUN_GAP_SECONDS
                if original.status == "failed" and original.kind != "verify" and rested:
                    outcome = "duplicate: rerun"  # the failed original runs again
                    if self._worker is not None:
                        self._worker.submit(original.id)
                    else:
                        self.process(original.id)
        return _reply(200, "success", outcome, **tags)

    def _ticket_of(self, inst: AuthInstance, event: ev.Event) -> tuple[str, str, int] | None:
        """What :meth:`_on_suite_ticket` would save, or None (not a ticket, unknown suite)."""
        if not isinstance(event, ev.SuiteTicketEvent):
            return None
        try:
            owner = self._suite_of(inst, event)
        except EventError:
            return None  # recorded `received`; the worker records why it fails
        return owner.suite_id, event.ticket, event.timestamp or int(self.now())

    def _check_clock(self, ts: str) -> None:
        """Refuse POSTs whose timestamp is far from now: a captured request replayed later."""
        digits = ts[1:] if ts.startswith("-") else ts  # bounded: no float overflow below
        if not (digits.isascii() and digits.isdigit() and len(digits) <= 12):
            raise RequestRejected("timestamp is not an integer of epoch seconds")
        sent = int(ts)
        skew = self.settings.max_clock_skew
        if skew and abs(self.now() - sent) > skew:
            raise RequestRejected(f"timestamp is more than {skew} s from now (stale or replayed)")

    # -- handling -----------------------------------------------------------------
    def _run_queued(self, record_id: int) -> CallbackRecord | None:
        """A worker thread's run: only a record still waiting for one, ``received`` or
        failed with an automatic retry pending. A retry timer and a sweep may both queue
        the same record; once the first run has failed it for good (40078, say), the
        second leaves it to ``qywx retry`` instead of running it again. The claim itself
        checks this, so no run can fail the record between the check and the claim."""
        return self.process(record_id, automatic=True)

    def process(
        self, record_id: int, *, force: bool = False, automatic: bool = False
    ) -> CallbackRecord | None:
        """Run the handler of one recorded callback; None if another worker holds it, or
        (``automatic``, the server's own runs) it has failed for good."""
        # One claimant per thread: a record queued twice is never run twice at once.
        worker = claimants.worker_name(self.worker_id, threading.get_ident())
        rec = self.store.claim_callback(
            record_id, worker, lease_seconds=self.lease_seconds, force=force, automatic=automatic
        )
        if rec is None:
            return None
        started = time.perf_counter()
        error: str | None = None
        retry_in: float | None = None
        with self._leases.hold(rec.id, worker):  # renewed while the handler works
            try:
                status = self._handle(rec)
            except QywxError as exc:
                status, error = "failed", exc.message
                transient = isinstance(exc, WeComTransportError) or (
                    isinstance(exc, WeComAPIError) and exc.errcode in TRANSIENT_ERRCODES
                )
                retry_in = self._retry_delay(rec) if transient else None
                if retry_in is not None:  # the mark survives the store's clip
                    kept = clip_error(error, MAX_STORED_ERROR - len(RETRYING_MARK))
                    error = f"{kept}{RETRYING_MARK}"
            except Exception as exc:  # a bug: record it rather than lose the callback
                log.exception("handler failed for callback %s", rec.id)
                status, error = "failed", f"internal error: {type(exc).__name__}"
            self.store.finish_callback(rec.id, status, error)
        if error is not None and RECOVERY_40078 in error:
            with self._health_lock:  # not under a probe that began before the failure
                self._health = None  # /healthz counts it at its next request, not 5 s later
        if retry_in is not None:  # after the claim is released, so the next run can take it
            self._retry_later(rec.id, retry_in)
        self.observer.handled(
            Handled(
                rec.id, rec.instance, rec.info_type, status, time.perf_counter() - started, error
            )
        )
        return self.store.get_callback(rec.id)

    def _event_of(self, rec: CallbackRecord) -> tuple[AuthInstance | None, ev.Event]:
        """Re-read the event from the stored (still encrypted) ciphertext.

        The signature was verified on receipt; the timestamp window is not applied
        again, so a retry hours later still works. System events have no instance.
        """
        if self._is_provider_route(rec.instance):
            assert self._provider is not None
            dec = self._provider.decrypt(rec.ciphertext)
            return None, ev.parse_event(dec.message)
        inst = self.instance(rec.instance)
        dec = self._crypto[inst.name].decrypt(rec.ciphertext, check_receive_id=False)
        return inst, ev.parse_event(dec.message)

    def _handle(self, rec: CallbackRecord) -> str:
        inst, event = self._event_of(rec)
        if inst is None:
            system = self._system_handlers().get(type(event))
            if system is None:
                return "unknown" if isinstance(event, ev.UnknownEvent) else "processed"
            system(event, rec)
            return "processed"
        handler = self._handlers().get(type(event))
        if handler is None:
            return "unknown" if isinstance(event, ev.UnknownEvent) else "processed"
        handler(inst, event, rec)
        return "processed"

    def _system_handlers(self) -> dict[type, Callable[[Any, CallbackRecord], None]]:
        """Handlers of what the system event URL receives (no template instance); the
        keys are _SYSTEM_HANDLED."""
        return {ev.AutoActivateEvent: self._on_auto_activate}

    def _on_auto_activate(self, event: ev.AutoActivateEvent, rec: CallbackRecord) -> None:
        """auto_activate (doc 95994): WeCom bound codes itself; record each account, which
        also takes its member off the unlicensed list."""
        from qywx_cli.core.store import Licence

        corp = rec.corp_id or event.corp_id
        if not corp:
            raise EventError("auto_activate without AuthCorpId")
        self.store.save_licences(
            corp,
            [
                Licence(
                    corp_id=corp,
                    user_id=a.user_id,
                    type=a.type or 1,
                    active_code=a.active_code,
                    active_time=event.timestamp,
                    expire_time=a.expire_time,
                    updated_at=rec.received_at,
                )
                for a in event.accounts
            ],
        )

    def _handlers(self) -> dict[type, Callable[[AuthInstance, Any, CallbackRecord], None]]:
        # The keys are _HANDLED, which notify reads without building this dict.
        return {
            ev.SuiteTicketEvent: self._on_suite_ticket,
            ev.CreateAuthEvent: self._on_auth_code,
            ev.ResetPermanentCodeEvent: self._on_auth_code,
            ev.ChangeAuthEvent: self._on_change_auth,
            ev.CancelAuthEvent: self._on_cancel_auth,
            ev.UnlicensedNotifyEvent: self._on_unlicensed,
        }

    def _suite_of(self, inst: AuthInstance, event: ev.Event) -> AuthInstance:
        """Several suites may share one URL (§5.1): act only on a suite we hold secrets for."""
        suite = event.suite_id or inst.suite_id
        if suite == inst.suite_id:
            return inst
        for other in self.active_instances():
            if other.suite_id == suite:
                return other
        raise EventError(f"event for suite {suite} which no active instance holds")

    def _on_suite_ticket(
        self, inst: AuthInstance, event: ev.SuiteTicketEvent, rec: CallbackRecord
    ) -> None:
        owner = self._suite_of(inst, event)
        self.store.save_suite_ticket(
            owner.suite_id, event.ticket, event.timestamp or int(self.now()), callback_id=rec.id
        )

    def _on_auth_code(
        self,
        inst: AuthInstance,
        event: ev.CreateAuthEvent | ev.ResetPermanentCodeEvent,
        rec: CallbackRecord,
    ) -> None:
        """create_auth / reset_permanent_code: exchange AuthCode for the permanent code.

        For 代开发 the permanent code *is* the app's secret (§3.2); a reset replaces it,
        so the corp's cached access token is dropped before the new one is fetched.
        AuthCode is single use (§5.5): once exchanged, the record names its corp, and a
        retry (say the corp token call failed) skips straight to the token.
        """
        owner = self._suite_of(inst, event)
        if rec.corp_id:  # a retry: did this callback already exchange its single-use code?
            done = self.store.get_corp_auth(rec.corp_id, owner.suite_id)
            if done and done.permanent_code and done.updated_at >= rec.received_at:
                self._after_install(owner, done.corp_id)
                return
        try:
            perm = self.client.get_permanent_code(
                owner.suite_id, owner.suite_secret, event.auth_code
            )
        except WeComAPIError as exc:
            if exc.errcode == 40078:  # spent (a crash after WeCom answered) or expired
                raise WeComAPIError(40078, recovery_step(rec, event), api=exc.api) from None
            raise
        # Stored in its own transaction before any other call: the code cannot be had again.
        # create_auth's <State> and v2's state are the 带参授权链接's (doc 98744).
        link_state = (getattr(event, "state", None) or perm.state) or None
        self.store.save_permanent_code(
            owner.suite_id,
            perm.corp_id,
            perm.permanent_code,
            callback_id=rec.id,
            agent_id=perm.agent_id,
            corp_name=perm.corp_name or None,
            auth_user_id=perm.auth_user_id,
            link_state=link_state,
        )
        self._after_install(owner, perm.corp_id)

    def _after_install(self, owner: AuthInstance, corp_id: str) -> None:
        """What follows a stored permanent code: agentid, a working token, app status.

        v2/get_permanent_code lists no agent (doc 100776), so v2/get_auth_info supplies
        the agentid; the corp token proves the new secret works and warms the cache;
        agent/get records whether the provider has published the app yet (doc 96448).
        Each step reads what the last one stored, so a retry resumes where it failed.
        """
        auth = self.store.get_corp_auth(corp_id, owner.suite_id)
        if auth is None or not auth.permanent_code:
            raise EventError(f"corp {corp_id} has no stored permanent code")
        if auth.agent_id is None:
            info = self.client.get_auth_info(
                owner.suite_id, owner.suite_secret, auth.corp_id, auth.permanent_code
            )
            auth = self.store.upsert_corp_auth(
                owner.suite_id,
                auth.corp_id,
                agent_id=info.agent_id,
                corp_name=info.corp_name or None,
            )
        assert auth.permanent_code is not None  # checked above; upsert keeps it
        self.client.corp_token(auth.corp_id, auth.permanent_code)
        self._read_status(auth)

    def _read_status(self, auth: CorpAuth) -> None:
        """Publish status is advice, not the install: a failed read is logged, not fatal."""
        from qywx_cli.core.provider import read_app_status

        try:
            read_app_status(self.store, self.client, auth)
        except QywxError as exc:
            log.warning("agent/get for corp %s failed: %s", auth.corp_id, exc.message)

    def _on_change_auth(
        self, inst: AuthInstance, event: ev.ChangeAuthEvent, rec: CallbackRecord
    ) -> None:
        owner = self._suite_of(inst, event)
        corp_id = event.corp_id
        auth = self.store.get_corp_auth(corp_id, owner.suite_id) if corp_id else None
        if auth is None or not auth.permanent_code:
            raise EventError(
                f"change_auth for corp {corp_id} which has no permanent code; "
                "was its create_auth processed?"
            )
        info = self.client.get_auth_info(
            owner.suite_id, owner.suite_secret, auth.corp_id, auth.permanent_code
        )
        updated = self.store.upsert_corp_auth(
            owner.suite_id,
            auth.corp_id,
            corp_name=info.corp_name or None,
            agent_id=info.agent_id,
            state="active",
        )
        self._read_status(updated)

    def _on_cancel_auth(
        self, inst: AuthInstance, event: ev.CancelAuthEvent, rec: CallbackRecord
    ) -> None:
        owner = self._suite_of(inst, event)
        if not event.corp_id:
            raise EventError("cancel_auth without AuthCorpId")
        auth = self.store.get_corp_auth(event.corp_id, owner.suite_id)  # either id form
        self.store.cancel_corp_auth(owner.suite_id, auth.corp_id if auth else event.corp_id)

    def _on_unlicensed(
        self, inst: AuthInstance, event: ev.UnlicensedNotifyEvent, rec: CallbackRecord
    ) -> None:
        """unlicensed_notify: the member is listed by ``log stats`` and ``doctor`` until a
        licence for them is recorded (docs 95716)."""
        corp = rec.corp_id or event.corp_id
        if not corp:
            raise EventError("unlicensed_notify without ToUserName")
        self.store.record_unlicensed(
            corp, event.user_id, agent_id=event.agent_id, seen_at=event.timestamp or rec.received_at
        )

    # -- retry ---------------------------------------------------------------------
    @staticmethod
    def retry_skip_reason(rec: CallbackRecord, *, force: bool = False) -> str:
        """Why :meth:`retry` would not run ``rec`` ('' when it would); for dry runs too."""
        if rec.status in ("duplicate", "rejected") or rec.kind == "verify":
            return f"{rec.status} records are not re-run"
        if rec.status == "processed" and not force:
            return "already processed (use --force to re-run)"
        if rec.status not in _RETRYABLE and not force:
            return f"status {rec.status}"
        return ""

    def retry(self, record_id: int, *, force: bool = False) -> RetryOutcome:
        """Re-run one record's handler (retryCallBack). Unknown id → RecordNotFound."""
        rec = self.store.get_callback(record_id)
        reason = self.retry_skip_reason(rec, force=force)
        if reason:
            return RetryOutcome(rec, False, reason)
        done = self.process(record_id, force=force)
        if done is None and self._release_if_ended(record_id):
            done = self.process(record_id, force=force)  # no need to wait for the lease
        if done is None:
            held = self.store.get_callback(record_id)
            until = (held.claimed_at or self.now()) + self.lease_seconds
            wait = max(0, int(until - self.now()))
            return RetryOutcome(
                held,
                False,
                f"claimed by another worker; its claim expires in {wait} s unless renewed "
                "(a killed worker's claim lapses then)",
            )
        return RetryOutcome(done, True)

    def _release_if_ended(self, record_id: int) -> bool:
        """Drop ``record_id``'s claim if its process has ended on this machine (and
        same_host_takeover is on)."""
        held = self.store.get_callback(record_id)
        if not (self.settings.same_host_takeover and isinstance(held.claimed_by, str)):
            return False
        return self._take_back([(held.id, held.claimed_by)]) == 1

    def installs_need_recovery(self) -> int:
        """Failed create_auth / reset_permanent_code records that only an operator can
        recover (:data:`RECOVERY_40078`); /healthz and doctor show the count."""
        failed = self.store.list_callbacks(status="failed", limit=10_000)
        return sum(1 for r in failed if RECOVERY_40078 in (r.last_error or ""))

    def secrets_at_rest(self) -> Verdict:
        """How the store keeps permanent codes and tokens, judged against the keys set
        (:func:`~qywx_cli.core.sealing.assess_at_rest`); ``serve`` logs it once at start
        unless it is ok."""
        from qywx_cli.core.sealing import assess_at_rest

        return assess_at_rest(self.store.secret_keys, self.store.secrets_at_rest())

    def healthcheck(self) -> dict[str, Any]:
        """What ``/healthz`` answers: ok only if a callback could be recorded now.

        The store's write probe costs one fsync, so a healthy answer is reused for
        ``health_probe_seconds`` ([serve] in qywx.toml, 5 s: a load balancer probing
        every second costs one commit in five); concurrent probes share one. A failing
        answer is not reused: a probe that cannot write commits nothing, and reusing it
        kept /healthz at 503 for up to that long after the database was back.
        ``suite_ticket_age_s`` is reported, not judged: WeCom's pushes stopping is not
        this host's fault, and neither is ``installs_need_recovery`` (installations
        whose AuthCode was spent with no permanent code stored: the operator resets the
        Secret, see RECOVERY_40078).
        """
        with self._health_lock:
            cached = self._health
            probe = (
                cached is None
                or not cached[1].get("writable")
                or self.now() - cached[0] >= self.settings.health_probe_seconds
            )
            try:
                health = self.store.healthcheck(write=probe)
            except QywxError as exc:
                health = {"ok": False, "writable": False, "error": exc.message}
            if probe and health.get("writable"):
                health["installs_need_recovery"] = self.installs_need_recovery()
            if probe or "writable" in health:  # a failed read reports writable False itself
                cached = self._health = (self.now(), health)
            else:  # reads answered: the last write probe's verdict stands
                assert cached is not None
                health = {**health, **{k: v for k, v in cached[1].items() if k in _WRITE_KEYS}}
                if not health.get("writable"):
                    health["ok"] = False
        health = dict(health)
        at = health.pop("suite_ticket_at", None)
        health["suite_ticket_age_s"] = round(self.now() - at, 1) if isinstance(at, float) else None
        return {
            **health,
            "instances": sorted(i.name for i in self.active_instances()),
            "not_loaded": sorted(self.not_loaded),
        }
