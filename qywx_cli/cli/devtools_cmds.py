"""``qywx simulate-callback``, ``qywx decrypt`` and ``qywx encrypt``: WeCom without WeCom.

The commands only parse options and render; building, sending, judging and decrypting
live in ``qywx_cli.core.simulate`` and ``qywx_cli.core.capture``. Exit codes follow the
CLI contract: 0 the endpoint answered as WeCom expects / the capture decrypted, 1 it did
not (wrong reply, slow, unreachable, a tamper accepted, bad signature), 2 usage.
"""

from __future__ import annotations

import contextlib
import functools
import shlex
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qywx_cli.cli._errors import EXIT_FAILED, EXIT_INTERRUPTED_SHOWN, EXIT_OK
from qywx_cli.cli._output import Format, emit_json, note, table
from qywx_cli.cli._state import globals_of
from qywx_cli.core.errors import CallbackCryptoError, ConfigError, QywxError, UsageError

if TYPE_CHECKING:
    from qywx_cli.core.capture import OpenedRequest
    from qywx_cli.core.config import AuthInstance
    from qywx_cli.core.crypto import WXBizMsgCrypt
    from qywx_cli.core.settings import Settings
    from qywx_cli.core.simulate import (
        CallbackSimulator,
        EventSpec,
        Exchange,
        LoadSummary,
        SimulatedRequest,
        TamperReport,
    )

MAX_INPUT_BYTES = 4 * 1024 * 1024
_CORP_EVENTS = (
    "change_auth",
    "cancel_auth",
    "change_contact",
    "change_external_contact",
    "change_app_admin",
    "batch_job_result",
    "enter_agent",
    "text",
)


# -- shared helpers -------------------------------------------------------------------------


def _read_input(source: str, what: str) -> bytes:
    """FILE or ``-`` (stdin), capped so a wrong file cannot eat memory."""
    try:
        if source == "-":
            if sys.stdin is None:
                raise UsageError(f"cannot read {what} -: standard input is closed")
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with open(source, "rb") as fh:
                data = fh.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {source}: {exc.strerror}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise UsageError(f"{what} {source} is larger than {MAX_INPUT_BYTES} bytes")
    return data


def _fields_of(xml: str) -> dict[str, str]:
    from qywx_cli.core.xmlsafe import element_fields, parse_xml

    try:
        return element_fields(parse_xml(xml))
    except CallbackCryptoError:
        return {}


def _masked(fields: Mapping[str, str], show_secrets: bool) -> dict[str, str]:
    from qywx_cli.core.events import mask_fields

    return mask_fields(dict(fields), show_secrets)


def _fields_table(title: str, fields: dict[str, str]) -> None:
    if fields:
        table(title, ["field", "value"], [[k, v] for k, v in fields.items()])


def _load_instance(ctx: typer.Context, auth: str) -> tuple[AuthInstance, Settings]:
    from qywx_cli.core.config import find_instance

    settings = globals_of(ctx).settings()
    # Signing and decrypting need only the token and EncodingAESKey (§1), not the secret.
    return find_instance(auth, settings.auths_dir, need_secret=False), settings


# -- simulate-callback ----------------------------------------------------------------------


def _describe(request: SimulatedRequest, event: str | None, origin: str) -> str:
    what = (
        "URL verification (GET echostr handshake)"
        if request.kind == "verify_url"
        else (f"event {event}" if event else "plaintext from --xml")
    )
    return f"{what}; receiveid {request.receive_id} ({origin})"


def _curl(request: SimulatedRequest) -> str:
    parts = ["curl", "-sS", "-X", request.method]
    for name, value in request.headers:
        parts += ["-H", f"{name}: {value}"]
    if request.body is not None:
        parts += ["--data-binary", request.body]
    parts.append(request.url)
    return " ".join(shlex.quote(p) for p in parts)


def _show_request(
    request: SimulatedRequest, event: str | None, origin: str, show_secrets: bool
) -> None:
    print(f"→ {request.method} {request.url}")
    print(f"  {_describe(request, event, origin)}")
    if request.kind == "verify_url":
        print(f"  echostr plaintext (the reply WeCom expects): {request.plaintext}")
    else:
        _fields_table("Plaintext fields", _masked(_fields_of(request.plaintext), show_secrets))


