"""``qywx auth-url`` and ``qywx jsapi-sign``: the provider's side of a 代开发 install.

auth-url hands out a 带参授权链接 (its state recorded, so the corp that scans it is
linked to it); jsapi-sign signs wx.config / wx.agentConfig for a page, online with the
corp's cached tickets, or offline with a ticket given on the command line — the tool
for a front end's "invalid signature", since it prints the exact string signed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qywx_cli.cli._errors import EXIT_OK
from qywx_cli.cli._output import Format, emit_json, note, table
from qywx_cli.cli._state import globals_of
from qywx_cli.cli.ops_cmds import iso, open_store
from qywx_cli.core.errors import UsageError

if TYPE_CHECKING:
    from qywx_cli.core.provider import ProviderService

FormatOption = Annotated[Format, typer.Option("--format", "-f")]


@contextmanager
def _provider(ctx: typer.Context, *, create: bool = False) -> Iterator[ProviderService]:
    from qywx_cli.core.provider import ProviderService
    from qywx_cli.core.store import open_store as create_store
    from qywx_cli.core.wecom import WeComClient

    settings = globals_of(ctx).settings()
    store = (
        create_store(settings.db_path, keys=settings.secret_keys)
        if create
        else open_store(settings)
    )
    with store, WeComClient(store, base_url=settings.api_base) as client:
        yield ProviderService(store, client, settings)


def _qr(text: str, png: Path | None) -> None:
    """The link as a QR code: on the terminal (stderr when stdout is JSON) or a PNG."""
    try:
        import segno
    except ImportError:
        raise UsageError("--qr needs the segno package: pip install 'qywx-cli[qr]'") from None
    code = segno.make(text, error="m")
    if png is None:
        code.terminal(out=sys.stderr if not sys.stdout.isatty() else sys.stdout, compact=True)
        return
    if png.suffix.lower() != ".png":
        raise UsageError(f"{png}: the QR file must end in .png")
    try:
        code.save(str(png), scale=8, border=4)
    except OSError as exc:
        raise UsageError(f"cannot write {png}: {exc.strerror}") from None


def auth_url(
    ctx: typer.Context,
    auth: Annotated[
        str, typer.Option("--auth", help="Instance name (auths/NAME) whose template to install.")
    ],
    png: Annotated[
        Path | None,
        typer.Argument(metavar="[FILE.PNG]", help="With --qr: write the QR code to this PNG."),
    ] = None,
    state: Annotated[
        str | None,
        typer.Option("--state", help="1-32 letters and digits (default: random)."),
    ] = None,
    qr: Annotated[
        bool, typer.Option("--qr", help="Show the link as a QR code (or write FILE.png).")
    ] = False,
    fmt: FormatOption = Format.text,
) -> int:
    """The 代开发 authorization link (get_customized_auth_url) with a recorded state."""
    from qywx_cli.core.config import find_instance

    if png is not None and not qr:
        raise UsageError("FILE.png is the QR code's file: write --qr FILE.png")
    instance = find_instance(auth, globals_of(ctx).settings().auths_dir)
    with _provider(ctx, create=True) as provider:
        link = provider.auth_url(instance, state)
    doc = {
        "url": link.qrcode_url,
        "state": link.state,
        "instance": link.instance,
        "suite_id": link.suite_id,
        "expires_at": iso(link.expires_at),
    }
    if fmt is Format.json:
        emit_json(doc)
    else:
        print(link.qrcode_url)
        note(
            f"state {link.state}: the corp that installs through this link is linked to it "
            f"(qywx corp show); the link expires {doc['expires_at']}"
        )
    if qr:
        _qr(link.qrcode_url, png)
        if png is not None:
            note(f"QR code written to {png}")
    return EXIT_OK


def jsapi_sign(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url", help="The page URL, as location.href shows it.")],
    auth: Annotated[
        str | None, typer.Option("--auth", help="Instance whose corp tickets to use.")
    ] = None,
    corp_id: Annotated[str | None, typer.Option("--corp-id", help="The customer corp.")] = None,
    agent: Annotated[
        bool, typer.Option("--agent", help="Sign wx.agentConfig (agent_config ticket).")
    ] = False,
    ticket: Annotated[
        str | None,
        typer.Option("--ticket", help="Offline: sign with this ticket, no WeCom call."),
    ] = None,
    nonce: Annotated[
        str | None, typer.Option("--nonce", help="noncestr (default: random).")
    ] = None,
    timestamp: Annotated[
        int | None, typer.Option("--timestamp", help="Seconds since 1970 (default: now).")
    ] = None,
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="Show the ticket in the signed string.")
    ] = False,
    fmt: FormatOption = Format.text,
) -> int:
    """The wx.config / wx.agentConfig signature of a page URL (JS-SDK, doc 96909)."""
    doc: dict[str, Any]
    if ticket is not None:
        if auth is not None or agent:
            raise UsageError("--ticket signs offline: leave out --auth and --agent")
        doc = _offline(ticket, url, nonce, timestamp, corp_id)
    else:
        if auth is None or corp_id is None:
            raise UsageError(
                "name the corp's tickets with --auth NAME --corp-id C, or give --ticket"
            )
        from qywx_cli.core.config import find_instance

        instance = find_instance(auth, globals_of(ctx).settings().auths_dir)
        with _provider(ctx) as provider:
            config = provider.jsapi_config(
                corp_id, url, agent=agent, instance=instance, nonce=nonce, timestamp=timestamp
            )
        sig = config.signature
        doc = {
            "api": config.api,
            "config": config.as_dict(),
            "url": sig.url,
            "string_to_sign": sig.string_to_sign if show_secrets else sig.masked_string_to_sign,
        }
    if fmt is Format.json:
        emit_json(doc)
    else:
        table(doc["api"], ["field", "value"], [[k, v] for k, v in doc["config"].items()])
        print(f"signed: {doc['string_to_sign']}")
    return EXIT_OK


def _offline(
    ticket: str, url: str, nonce: str | None, timestamp: int | None, corp_id: str | None
) -> dict[str, Any]:
    import secrets
    import time

    from qywx_cli.core.wecom import sign

    sig = sign(
        ticket,
        nonce if nonce is not None else secrets.token_hex(8),
        int(time.time()) if timestamp is None else timestamp,
        url,
    )
    config: dict[str, Any] = {"timestamp": sig.timestamp, "nonceStr": sig.noncestr}
    if corp_id:
        config = {"appId": corp_id, **config}
    config["signature"] = sig.signature
    return {
        "api": "signature",
        "config": config,
        "url": sig.url,
        "string_to_sign": sig.string_to_sign,
    }


def register(app: typer.Typer) -> None:
    app.command("auth-url")(auth_url)
    app.command("jsapi-sign")(jsapi_sign)
