"""``qywx serve`` (the notify endpoint) and ``qywx fake-wecom`` (a local WeCom API).

``qywx serve`` runs on granian when it is installed (:mod:`qywx_cli.core.edge`), else
on waitress, a pure-Python production WSGI server with a thread pool and request
limits; ``qywx fake-wecom`` always runs on waitress. SIGINT/SIGTERM stop accepting,
let in-flight requests finish, then drain the callback workers, so an acknowledged
callback is always handled or left ``received`` for the next start.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qywx_cli.cli._errors import EXIT_OK
from qywx_cli.cli._state import globals_of
from qywx_cli.core.errors import ConfigError, QywxError, UsageError

if TYPE_CHECKING:
    from qywx_cli.core.httpserver import ServerLimits


def _setup_logging(*, verbose: bool = False, log_format: str = "text") -> None:
    if log_format not in ("text", "json"):
        raise UsageError(f"--log-format must be text or json, not {log_format!r}")
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if log_format == "json":
        from qywx_cli.core.logfmt import JsonFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    if verbose:  # accepted callbacks are logged at DEBUG (each is a row of `qywx log` anyway)
        logging.getLogger("qywx.access").setLevel(logging.DEBUG)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # psycopg_pool logs each failed attempt to connect, over two lines, several a second
    # during an outage; the PostgreSQL store logs the outage's start and end in one line.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


def _serve_forever(
    app: Any,
    host: str,
    port: int,
    threads: int,
    banner: Callable[[str], None],
    on_stop: Callable[[], None] = lambda: None,
    *,
    on_closing: Callable[[], None] = lambda: None,
    max_body: int = 8 * 1024 * 1024,
    limits: ServerLimits | None = None,
) -> None:
    """Run ``app`` on waitress until SIGINT/SIGTERM, then stop gracefully.

    ``on_closing`` runs on the signal, before waitress waits for in-flight requests (the
    fake uses it to let go of held calls); ``on_stop`` once the server is closed.
    """
    from qywx_cli.core.httpserver import DEFAULT_LIMITS, create_server

    server = create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        max_body=max_body,
        limits=limits or DEFAULT_LIMITS,
    )

    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        if not stopping.is_set():  # a second signal during shutdown is ignored
            stopping.set()
            on_closing()  # waitress waits for its threads as it handles the interrupt
            raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    try:
        banner(f"http://{server.effective_host}:{server.effective_port}")
        server.run()  # waitress finishes in-flight tasks on KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    finally:
        stopping.set()
        server.close()
        on_stop()


def _http_server(choice: str) -> str:
    """--server: granian or waitress (auto: granian when it is installed)."""
    from qywx_cli.core.edge import available

    if choice not in ("auto", "granian", "waitress"):
        raise UsageError(f"--server must be auto, granian or waitress, not {choice!r}")
    if choice == "granian" and not available():
        raise UsageError("granian is not installed: pip install 'qywx-cli[granian]'")
    if choice == "auto":
        return "granian" if available() else "waitress"
    return choice


def _webhook(url: str | None) -> str | None:
    """--alert-webhook as given: an absolute http(s) URL (never echoed, it holds a key)."""
    from qywx_cli.core.urls import split_url

    if url is None:
        return None
    parts = split_url(url)
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError("--alert-webhook must be an absolute http(s) URL")
    return url


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port (0 picks a free one).")
    ] = 8000,
    threads: Annotated[
        int,
        typer.Option(
            "--threads",
            min=1,
            max=256,
            help="waitress: HTTP worker threads; callbacks that arrive together share one "
            "commit (one fsync). granian: threads for the routes other than /notify (for "
            "every route on PostgreSQL).",
        ),
    ] = 32,
    workers: Annotated[
        int,
        typer.Option("--workers", min=1, max=64, help="Background threads handling callbacks."),
    ] = 2,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log every request, accepted ones too.")
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=0,
            max=65535,
            help="Serve Prometheus /metrics on this port (0 picks one), bound to "
            "--metrics-host. Off unless given here or as [serve] metrics_port in qywx.toml. "
            "Set QYWX_METRICS_TOKEN to serve /metrics on the public port instead, "
            "to bearer-token requests only. Needs qywx-cli[metrics].",
        ),
    ] = None,
    metrics_host: Annotated[
        str | None,
        typer.Option("--metrics-host", help="Interface of the metrics listener [127.0.0.1]."),
    ] = None,
    alert_webhook: Annotated[
        str | None,
        typer.Option(
            "--alert-webhook",
            help="POST alerts here: a WeCom group robot URL (…/cgi-bin/webhook/send?key=…, "
            "markdown) or any JSON webhook; for failed callbacks, a suite_ticket over 30 min "
            "old, a store that cannot be written, an app not online in an authorized corp "
            "[QYWX_ALERT_WEBHOOK, [serve] alert_webhook].",
        ),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            help="text, or json: one JSON object per line (time, route, status, outcome, "
            "record id, instance, latency) [[serve] log_format in qywx.toml; text].",
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Refuse to start while any instance cannot be loaded (also strict = true "
            "in qywx.toml).",
        ),
    ] = False,
    connection_limit: Annotated[
        int | None,
        typer.Option(
            "--connection-limit",
            help="Open connections at most (default 4096, or [serve] in qywx.toml); "
            "more wait in the listen backlog.",
        ),
    ] = None,
    channel_timeout: Annotated[
        float | None,
        typer.Option(
            "--channel-timeout",
            help="Seconds an idle keep-alive connection is kept (30; waitress: granian "
            "closes idle connections after --header-timeout).",
        ),
    ] = None,
    header_timeout: Annotated[
        float | None,
        typer.Option(
            "--header-timeout",
            help="Seconds a client may take to send a request's headers (10).",
        ),
    ] = None,
    body_timeout: Annotated[
        float | None,
        typer.Option(
            "--body-timeout", help="Seconds a client may take to send a request's body (30)."
        ),
    ] = None,
    server: Annotated[
        str,
        typer.Option(
            "--server",
            help="HTTP server: granian (answers callbacks from one event loop and writes "
            "them in batches; qywx-cli[granian]), waitress, or auto: granian when "
            "installed.",
        ),
    ] = "auto",
) -> int:
    """Run the notify endpoint WeCom calls: /notify/<Instance>, /notify and /healthz.

    Each instance that cannot be loaded is named on stderr with its first error (its
    callbacks would get 404); --strict exits 1 instead of serving the others.
    """
    import dataclasses

    from qywx_cli.core.instrument import instrument
    from qywx_cli.core.service import CallbackService
    from qywx_cli.core.store import display_target
    from qywx_cli.core.wsgi import MAX_BODY_BYTES, NotifyApp

    settings = globals_of(ctx).settings()
    _setup_logging(verbose=verbose, log_format=log_format or settings.log_format)
    flags: dict[str, Any] = {
        "connection_limit": connection_limit,
        "channel_timeout": channel_timeout,
        "header_timeout": header_timeout,
        "body_timeout": body_timeout,
    }
    limits = dataclasses.replace(
        settings.http_limits, **{k: v for k, v in flags.items() if v is not None}
    )
    try:
        limits.check()
    except UsageError as exc:
        raise UsageError(f"--{exc.message.replace('_', '-', 1)}") from None
    edge = _http_server(server)
    if not settings.auths_dir.is_dir():
        raise UsageError(f"no auths/ folder at {settings.auths_dir}; pass --auths DIR")
    log = logging.getLogger("qywx.serve")
    service = CallbackService(settings, threads=workers)
    for name, reason in sorted(service.not_loaded.items()):
        log.warning("instance %s not loaded: %s", name, reason)
    for diag in service.conflicts:
        log.warning("instance %s: %s", diag.instance, diag.message)
    broken = len(service.not_loaded) + len(service.conflicts)
    if broken and (strict or settings.strict):
        service.close()
        raise ConfigError(
            f"{broken} instance problem(s) above and strict mode is on; fix them "
            f"(qywx validate {settings.auths_dir}) or start without --strict"
        )
    if not service.active_instances():
        service.close()
        raise ConfigError(
            f"no valid active instance in {settings.auths_dir}; "
            f"run `qywx validate {settings.auths_dir}`"
        )
    try:
        attached = instrument(
            service,
            metrics_port=metrics_port if metrics_port is not None else settings.metrics_port,
            metrics_host=metrics_host or settings.metrics_host,
            metrics_token=settings.metrics_token,
            alert_webhook=_webhook(alert_webhook) or settings.alert_webhook,
        )
    except QywxError:
        service.close()
        raise
    resumed = service.start()

    def banner(url: str) -> None:
        names = ", ".join(sorted(i.name for i in service.active_instances()))
        skipped = (
            f"; NOT loaded: {', '.join(sorted(service.not_loaded))}" if service.not_loaded else ""
        )
        log.info(
            "listening on %s (instances: %s%s; db: %s; WeCom API: %s)",
            url,
            names,
            skipped,
            display_target(settings.db_path),
            settings.api_base,
        )
        for line in attached.describe():
            log.info("%s", line)
        if resumed:
            log.info("resuming %d callback(s) acknowledged before the last stop", resumed)
        try:
            secrets = service.secrets_at_rest()
        except QywxError as exc:
            log.warning("secrets at rest not checked: %s", exc.message)
        else:
            if secrets.status != "ok":
                log.warning("%s; %s", secrets.detail, secrets.fix)
        health = service.healthcheck()
        if not health.get("writable"):
            log.warning(
                "the database cannot be written (%s): every callback will get 503 and "
                "/healthz reports unhealthy until it can",
                health.get("error", "unknown error"),
            )

    def on_stop() -> None:
        log.info("stopping: finishing queued callbacks")
        service.drain()
        attached.close()
        service.close()

    if edge == "granian":
        from qywx_cli.core.edge import serve_granian

        notify = NotifyApp(service)
        serve_granian(
            notify,
            attached.wrap(notify),
            host=host,
            port=port,
            threads=threads,
            banner=banner,
            on_stop=on_stop,
            max_body=MAX_BODY_BYTES,
            limits=limits,
        )
        return EXIT_OK
    # waitress refuses bodies over the cap with 413 before buffering them; NotifyApp
    # checks again so the limit holds under any WSGI server.
    _serve_forever(
        attached.wrap(NotifyApp(service)),
        host,
        port,
        threads,
        banner,
        on_stop,
        max_body=MAX_BODY_BYTES,
        limits=limits,
    )
    return EXIT_OK


def fake_wecom(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0 picks a free one).")] = 8001,
    token_ttl: Annotated[
        int,
        typer.Option(
            "--token-ttl",
            min=1,
            max=30 * 86400,
            help="Seconds before issued tokens expire (1 to 30 days; WeCom: 7200).",
        ),
    ] = 7200,
    strict: Annotated[
        bool, typer.Option("--strict", help="Only accept suite_tickets this fake pushed.")
    ] = False,
    push_to: Annotated[
        str | None,
        typer.Option("--push-to", help="Notify URL to push signed suite_ticket callbacks to."),
    ] = None,
    auth: Annotated[
        str | None, typer.Option("--auth", help="Instance whose suite/token/key sign the pushes.")
    ] = None,
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between suite_ticket pushes (WeCom: 600).")
    ] = 600.0,
    provider_secret_env: Annotated[
        str | None,
        typer.Option(
            "--provider-secret-env",
            metavar="VAR",
            help="Accept only the provider_secret in $VAR (default: any non-empty one).",
        ),
    ] = None,
    slow: Annotated[
        list[str] | None,
        typer.Option(
            "--slow",
            metavar="API[@after]=SECONDS",
            help="Every call of API waits SECONDS (before the fake acts, or @after: only "
            "the answer waits); repeatable. Also POST /fake/slow at run time.",
        ),
    ] = None,
) -> int:
    """Run a local stand-in for WeCom's server API (use with QYWX_API_BASE=…/cgi-bin).

    Besides WeCom's paths it serves /fake/… controls: /fake/state, /fake/faults,
    /fake/slow and /fake/holds (slow or held calls; /fake/release lets them go),
    /fake/codes, /fake/auth_codes, /fake/scan (a corp scans an authorization link),
    /fake/agents (publish the app in a corp), /fake/jsapi/verify (the front end's check
    of a wx.config / wx.agentConfig signature).
    """
    from qywx_cli.core.config import find_instance
    from qywx_cli.core.fakewecom import FakeWeCom

    _setup_logging()
    if push_to and not auth:
        raise UsageError("--push-to needs --auth NAME (whose suite id, token and key sign pushes)")
    if not 0 < interval <= 86400:  # NaN fails both
        raise UsageError("--interval must be from more than 0 to 86400 seconds")
    if push_to:
        from qywx_cli.core.simulate import target_url

        push_to = target_url(push_to, "--push-to")
    instance = find_instance(auth, globals_of(ctx).settings().auths_dir) if auth else None
    provider_secret = None
    if provider_secret_env is not None:
        provider_secret = os.environ.get(provider_secret_env) or None
        if provider_secret is None:
            raise UsageError(f"--provider-secret-env: ${provider_secret_env} is not set")
    fake = FakeWeCom(token_ttl=token_ttl, strict=strict, provider_secret=provider_secret)
    for spec in slow or []:
        api, stage, seconds = _slow_spec(spec)
        fake.set_delay(api, seconds, stage=stage)
    stop_pushing = threading.Event()
    log = logging.getLogger("qywx.fake-wecom")

    def pushed(result: Any) -> None:
        """Report each push as WeCom's console would: only the body ``success`` counts."""
        if isinstance(result, QywxError):
            log.warning("%s", result.message)
        elif result.status_code != 200 or result.content != b"success":
            log.warning(
                "suite_ticket push answered HTTP %d %r; WeCom expects exactly 'success'",
                result.status_code,
                result.content[:60],
            )
        else:
            log.info("suite_ticket pushed: success")

    def banner(url: str) -> None:
        log.info("fake WeCom API on %s/cgi-bin (export QYWX_API_BASE=%s/cgi-bin)", url, url)
        if push_to and instance is not None:
            log.info(
                "pushing suite_ticket for %s to %s every %ss", instance.suite_id, push_to, interval
            )
            threading.Thread(
                target=fake.run_ticket_pusher,
                args=(push_to, instance, interval, stop_pushing),
                kwargs={"on_push": pushed},
                name="qywx-ticket-pusher",
                daemon=True,
            ).start()

    _serve_forever(fake, host, port, 8, banner, stop_pushing.set, on_closing=fake.close)
    return EXIT_OK


def _slow_spec(spec: str) -> tuple[str, str, float]:
    """``get_permanent_code=2`` or ``get_permanent_code@after=0.5`` → (api, stage, s)."""
    target, sep, value = spec.partition("=")
    api, _, stage = target.partition("@")
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not sep or not api.strip() or seconds < 0:
        raise UsageError(f"--slow {spec!r}: expected API[@before|@after]=SECONDS")
    return api.strip(), stage.strip() or "before", seconds


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("fake-wecom")(fake_wecom)
