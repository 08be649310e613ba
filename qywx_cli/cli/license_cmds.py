"""qywx license: interface licences (接口调用许可) of a corp's members, over the provider token."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from qywx_cli.cli._errors import EXIT_FAILED, EXIT_OK
from qywx_cli.cli._output import Format, emit_json, note, table
from qywx_cli.cli._state import globals_of
from qywx_cli.core.errors import UsageError

if TYPE_CHECKING:
    from qywx_cli.core.store import Licence

_CORP = typer.Option("--corp-id", metavar="CORP_ID", help="The authorized corp.")


def _when(ts: int | None) -> str:
    from qywx_cli.cli.ops_cmds import iso

    return (iso(ts) or "")[:19].replace("T", " ") if ts else ""


def _doc(x: Licence) -> dict[str, object]:
    from qywx_cli.core.licensing import type_name

    return {
        "corp_id": x.corp_id,
        "user_id": x.user_id,
        "type": x.type,
        "type_name": type_name(x.type),
        "active_code": x.active_code,
        "active_time": x.active_time,
        "expire_time": x.expire_time,
    }


def _show(title: str, rows: list[Licence], fmt: Format) -> None:
    from qywx_cli.core.licensing import type_name

    if fmt is Format.json:
        emit_json([_doc(x) for x in rows])
    elif rows:
        table(
            title,
            ["member", "type", "activated (UTC)", "expires (UTC)", "code"],
            [
                [x.user_id, type_name(x.type), _when(x.active_time), _when(x.expire_time),
                 x.active_code or ""]
                for x in rows
            ],
        )  # fmt: skip
    else:
        note("no active licence accounts")


def license_list(
    ctx: typer.Context,
    corp_id: Annotated[str, _CORP],
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text,
) -> int:
    """Every active licence account of the corp (list_actived_account), recorded locally."""
    from qywx_cli.core.licensing import list_corp_licences

    rows = list_corp_licences(globals_of(ctx).settings(), corp_id)
    _show(f"Active licences of {corp_id} ({len(rows)})", rows, fmt)
    return EXIT_OK


def license_show(
    ctx: typer.Context,
    corp_id: Annotated[str, _CORP],
    user_id: Annotated[str, typer.Option("--user-id", metavar="USERID", help="The member.")],
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text,
) -> int:
    """One member's licence accounts (get_active_info_by_user); exit 1 when they have none."""
    from qywx_cli.core.licensing import member_licences

    rows = member_licences(globals_of(ctx).settings(), corp_id, user_id)
    _show(f"Licences of {user_id} in {corp_id}", rows, fmt)
    return EXIT_OK if rows else EXIT_FAILED


def license_activate(
    ctx: typer.Context,
    corp_id: Annotated[str, _CORP],
    code: Annotated[str, typer.Option("--code", metavar="CODE", help="The activation code.")],
    user_id: Annotated[str, typer.Option("--user-id", metavar="USERID", help="The member.")],
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text,
) -> int:
    """Bind an activation code to a member (active_account), then show their accounts."""
    from qywx_cli.core.licensing import activate_licence

    rows = activate_licence(globals_of(ctx).settings(), corp_id, code.strip(), user_id)
    _show(f"Licences of {user_id} in {corp_id} after activation", rows, fmt)
    return EXIT_OK


def license_transfer(
    ctx: typer.Context,
    corp_id: Annotated[str, _CORP],
    handover: Annotated[
        list[str],
        typer.Option("--from", metavar="USERID", help="Member who left (repeatable)."),
    ],
    takeover: Annotated[
        list[str],
        typer.Option("--to", metavar="USERID", help="Member taking over (one per --from)."),
    ],
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text,
) -> int:
    """Move licence accounts between members (batch_transfer_license); exit 1 if any failed."""
    from qywx_cli.core.licensing import transfer_licences

    if len(handover) != len(takeover):
        raise UsageError("give one --to for each --from")
    results = transfer_licences(
        globals_of(ctx).settings(), corp_id, list(zip(handover, takeover, strict=True))
    )
    if fmt is Format.json:
        emit_json(
            [
                {"from": r.handover_user_id, "to": r.takeover_user_id, "errcode": r.errcode}
                for r in results
            ]
        )
    else:
        table(
            f"Licence transfers in {corp_id}",
            ["from", "to", "result"],
            [
                [r.handover_user_id, r.takeover_user_id, "ok" if r.ok else f"errcode {r.errcode}"]
                for r in results
            ],
        )
    return EXIT_OK if results and all(r.ok for r in results) else EXIT_FAILED


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        name="license",
        help="Interface licences (接口调用许可): list, show, activate, transfer.",
        no_args_is_help=True,
    )
    group.command("list")(license_list)
    group.command("show")(license_show)
    group.command("activate")(license_activate)
    group.command("transfer")(license_transfer)
    app.add_typer(group, name="license")