def _exchange_doc(ex: Exchange, show_secrets: bool) -> dict[str, Any]:
    """``Exchange.as_dict`` with SuiteTicket/AuthCode masked in the plaintext, as text shows it.

    (A dry run prints the request unmasked: it is the exact request, to replay.)
    """
    from qywx_cli.core.capture import mask_plaintext

    doc = ex.as_dict()
    if not show_secrets and ex.request.kind != "verify_url":
        doc["request"]["plaintext"] = mask_plaintext(ex.request.plaintext)
    return doc


def _render_exchange(
    ex: Exchange, event: str | None, origin: str, show_secrets: bool, fmt: Format
) -> int:
    if fmt is Format.json:
        emit_json(_exchange_doc(ex, show_secrets))
        if ex.reply is None:
            note(f"qywx: error: {ex.reason}")
        return EXIT_OK if ex.ok else EXIT_FAILED
    if ex.reply is None:
        note(f"qywx: error: {ex.reason}")
        return EXIT_FAILED
    _show_request(ex.request, event, origin, show_secrets)
    ms = ex.reply.latency * 1000
    print(f"← HTTP {ex.reply.status} in {ms:.1f} ms: {ex.reply.preview!r}")
    mark = "✓" if ex.ok else "✗"
    print(f"{mark} {ex.verdict}: {ex.reason}")
    return EXIT_OK if ex.ok else EXIT_FAILED


def _render_load(summary: LoadSummary, url: str, fmt: Format) -> int:
    if fmt is Format.json:
        emit_json({"url": url, **summary.as_dict()})
    else:
        lat = summary.latency_ms()
        rate = f", rate ≤ {summary.rate:g}/s" if summary.rate else ""
        print(
            f"Load → {url}: {summary.requested} requests, concurrency {summary.concurrency}{rate}"
        )
        table(
            None,
            ["figure", "value"],
            [
                ["sent", summary.sent],
                ["ok", summary.ok],
                ["wrong reply", summary.wrong],
                ["slow", summary.slow],
                ["errors", summary.errors],
                ["duration", f"{summary.duration:.3f} s"],
                ["throughput", f"{summary.throughput:.1f} req/s"],
                ["latency p50", f"{lat['p50']:.2f} ms"],
                ["latency p90", f"{lat['p90']:.2f} ms"],
                ["latency p99", f"{lat['p99']:.2f} ms"],
                ["latency max", f"{lat['max']:.2f} ms"],
            ],
        )
        if summary.failures:
            table(
                "Most frequent failures", ["count", "reason"], [[n, r] for r, n in summary.failures]
            )
        if summary.interrupted:
            print(f"✗ interrupted after {summary.sent} of {summary.requested} requests")
        elif summary.all_ok:
            print(f"✓ all {summary.requested} requests answered as WeCom expects")
        else:
            print(f"✗ {summary.requested - summary.ok} of {summary.requested} requests not ok")
    if summary.interrupted:
        return EXIT_INTERRUPTED_SHOWN  # the summary says so
    return EXIT_OK if summary.all_ok else EXIT_FAILED


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _render_tamper(report: TamperReport, url: str, fmt: Format, show_secrets: bool) -> int:
    if fmt is Format.json:
        doc = {"url": url, **report.as_dict()}
        doc["baseline"] = _exchange_doc(report.baseline, show_secrets)
        emit_json(doc)
        return EXIT_OK if report.all_rejected else EXIT_FAILED
    base = report.baseline
    rows: list[list[Any]] = [
        [
            "(valid control)",
            1,
            base.reply.status if base.reply else "-",
            _short(base.reply.preview) if base.reply else base.reason,
            "accepted (ok)" if base.ok else f"NOT ACCEPTED: {base.reason}",
        ]
    ]
    for r in report.results:
        rows.append(
            [
                r.case,
                r.sent,
                r.reply.status if r.reply else "-",
                _short(r.reply.preview) if r.reply else (r.error or ""),
                r.verdict + (f" ({r.note})" if r.note else ""),
            ]
        )
    print(f"Tamper check → {url}")
    table(None, ["case", "sent", "status", "body", "verdict"], rows)
    accepted = [r.case for r in report.results if r.reply is not None and not r.passed]
    errors = [r.case for r in report.results if r.reply is None]
    if not base.ok:
        print(
            "✗ the valid control request was not accepted, so these results prove nothing: "
            "check the URL, the instance's token and key, and the receiveid"
        )
    elif accepted:
        print(f"✗ {len(accepted)} tampered request(s) ACCEPTED: {', '.join(accepted)}")
    elif errors:
        print(f"✗ no reply for: {', '.join(errors)}")
    else:
        print(f"✓ all {len(report.results)} tampered request(s) rejected or harmless")
    return EXIT_OK if report.all_rejected else EXIT_FAILED


