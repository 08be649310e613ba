"""``qywx corp list | show CORP | refresh CORP``: the corps that authorized a suite here.

``org list`` shows only corps that have an organisation code; this is every
authorization, with whether its permanent code is held and when the cached corp token
expires. Like ``log``, it reads an existing database and never creates one.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from qywx_cli.cli._errors import EXIT_OK
from qywx_cli.cli._output import Format, cell, emit_json, note, table
from qywx_cli.cli._state import globals_of
from qywx_cli.cli.ops_cmds import iso, open_store

_COLUMNS = [
    "corp",
    "other id form",
    "name",
    "suite",
    "instances",
    "agentId",
    "authorized (UTC)",
    "state",
    "permanent code",
    "corp token until (UTC)",
    "link state",
    "app status",
]


def _doc(view: Any) -> dict[str, Any]:
    doc: dict[str, Any] = view.as_dict()
    for key in ("authorized_at", "updated_at", "corp_token_expires_at", "publish_checked_at"):
        doc[key] = iso(doc[key])
    return doc


def _when(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")


def _row(d: dict[str, Any]) -> list[Any]:
    other = d["open_corp_id"] if d["open_corp_id"] != d["corp_id"] else d["plain_corp_id"]
    return [
        d["corp_id"],
        other or "",
        d["corp_name"] or "",
        d["suite_id"],
        ", ".join(d["instances"]) or "-",
        d["agent_id"] if d["agent_id"] is not None else "",
        _when(d["authorized_at"]),
        d["state"],
        "held" if d["permanent_code_held"] else "none",
        _when(d["corp_token_expires_at"]) or "none cached",
        d["link_state"] or "",
        d["publish_label"],
    ]


def _instances(ctx: typer.Context) -> list[Any]:
    from qywx_cli.core.config import validate_paths

    auths = globals_of(ctx).settings().auths_dir
    return list(validate_paths([auths]).instances) if auths.is_dir() else []


def _warn(docs: list[dict[str, Any]]) -> None:
    """The commonest reason a new customer's login fails, said where an operator looks."""
    from qywx_cli.core.provider import NOT_ONLINE_HINT

    for d in docs:
        if d["state"] == "active" and d["online"] is False:
            note(f"qywx: warning: corp {d['corp_id']} is {NOT_ONLINE_HINT}")


def _render(title: str, docs: list[dict[str, Any]], fmt: Format, *, one: bool) -> None:
    _warn(docs)
    if fmt is Format.json:
        emit_json(docs[0] if one and len(docs) == 1 else docs)
    elif one:
        for d in docs:
            rows = [[k, cell(v)] for k, v in d.items()]
            table(f"{title} {d['corp_id']}", ["field", "value"], rows)
    else:
        table(title, _COLUMNS, [_row(d) for d in docs])


FormatOption = Annotated[Format, typer.Option("--format", "-f")]
CorpArg = Annotated[str, typer.Argument(metavar="CORP_ID", help="The corp's id (ww…).")]


def corp_list(ctx: typer.Context, fmt: FormatOption = Format.text) -> int:
    """Every corp that authorized a suite here, with its state and what is held."""
    from qywx_cli.core.corps import corp_views

    instances = _instances(ctx)
    with open_store(globals_of(ctx).settings()) as store:
        docs = [_doc(v) for v in corp_views(store, instances)]
    if not docs and fmt is not Format.json:
        note("no corp has authorized a suite yet (corps appear with their create_auth)")
        return EXIT_OK
    _render("Authorized corps", docs, fmt, one=False)
    return EXIT_OK


def corp_show(ctx: typer.Context, corp_id: CorpArg, fmt: FormatOption = Format.text) -> int:
    """One corp's authorizations (one per suite), every field."""
    from qywx_cli.core.corps import corp_views

    instances = _instances(ctx)
    with open_store(globals_of(ctx).settings()) as store:
        docs = [_doc(v) for v in corp_views(store, instances, corp_id)]
    _render("Corp", docs, fmt, one=True)
    return EXIT_OK


def corp_refresh(
    ctx: typer.Context,
    corp_id: CorpArg,
    suite_id: Annotated[
        str | None, typer.Option("--suite-id", help="Only this suite's authorization.")
    ] = None,
    fmt: FormatOption = Format.text,
) -> int:
    """Ask WeCom for the corp's authorization now (get_auth_info) and store it."""
    from qywx_cli.core.corps import refresh_corp
    from qywx_cli.core.wecom import WeComClient

    settings = globals_of(ctx).settings()
    instances = _instances(ctx)
    with open_store(settings) as store, WeComClient(store, base_url=settings.api_base) as client:
        docs = [_doc(v) for v in refresh_corp(store, client, instances, corp_id, suite_id)]
    _render("Refreshed corp", docs, fmt, one=True)
    return EXIT_OK


def register(app: typer.Typer) -> None:
    corp = typer.Typer(
        name="corp",
        help="The corps that authorized a suite: list, show, refresh (get_auth_info).",
        no_args_is_help=True,
    )
    corp.command("list")(corp_list)
    corp.command("show")(corp_show)
    corp.command("refresh")(corp_refresh)
    app.add_typer(corp, name="corp")
