"""``qywx token suite|corp|provider``: the cached token, masked, with its expiry and source.

One core call (:func:`qywx_cli.core.tokens.obtain_token`) through the service's own
token cache. The token is masked in every format; ``--show-secrets`` is the one way to
print it whole (for a curl by hand), as with ``log show --decrypt``.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import typer

from qywx_cli.cli._errors import EXIT_OK
from qywx_cli.cli._output import Format, emit_json, table
from qywx_cli.cli._state import globals_of
from qywx_cli.cli.ops_cmds import iso


class Which(str, enum.Enum):
    suite = "suite"
    corp = "corp"
    provider = "provider"


def token(
    ctx: typer.Context,
    which: Annotated[
        Which,
        typer.Argument(
            metavar="suite|corp|provider",
            help="suite_access_token (--auth), the corp's access_token (--corp-id), or "
            "the provider_access_token.",
            show_default=False,
        ),
    ],
    auth: Annotated[
        str | None,
        typer.Option("--auth", help="The instance whose suite (suite; corp: which template)."),
    ] = None,
    corp_id: Annotated[
        str | None,
        typer.Option("--corp-id", metavar="CORP_ID", help="The authorized corp (corp)."),
    ] = None,
    refresh: Annotated[
        bool,
        typer.Option("--refresh", help="Ask WeCom now even if a cached token is valid; store it."),
    ] = False,
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="Print the token whole, not masked.")
    ] = False,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text,
) -> int:
    """Obtain or show a cached token (masked) with its expiry and where it came from."""
    from qywx_cli.core.tokens import obtain_token

    settings = globals_of(ctx).settings()
    instance = None
    if auth is not None:
        from qywx_cli.core.config import find_instance

        instance = find_instance(auth, settings.auths_dir)
    report = obtain_token(
        settings, which.value, instance=instance, corp_id=corp_id, refresh=refresh
    )
    doc: dict[str, Any] = report.as_dict(show_secret=show_secrets)
    doc["expires_at"] = iso(report.expires_at)
    if fmt is Format.json:
        emit_json(doc)
    else:
        source = {
            "cache": "cache (no WeCom call)",
            "wecom": f"fetched from WeCom just now, and cached ({settings.api_base})",
        }
        rows = [
            ["kind", doc["kind"]],
            ["instance", doc["instance"] or ""],
            ["suite", doc["suite_id"] or ""],
            ["corp", doc["corp_id"] or ""],
            ["token", doc["token"] + ("" if show_secrets else "  (masked; --show-secrets)")],
            ["expires (UTC)", (doc["expires_at"] or "")[:19].replace("T", " ")],
            ["expires in", f"{doc['expires_in']} s"],
            ["source", source[report.source]],
        ]
        table(f"{doc['kind']} token", ["field", "value"], [r for r in rows if r[1] != ""])
    return EXIT_OK


def register(app: typer.Typer) -> None:
    app.command("token")(token)