def _progress_load(run: Any, total: int, fmt: Format) -> LoadSummary:
    """Run the load with a progress bar on stderr (none in json mode)."""
    if fmt is Format.json:
        summary: LoadSummary = run(None)
        return summary
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("sending"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("load", total=total)
        summary = run(lambda done: progress.update(task, completed=done))
    return summary


def _read_xml(path: Path) -> str:
    """``--xml``: any UTF-8 XML the safe parser accepts (WeCom's plaintext is always XML)."""
    from qywx_cli.core.xmlsafe import parse_xml

    raw = _read_input(str(path), "--xml file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"--xml {path}: not UTF-8") from None
    try:
        parse_xml(text)
    except CallbackCryptoError as exc:
        raise UsageError(f"--xml {path}: {exc.message}") from None
    return text


def _builder(
    simulator: CallbackSimulator,
    instance: AuthInstance,
    settings: Settings,
    *,
    verify_url: bool,
    receive_id: str | None,
    info_type: str | None,
    corp_id: str | None,
    overrides: dict[str, str],
    xml: Path | None,
) -> tuple[Callable[[], SimulatedRequest], EventSpec | None, str]:
    """What to send: a factory of fresh requests, the event spec, and whose receiveid it is."""
    from qywx_cli.core.simulate import EventSpec

    if verify_url:
        # §2.2: WeCom encrypts the handshake for the provider's corp id.
        rid, origin = next(
            (value, why)
            for value, why in (
                (receive_id, "--receive-id"),
                (settings.provider_corp_id, "the provider corp id"),
                (instance.corp_id, "the instance's corpId"),
                (instance.suite_id, "the suite id"),
            )
            if value
        )
        return (lambda: simulator.handshake(rid)), None, origin
    from qywx_cli.core.events import DATA_EVENT_NAMES

    # §2.2: command callbacks carry the suite id, the app's data callbacks the corp.
    data = info_type in DATA_EVENT_NAMES and corp_id is not None
    default_rid = corp_id if data and corp_id else instance.suite_id
    spec = EventSpec(
        receive_id=receive_id or default_rid,
        info_type=info_type,
        corp_id=corp_id,
        overrides=overrides,
        xml=None if xml is None else _read_xml(xml),
    )
    origin = "--receive-id" if receive_id else ("the corp id" if data else "the suite id")
    return (lambda: simulator.callback(spec)), spec, origin


def _provider_builder(
    simulator: CallbackSimulator,
    provider_corp_id: str,
    *,
    verify_url: bool,
    receive_id: str | None,
    info_type: str | None,
    corp_id: str | None,
    overrides: dict[str, str],
    xml: Path | None,
) -> tuple[Callable[[], SimulatedRequest], EventSpec | None, str]:
    """:func:`_builder` for the system event URL: receiveid the provider corp id (§7.2)."""
    from qywx_cli.core.simulate import EventSpec

    rid = receive_id or provider_corp_id
    origin = "--receive-id" if receive_id else "the provider corp id"
    if verify_url:
        return (lambda: simulator.handshake(rid)), None, origin
    spec = EventSpec(
        receive_id=rid,
        info_type=info_type,
        corp_id=corp_id,
        overrides=overrides,
        xml=None if xml is None else _read_xml(xml),
        system=True,
    )
    return (lambda: simulator.callback(spec)), spec, origin


def simulate_callback(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url", metavar="URL", help="Callback endpoint to call.")],
    auth: Annotated[
        str | None,
        typer.Option(
            "--auth", metavar="NAME", help="Instance name in auths/, or a path to its folder."
        ),
    ] = None,
    provider: Annotated[
        bool,
        typer.Option(
            "--provider",
            help="Sign with the provider's system-event key (provider_token, "
            "provider_encoding_aes_key) instead of an instance's; events "
            "license_pay_success (default), license_refund, auto_activate.",
        ),
    ] = False,
    event: Annotated[
        str | None,
        typer.Option(
            "--event",
            metavar="EVENT",
            help="suite_ticket (default), create_auth, change_auth, cancel_auth, "
            "reset_permanent_code, change_contact; data callbacks to the app (receiveid "
            "the corp): change_external_contact, change_app_admin, batch_job_result, "
            "enter_agent, text.",
            show_default=False,
        ),
    ] = None,
    verify_url: Annotated[
        bool, typer.Option("--verify-url", help="Send the GET echostr URL handshake instead.")
    ] = False,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="FIELD=VALUE",
            help="Field=Value: override or add a plaintext field (repeatable).",
        ),
    ] = None,
    xml: Annotated[
        Path | None,
        typer.Option(
            "--xml", metavar="FILE", help="Send this plaintext XML file instead of --event."
        ),
    ] = None,
    corp_id: Annotated[
        str | None,
        typer.Option(
            "--corp-id",
            metavar="CORP_ID",
            help="AuthCorpId / AuthCode corp (default: the instance's).",
        ),
    ] = None,
    receive_id: Annotated[
        str | None,
        typer.Option(
            "--receive-id",
            metavar="ID",
            help="receiveid inside the ciphertext (default: suite id, the corp for data "
            "callbacks; for --verify-url "
            "the provider corp id, else the instance's corpId, else the suite id).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the request instead of sending it.")
    ] = False,
    count: Annotated[
        int | None, typer.Option("--count", metavar="N", help="Load mode: send N fresh requests.")
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", metavar="C", help="Load mode: parallel connections."),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option("--rate", metavar="R", help="Load mode: at most R requests per second."),
    ] = None,
    tamper: Annotated[
        str | None,
        typer.Option(
            "--tamper",
            metavar="CASE[,CASE]|all",
            help="Send broken callbacks: bad-signature, stale-timestamp, wrong-receiveid, "
            "bad-padding, truncated, replay (comma-separated), or all.",
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option("--timeout", metavar="SECONDS", help="Reply deadline in seconds (WeCom: 1)."),
    ] = 1.0,
    show_secrets: Annotated[
        bool,
        typer.Option(
            "--show-secrets",
            help="Show SuiteTicket/AuthCode unmasked (--dry-run json prints the exact request).",
        ),
    ] = False,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.text,
) -> int:
    """Send a correctly signed WeCom callback to URL and judge the reply as WeCom would.

    A command callback passes only with HTTP 200 and the exact body `success` within
    --timeout; the handshake only with the exact echostr plaintext. Modes: --dry-run
    prints the request, --count/--concurrency/--rate is a load generator, --tamper sends
    broken requests a secure endpoint must refuse. Exit 0 ok, 1 not ok, 2 usage.
    """
    from qywx_cli.core import simulate as sim

    modes = [
        n
        for n, on in (
            ("--dry-run", dry_run),
            ("--count", count is not None),
            ("--tamper", tamper is not None),
        )
        if on
    ]
    if len(modes) > 1:
        raise UsageError(f"{' and '.join(modes)} cannot be combined")
    if count is None and (concurrency is not None or rate is not None):
        raise UsageError("--concurrency and --rate need --count")
    if not 0 < timeout <= 60:
        raise UsageError("--timeout must be between 0 and 60 seconds")
    if verify_url:
        extra = [
            n
            for n, v in (
                ("--event", event),
                ("--set", overrides),
                ("--xml", xml),
                ("--corp-id", corp_id),
                ("--tamper", tamper),
            )
            if v
        ]
        if extra:
            raise UsageError(f"--verify-url sends the GET handshake; drop {', '.join(extra)}")
    if xml is not None and (event is not None or overrides):
        raise UsageError("--xml sends your file as is; drop --event/--set (edit the file)")
    if count is not None:
        sim.check_load_bounds(count, 1 if concurrency is None else concurrency, rate)

    if provider:
        if auth is not None:
            raise UsageError("--provider signs with the provider's key; drop --auth")
        settings = globals_of(ctx).settings()
        if not settings.has_provider_callbacks:
            raise ConfigError(
                "--provider needs provider_token, provider_encoding_aes_key and "
                "provider_corp_id in qywx.toml or QYWX_PROVIDER_* variables"
            )
        assert settings.provider_token and settings.provider_encoding_aes_key
        assert settings.provider_corp_id
        simulator = sim.CallbackSimulator.for_provider(
            settings.provider_token,
            settings.provider_encoding_aes_key,
            settings.provider_corp_id,
            url,
        )
        info_type = None if xml is not None else (event or "license_pay_success")
        if info_type is not None and not verify_url and not corp_id:
            raise UsageError(f"--event {info_type} needs --corp-id (the AuthCorpId)")
        build, spec, origin = _provider_builder(
            simulator,
            settings.provider_corp_id,
            verify_url=verify_url,
            receive_id=receive_id,
            info_type=info_type,
            corp_id=corp_id,
            overrides=sim.parse_overrides(overrides or []),
            xml=xml,
        )
    else:
        if auth is None:
            raise UsageError("--auth NAME is required (or --provider for the system event URL)")
        instance, settings = _load_instance(ctx, auth)
        simulator = sim.CallbackSimulator.for_instance(instance, url)
        info_type = None if xml is not None else (event or "suite_ticket")
        corp = corp_id or instance.corp_id
        if info_type in _CORP_EVENTS and not corp:
            raise UsageError(
                f"--event {info_type} needs --corp-id (instance {instance.name} has none)"
            )
        build, spec, origin = _builder(
            simulator,
            instance,
            settings,
            verify_url=verify_url,
            receive_id=receive_id,
            info_type=info_type,
            corp_id=corp,
            overrides=sim.parse_overrides(overrides or []),
            xml=xml,
        )
    first = build()  # usage problems (bad --set) surface before anything is sent
    if dry_run:
        if fmt is Format.json:
            emit_json({"kind": first.kind, **first.as_dict()})
        else:
            _show_request(first, info_type, origin, show_secrets)
            print("  headers: " + "; ".join(f"{k}: {v}" for k, v in first.headers))
            if first.body is not None:
                print(f"  body: {first.body}")
            print(_curl(first))
        return EXIT_OK

    http_timeout = max(sim.DEFAULT_HTTP_TIMEOUT, timeout * 3)
    if count is not None:
        workers = 1 if concurrency is None else concurrency
        with sim.make_client(workers, http_timeout) as client:
            summary = _progress_load(
                lambda progress: sim.run_load(
                    build,
                    client,
                    count=count,
                    concurrency=workers,
                    rate=rate,
                    timeout=timeout,
                    progress=progress,
                ),
                count,
                fmt,
            )
        return _render_load(summary, simulator.url, fmt)
    if tamper is not None:
        assert spec is not None
        names = (
            list(sim.TAMPER_CASES)
            if tamper.strip() == "all"
            else [n.strip() for n in tamper.split(",") if n.strip()]
        )
        with contextlib.ExitStack() as stack:
            client = stack.enter_context(sim.make_client(1, http_timeout))
            handled = None
            from qywx_cli.core.store import local_file, open_store

            db = settings.db_path
            path = local_file(db)
            if path is None or path.is_file():  # the endpoint may be a qywx serve on it
                store = stack.enter_context(open_store(db, keys=settings.secret_keys))
                handled = functools.partial(sim.handled_in_log, store)
            report = sim.run_tamper(
                simulator, client, names, spec, timeout=timeout, handled_count=handled
            )
        return _render_tamper(report, simulator.url, fmt, show_secrets)
    with sim.make_client(1, http_timeout) as client:
        exchange = sim.send(client, first, timeout=timeout)
    code = _render_exchange(exchange, info_type, origin, show_secrets, fmt)
    hint = None if provider else sim.route_hint(simulator.url, instance.name, exchange.reply)
    if hint:
        note(f"qywx: hint: {hint}")
    return code


# -- decrypt / encrypt ----------------------------------------------------------------------

_AuthOpt = Annotated[
    str | None,
    typer.Option(
        "--auth", metavar="NAME", help="Instance name in auths/, or a path to its folder."
    ),
]
_TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        metavar="TOKEN",
        envvar="QYWX_TOKEN",
        help="Callback token, instead of --auth (visible in shell history: prefer the "
        "QYWX_TOKEN environment variable).",
        show_envvar=False,
    ),
]
_KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--encoding-aes-key",
        metavar="KEY",
        envvar="QYWX_ENCODING_AES_KEY",
        help="EncodingAESKey, instead of --auth (or QYWX_ENCODING_AES_KEY).",
        show_envvar=False,
    ),
]


