"""``qywx alert test``: send a sample alert to the webhook ``qywx serve`` would use."""

from __future__ import annotations

from typing import Annotated

import typer

from qywx_cli.cli._errors import EXIT_OK
from qywx_cli.cli._output import Format, emit_json
from qywx_cli.cli._state import globals_of


def alert_test(
    ctx: typer.Context,
    webhook: Annotated[
        str | None,
        typer.Option(
            "--webhook",
            help="Webhook URL [QYWX_ALERT_WEBHOOK, or [serve] alert_webhook in qywx.toml].",
        ),
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text,
) -> int:
    """POST a sample alert now (one attempt); exit 1 if the webhook did not accept it."""
    from qywx_cli.core.alerts import send_sample

    url = webhook or globals_of(ctx).settings().alert_webhook
    hook = send_sample(url)
    if fmt is Format.json:
        emit_json({"ok": True, "webhook": hook.shown, "kind": hook.kind})
    else:
        print(f"✓ test alert accepted by {hook.shown} ({hook.kind})")
    return EXIT_OK


def register(app: typer.Typer) -> None:
    alert = typer.Typer(
        name="alert",
        help="Alerts from qywx serve (a WeCom group robot or a JSON webhook).",
        no_args_is_help=True,
    )
    alert.command("test")(alert_test)
    app.add_typer(alert, name="alert")
