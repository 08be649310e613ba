"""``qywx doctor``: a table of deployment checks with a one-line fix for each failure."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from qywx_cli.cli._errors import EXIT_FAILED, EXIT_OK
from qywx_cli.cli._output import Format, emit_json, table
from qywx_cli.cli._state import globals_of

if TYPE_CHECKING:
    from qywx_cli.core.doctor import Check


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
        marks = {"ok": "✓", "failed": "✗", "skipped": "-", "warning": "!"}
        table(
            None,
            ["", "check", "detail", "fix"],
            [[marks[c.status], c.name, c.detail, c.fix] for c in checks],
        )
        print(summary_line(checks))
    return EXIT_OK if ok else EXIT_FAILED


def summary_line(checks: list[Check]) -> str:
    """``✗ 1 of 6 checks failed, 1 skipped``: a skipped check is not a failure."""
    failed = sum(c.status == "failed" for c in checks)
    skipped = sum(c.status == "skipped" for c in checks)
    warned = sum(c.status == "warning" for c in checks)
    ran = len(checks) - skipped
    tail = (f", {skipped} skipped" if skipped else "") + (
        f", {warned} with a warning" if warned else ""
    )
    if not failed:
        return f"✓ all {ran} checks passed{tail}"
    return f"✗ {failed} of {ran} checks failed{tail}"


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