def _crypto_for(
    ctx: typer.Context, auth: str | None, token: str | None, key: str | None
) -> tuple[WXBizMsgCrypt, AuthInstance | None]:
    """The instance's crypto (receiveids classified) or one from --token/--encoding-aes-key."""
    from qywx_cli.core.crypto import WXBizMsgCrypt

    if auth:
        instance, settings = _load_instance(ctx, auth)
        receive_ids = instance.receive_ids(
            _authorized_corps(settings, instance.suite_id),
            provider_corp_id=settings.provider_corp_id,
        )
        return instance.crypto(receive_ids), instance
    if not (token and key):
        raise UsageError("give --auth NAME, or both --token and --encoding-aes-key")
    try:
        return WXBizMsgCrypt(token, key, {}), None
    except CallbackCryptoError as exc:
        raise UsageError(f"--encoding-aes-key: {exc.message}") from None


def _authorized_corps(settings: Settings, suite_id: str) -> list[str]:
    """Corps authorized for the suite, if a database exists (never creates one)."""
    from qywx_cli.core.store import display_target, local_file, open_store

    path = local_file(settings.db_path)
    if path is not None and not path.is_file():
        return []
    try:
        with open_store(settings.db_path, keys=settings.secret_keys) as store:
            return [c.corp_id for c in store.list_corp_auths(suite_id)]
    except QywxError as exc:
        shown = display_target(settings.db_path)
        note(f"qywx: warning: authorized corps not read from {shown}: {exc.message}")
        return []


