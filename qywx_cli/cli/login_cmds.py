"""``qywx login-config``, ``qywx login``, ``qywx login-url`` and ``qywx org …``.

The login commands print what the element API returns (``getLoginConfig``,
``getLoginCode``), in the element doc's camelCase; ``org`` is an operator's view of
organisation codes and uses the CLI's snake_case like ``log``. Like ``log``, they
read an existing database and never create one.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qywx_cli.cli._errors import EXIT_OK
from qywx_cli.cli._output import Format, cell, emit_json, note, table
from qywx_cli.cli._state import globals_of
from qywx_cli.cli.ops_cmds import iso, open_store

if TYPE_CHECKING:
    from qywx_cli.core.config import AuthInstance
    from qywx_cli.core.login import LoginService, OrgCodeInfo


class LoginKind(str, enum.Enum):
    workbench = "workbench"
    qr = "qr"


AuthOption = Annotated[
    str, typer.Option("--auth", help="Instance name (auths/NAME) or path to its folder.")
]
FormatOption = Annotated[Format, typer.Option("--format", "-f")]
ScopeOption = Annotated[
    str,
    typer.Option(
        "--scope",
        help="base (snsapi_base) or privateinfo (snsapi_privateinfo: mobile, email, avatar…).",
    ),
]

#: userDetail fields shown only with --show-secrets: a member's personal data (doc 96443).
_PERSONAL_FIELDS = ("avatar", "qrCode", "mobile", "email", "bizMail", "address")


def _masked_detail(detail: dict[str, Any], show: bool) -> dict[str, Any]:
    from qywx_cli.core.masking import mask

    if show:
        return detail
    return {k: mask(v) if k in _PERSONAL_FIELDS and v else v for k, v in detail.items()}


def _instance(ctx: typer.Context, name: str) -> AuthInstance:
    """The ``--auth`` instance, looked up before any database is opened."""
    from qywx_cli.core.config import find_instance

    return find_instance(name, globals_of(ctx).settings().auths_dir)


@contextmanager
def _logins(ctx: typer.Context) -> Iterator[LoginService]:
    """A LoginService over the existing database; store and HTTP client closed after."""
    from qywx_cli.core.login import LoginService
    from qywx_cli.core.wecom import WeComClient

    settings = globals_of(ctx).settings()
    with open_store(settings) as store, WeComClient(store, base_url=settings.api_base) as client:
        yield LoginService(store, client)


def _pairs(doc: dict[str, Any]) -> list[list[Any]]:
    return [[k, cell(v)] for k, v in doc.items() if not isinstance(v, (list, dict))]


def _corp_table(corps: list[dict[str, Any]]) -> None:
    if corps:
        table(
            "Corps the user may enter",
            ["corpId", "corpName", "agentId"],
            [[c["corpId"], c["corpName"], c["agentId"]] for c in corps],
        )


# -- login-config / login / login-url ---------------------------------------------------


def login_config(ctx: typer.Context, auth: AuthOption, fmt: FormatOption = Format.text) -> int:
    """What a login page needs for an instance (getLoginConfig): no secrets."""
    from qywx_cli.core.app import login_config_dict

    instance = _instance(ctx, auth)
    with _logins(ctx) as logins:
        doc = login_config_dict(logins.login_config(instance))
    if fmt is Format.json:
        emit_json(doc)
    else:
        table(f"Login config of {doc['element']}", ["field", "value"], _pairs(doc))
        if not doc["authorized"]:
            note(
                f"corp {doc['corpId'] or '(none)'} has not authorized this instance's suite "
                "yet: agentId comes from its create_auth callback"
            )
    return EXIT_OK


def login(
    ctx: typer.Context,
    auth: AuthOption,
    corp_id: Annotated[str, typer.Option("--corp-id", help="The corp the user logs into.")],
    code: Annotated[str, typer.Option("--code", help="The code WeCom redirected with.")],
    kind: Annotated[LoginKind, typer.Option("--type", help="How the code was obtained.")] = (
        LoginKind.workbench
    ),
    scope: ScopeOption = "base",
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="Show mobile, email, avatar… unmasked.")
    ] = False,
    fmt: FormatOption = Format.text,
) -> int:
    """Exchange a WeCom login code for a one-time loginCode (getLoginCode)."""
    from qywx_cli.core.app import login_result_dict

    instance = _instance(ctx, auth)
    with _logins(ctx) as logins:
        doc = login_result_dict(logins.login(instance, corp_id, code, kind.value, scope=scope))
    if "userDetail" in doc:
        doc["userDetail"] = _masked_detail(doc["userDetail"], show_secrets)
    if fmt is Format.json:
        emit_json(doc)
    else:
        table(f"Logged in through {doc['element']}", ["field", "value"], _pairs(doc))
        if "userDetail" in doc:
            table(
                "Member details (auth/getuserdetail)", ["field", "value"], _pairs(doc["userDetail"])
            )
        _corp_table(doc["corpList"])
        note(f"the loginCode is single use and expires in {doc['expiresIn']} s")
    return EXIT_OK


def login_url(
    ctx: typer.Context,
    auth: AuthOption,
    redirect_uri: Annotated[
        str, typer.Option("--redirect-uri", help="Where WeCom sends the code (unencoded).")
    ],
    kind: Annotated[LoginKind, typer.Option("--type", help="workbench OAuth or QR login.")] = (
        LoginKind.workbench
    ),
    state: Annotated[
        str | None, typer.Option("--state", help="CSRF state, a-zA-Z0-9 (default: random).")
    ] = None,
    corp_id: Annotated[
        str | None, typer.Option("--corp-id", help="Corp to log into (default: corpId).")
    ] = None,
    scope: ScopeOption = "base",
    fmt: FormatOption = Format.text,
) -> int:
    """Build the workbench OAuth2 or QR (wwlogin) URL that starts a login."""
    instance = _instance(ctx, auth)
    with _logins(ctx) as logins:
        url = logins.login_url(
            instance,
            redirect_uri,
            login_type=kind.value,
            corp_id=corp_id,
            state=state,
            scope=scope,
        )
    if fmt is Format.json:
        emit_json(
            {
                "url": url.url,
                "loginType": url.login_type,
                "corpId": url.corp_id,
                "agentId": url.agent_id,
                "state": url.state,
                "redirectUri": url.redirect_uri,
                "scope": f"snsapi_{url.scope}",
            }
        )
    else:
        print(url.url)
        note(f"state: {url.state} (check it when WeCom redirects back)")
    return EXIT_OK


# -- org ---------------------------------------------------------------------------------


def _org_dict(info: OrgCodeInfo) -> dict[str, Any]:
    return {
        "code": info.code,
        "corp_id": info.corp_id,
        "corp_name": info.corp_name,
        "agent_id": info.agent_id,
        "suite_id": info.suite_id,
        "state": info.state,
        "created_at": iso(info.created_at),
        "updated_at": iso(info.updated_at),
    }


_ORG_COLUMNS = ["code", "corp", "corp name", "agentId", "suite", "state", "updated (UTC)"]


def _org_row(d: dict[str, Any]) -> list[Any]:
    return [
        d["code"],
        d["corp_id"],
        d["corp_name"],
        d["agent_id"],
        d["suite_id"],
        d["state"] or "not authorized",
        (d["updated_at"] or "")[:19].replace("T", " "),
    ]


def org_set_code(
    ctx: typer.Context,
    corp_id: Annotated[str, typer.Argument(metavar="CORP_ID", help="An authorized corp.")],
    code: Annotated[str, typer.Argument(metavar="CODE", help="Letters, digits, '-', '_'.")],
    force: Annotated[
        bool, typer.Option("--force", help="Take the code from the corp that holds it.")
    ] = False,
    fmt: FormatOption = Format.text,
) -> int:
    """Give a corp an organisation code (setCode); codes are case-insensitive."""
    with _logins(ctx) as logins:
        doc = _org_dict(logins.set_org_code(corp_id, code, force=force))
    if fmt is Format.json:
        emit_json(doc)
    else:
        print(f"org code {doc['code']} → corp {doc['corp_id']}")
    return EXIT_OK


def org_show(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(metavar="CODE", help="An organisation code.")],
    fmt: FormatOption = Format.text,
) -> int:
    """Show the corp an organisation code names (getLoginConfigByCode's data)."""
    with _logins(ctx) as logins:
        doc = _org_dict(logins.org_code(code))
    if fmt is Format.json:
        emit_json(doc)
    else:
        table(f"Org code {doc['code']}", ["field", "value"], _pairs(doc))
    return EXIT_OK


def org_unset(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(metavar="CODE", help="The organisation code to remove.")],
    fmt: FormatOption = Format.text,
) -> int:
    """Remove an organisation code (the corp keeps its authorization)."""
    with _logins(ctx) as logins:
        doc = _org_dict(logins.unset_org_code(code))
    if fmt is Format.json:
        emit_json(doc)
    else:
        print(f"org code {doc['code']} removed (it named corp {doc['corp_id']})")
    return EXIT_OK


def org_list(ctx: typer.Context, fmt: FormatOption = Format.text) -> int:
    """List organisation codes and their corps."""
    with _logins(ctx) as logins:
        docs = [_org_dict(i) for i in logins.org_codes()]
    if fmt is Format.json:
        emit_json(docs)
    elif docs:
        table("Organisation codes", _ORG_COLUMNS, [_org_row(d) for d in docs])
    else:
        note("no organisation codes; set one with qywx org set-code CORP_ID CODE")
    return EXIT_OK


def register(app: typer.Typer) -> None:
    app.command("login-config")(login_config)
    app.command("login")(login)
    app.command("login-url")(login_url)
    org = typer.Typer(
        name="org",
        help="Organisation codes: short names that find a corp on a QR login page.",
        no_args_is_help=True,
    )
    org.command("set-code")(org_set_code)
    org.command("show")(org_show)
    org.command("list")(org_list)
    org.command("unset")(org_unset)
    app.add_typer(org, name="org")
