"""``qywx doctor``: a table of deployment checks with a one-line fix for each failure.

``--auth NAME`` checks one instance; ``--all`` checks every instance folder and then
asks WeCom for every authorized corp's app token (gettoken), one row per corp.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Protocol

import typer

from qywx_cli.cli._errors import EXIT_FAILED, EXIT_OK
from qywx_cli.cli._output import Format, emit_json, table
from qywx_cli.cli._state import globals_of
from qywx_cli.core.errors import UsageError

if TYPE_CHECKING:
    from qywx_cli.core.doctor import Check, DoctorAll

_MARKS = {"ok": "✓", "failed": "✗", "skipped": "-", "warning": "!"}


class _HasStatus(Protocol):
    @property
    def status(self) -> str: ...


def doctor(
    ctx: typer.Context,
    auth: Annotated[str | None, typer.Option("--auth", help="Instance name or folder.")] = None,
    every: Annotated[
        bool,
        typer.Option("--all", help="Every instance, then gettoken for every authorized corp."),
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help="With --auth: the notify URL to probe (handshake, signed callback)."
        ),
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text,
) -> int:
    """Check an instance (--auth) or every one and each corp's token (--all), each with a fix."""
    if every:
        if auth is not None or url is not None:
            raise UsageError(
                "--all checks every instance: leave out --auth and --url (probe one "
                "endpoint with `qywx doctor --auth NAME --url URL`)"
            )
        return _doctor_all(ctx, fmt)
    if auth is None:
        raise UsageError("name the instance with --auth NAME, or check every one with --all")
    from qywx_cli.core.doctor import run_doctor

    checks = run_doctor(globals_of(ctx).settings(), auth, url=url)
    ok = all(c.ok for c in checks)
    if fmt is Format.json:
        emit_json({"ok": ok, "checks": [c.as_dict() for c in checks]})
    else:
        _checks_table(None, checks)
        print(summary_line(checks))
    return EXIT_OK if ok else EXIT_FAILED


def _checks_table(title: str | None, checks: Sequence[Check]) -> None:
    table(
        title,
        ["", "check", "detail", "fix"],
        [[_MARKS[c.status], c.name, c.detail, c.fix] for c in checks],
    )


def _doctor_all(ctx: typer.Context, fmt: Format) -> int:
    from qywx_cli.core.doctor import run_doctor_all

    report = run_doctor_all(globals_of(ctx).settings())
    if fmt is Format.json:
        emit_json(report.as_dict())
    else:
        _render_all(report)
    return EXIT_OK if report.ok else EXIT_FAILED


def _render_all(report: DoctorAll) -> None:
    for inst in report.instances:
        _checks_table(f"Instance {inst.instance}", inst.checks)
        print(f"{inst.instance}: {summary_line(inst.checks)}")
    if report.corps:
        table(
            "Authorized corps: gettoken with the stored permanent code",
            ["", "corp", "name", "suite", "instances", "errcode", "detail", "fix"],
            [
                [
                    _MARKS[c.status],
                    c.corp_id,
                    c.corp_name or "",
                    c.suite_id,
                    ", ".join(c.instances) or "-",
                    "" if c.errcode is None else c.errcode,
                    c.detail,
                    c.fix,
                ]
                for c in report.corps
            ],
        )
        print(f"corps: {summary_line(report.corps)}")
    else:
        print(f"corps: {report.corps_note}")
    n = len(report.instances)
    print(f"{n} instance(s), {len(report.corps)} corp(s): {summary_line(report.statuses())}")


def summary_line(checks: Sequence[_HasStatus] | Sequence[str]) -> str:
    """``✗ 1 of 6 checks failed, 1 skipped``: a skipped check is not a failure.

    Takes checks (anything with a ``status``) or their statuses.
    """
    statuses = [c if isinstance(c, str) else c.status for c in checks]
    failed = statuses.count("failed")
    skipped = statuses.count("skipped")
    warned = statuses.count("warning")
    ran = len(statuses) - skipped
    tail = (f", {skipped} skipped" if skipped else "") + (
        f", {warned} with a warning" if warned else ""
    )
    if not failed:
        return f"✓ all {ran} checks passed{tail}"
    return f"✗ {failed} of {ran} checks failed{tail}"


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