def _render_opened(opened: OpenedRequest, method: str, show_secrets: bool, fmt: Format) -> None:
    from qywx_cli.core.capture import mask_plaintext

    plaintext = opened.plaintext if show_secrets else mask_plaintext(opened.plaintext)
    fields = _masked(opened.fields, show_secrets)
    if fmt is Format.json:
        emit_json(
            {
                "ok": True,
                "kind": opened.kind,
                "method": method,
                "signature_valid": opened.signature_valid,
                "receive_id": opened.receive_id,
                "receive_id_kind": opened.receive_id_kind,
                "info_type": opened.info_type,
                "plaintext": plaintext,
                "fields": fields,
                "warnings": list(opened.warnings),
            }
        )
        return
    what = "URL verification (GET echostr)" if opened.kind == "verify_url" else "callback (POST)"
    print(f"kind:       {what}")
    print(f"signature:  {'valid' if opened.signature_valid else 'INVALID (--no-verify)'}")
    print(f"receiveid:  {opened.receive_id} ({opened.receive_id_kind})")
    if opened.info_type:
        print(f"info type:  {opened.info_type}")
    _fields_table("Fields", fields)
    print(plaintext)


def decrypt(
    ctx: typer.Context,
    source: Annotated[
        str | None,
        typer.Argument(
            metavar="[FILE|-]",
            help="FILE or - (stdin): the POST body, or a raw HTTP request dump "
            "(request line, headers, blank line, body).",
            show_default=False,
        ),
    ] = None,
    auth: _AuthOpt = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", metavar="URL", help="Captured request URL (or just its query string)."
        ),
    ] = None,
    msg_signature: Annotated[
        str | None,
        typer.Option(
            "--msg-signature",
            metavar="SIG",
            help="msg_signature of the captured query (with --timestamp and --nonce).",
        ),
    ] = None,
    timestamp: Annotated[
        str | None,
        typer.Option("--timestamp", metavar="TS", help="timestamp of the captured query."),
    ] = None,
    nonce: Annotated[
        str | None, typer.Option("--nonce", metavar="NONCE", help="nonce of the captured query.")
    ] = None,
    echostr: Annotated[
        str | None,
        typer.Option("--echostr", metavar="E", help="echostr of a GET handshake (URL-decoded)."),
    ] = None,
    token: _TokenOpt = None,
    encoding_aes_key: _KeyOpt = None,
    no_verify: Annotated[
        bool,
        typer.Option("--no-verify", help="Decrypt even if the signature does not match."),
    ] = False,
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="Show SuiteTicket/AuthCode unmasked.")
    ] = False,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.text,
) -> int:
    """Verify and decrypt a captured WeCom request (URL + body, parts, or a request dump).

    Exit 0 decrypted (with --no-verify also when the signature failed, reported as
    signature_valid false), 1 bad signature or undecryptable (json: {"ok": false,
    "error": {"code", "message"}}), 2 usage. Credentials in the plaintext are masked
    unless --show-secrets.
    """
    from qywx_cli.core import capture

    data = _read_input(source, "input") if source is not None else None
    parts_given = [
        n
        for n, v in (
            ("--msg-signature", msg_signature),
            ("--timestamp", timestamp),
            ("--nonce", nonce),
            ("--echostr", echostr),
        )
        if v is not None
    ]
    if data is not None and capture.looks_like_http_request(data):
        if url is not None or parts_given:
            raise UsageError("the request dump carries its own query; drop --url and the parts")
        captured = capture.from_http_dump(data)
    elif url is not None:
        if parts_given:
            raise UsageError(f"--url carries the query; drop {', '.join(parts_given)}")
        captured = capture.from_url(url, body=data)
    elif parts_given:
        if msg_signature is None or timestamp is None or nonce is None:
            raise UsageError("--msg-signature, --timestamp and --nonce go together")
        captured = capture.from_parts(msg_signature, timestamp, nonce, echostr=echostr, body=data)
    else:
        raise UsageError(
            "nothing to decrypt: give --url URL [FILE|-], or --msg-signature --timestamp "
            "--nonce with --echostr or FILE|-, or a raw HTTP request dump FILE"
        )
    crypto, _ = _crypto_for(ctx, auth, token, encoding_aes_key)
    try:
        opened = capture.open_captured(captured, crypto, verify=not no_verify)
    except CallbackCryptoError as exc:
        if exc.wecom_code == CallbackCryptoError.VALIDATE_SIGNATURE:
            # Say what usually causes it; the code stays WeCom's.
            exc = CallbackCryptoError(
                exc.wecom_code,
                "wrong token, or the query and the body come from different requests "
                "(--no-verify decrypts anyway)",
            )
        if fmt is not Format.json:
            raise exc from None
        emit_json({"ok": False, "error": {"code": exc.wecom_code, "message": exc.message}})
        note(f"qywx: error: {exc.message}")
        return EXIT_FAILED
    for warning in opened.warnings:
        note(f"qywx: warning: {warning}")
    if not opened.signature_valid:
        note("qywx: warning: signature mismatch (-40001); decrypted anyway (--no-verify)")
    _render_opened(opened, captured.method, show_secrets, fmt)
    return EXIT_OK


