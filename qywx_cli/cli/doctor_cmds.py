"""``qywx doctor``: a table of deployment checks with a one-line fix for each failure."""

from __future__ import annotations

from typing import Annotated

import typer

from qywx_cli.cli._errors import EXIT_FAILED, EXIT_OK
from qywx_cli.cli._output import Format, emit_json, table
from qywx_cli.cli._state import globals_of


def doctor(
    ctx: typer.Context,
    auth: Annotated[str, typer.Option("--auth", help="Instance name or folder.")],
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help="Public notify URL to probe with a handshake and a signed callback."
        ),
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text,
) -> int:
    """Check config, secrets, database, suite_ticket, suite token and (with --url) the endpoint."""
    from qywx_cli.core.doctor import run_doctor

    checks = run_doctor(globals_of(ctx).settings(), auth, url=url)
    ok = all(c.ok for c in checks)
    if fmt is Format.json:
        emit_json({"ok": ok, "checks": [c.as_dict() for c in checks]})
    else:
        table(
            None,
            ["", "check", "detail", "fix"],
            [["✓" if c.ok else "✗", c.name, c.detail, c.fix] for c in checks],
        )
        print(
            "✓ all checks passed"
            if ok
            else f"✗ {sum(not c.ok for c in checks)} of {len(checks)} checks failed"
        )
    return EXIT_OK if ok else EXIT_FAILED


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