def encrypt(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Argument(
            metavar="FILE|-", help="Plaintext XML FILE or - (stdin); encrypted byte for byte."
        ),
    ],
    auth: _AuthOpt = None,
    receive_id: Annotated[
        str | None,
        typer.Option(
            "--receive-id", metavar="ID", help="receiveid to embed (default: the suite id)."
        ),
    ] = None,
    timestamp: Annotated[
        str | None,
        typer.Option("--timestamp", metavar="TS", help="Default: now.", show_default=False),
    ] = None,
    nonce: Annotated[
        str | None,
        typer.Option(
            "--nonce", metavar="NONCE", help="Default: random digits.", show_default=False
        ),
    ] = None,
    token: _TokenOpt = None,
    encoding_aes_key: _KeyOpt = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.text,
) -> int:
    """Encrypt and sign a plaintext as WeCom would: prints the POST body and the query."""
    import secrets
    import time
    from urllib.parse import urlencode

    crypto, instance = _crypto_for(ctx, auth, token, encoding_aes_key)
    rid = receive_id or (instance.suite_id if instance else None)
    if rid is None:
        raise UsageError("--receive-id is required with --token/--encoding-aes-key")
    ts = timestamp if timestamp is not None else str(int(time.time()))
    if not ts.isascii() or not ts.isdigit():
        raise UsageError("--timestamp must be whole seconds since the epoch")
    nc = nonce if nonce is not None else str(1_000_000_000 + secrets.randbelow(9_000_000_000))
    if not nc:
        raise UsageError("--nonce must not be empty")
    message = _read_input(source, "plaintext")
    envelope = crypto.encrypt_msg(message, rid, ts, nc)
    body = envelope.request_xml(instance.suite_id if instance else rid, "")
    query = urlencode(envelope.query())
    if fmt is Format.json:
        emit_json(
            {
                "encrypt": envelope.encrypt,
                "msg_signature": envelope.msg_signature,
                "timestamp": envelope.timestamp,
                "nonce": envelope.nonce,
                "receive_id": rid,
                "body": body,
                "query": query,
            }
        )
    else:
        print(f"query: {query}")
        print(f"body:  {body}")
    return EXIT_OK


def register(app: typer.Typer) -> None:
    app.command("simulate-callback")(simulate_callback)
    app.command("decrypt")(decrypt)
    app.command("encrypt")(encrypt)
