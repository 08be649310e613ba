"""The ``qywx`` command line: a thin Typer layer over ``qywx_cli.core``.

Each command parses options, makes one library call and renders the result; command
modules import heavy libraries (httpx, rich, the store) inside the command body so
``qywx --help`` and ``qywx validate`` start fast.

No ``from __future__ import annotations`` in the modules whose commands are run most
(this one's root options, ``log``): Typer would compile and evaluate each annotation
string at every start-up, where real annotations come from the bytecode cache.
"""

import functools
import importlib
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from qywx_cli import __version__
from qywx_cli.cli._state import Globals


def _new_app() -> typer.Typer:
    return typer.Typer(
        name="qywx",
        help="Operations tool for WeCom (企业微信) 代开发 login: validate auths/, handle and "
        "simulate callbacks, inspect the callback log, log users in.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def _version(value: bool) -> None:
    if value:
        print(f"qywx {__version__}")
        raise typer.Exit()


def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="qywx.toml with defaults (default: ./qywx.toml if present).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    auths: Annotated[
        Path | None,
        typer.Option("--auths", envvar="QYWX_AUTHS", help="The auths/ folder (default ./auths)."),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="QYWX_DB",
            help="The database: a SQLite file (default ./qywx.db) or a postgresql:// URL.",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    ctx.obj = Globals(config=config, auths=auths, db=db, debug=debug)


#: Top-level command → the module that registers it, in --help order.
COMMANDS: dict[str, str] = {
    "validate": "config_cmds",
    "init": "config_cmds",
    "schema": "config_cmds",
    "serve": "server_cmds",
    "fake-wecom": "server_cmds",
    "doctor": "doctor_cmds",
    "simulate-callback": "devtools_cmds",
    "decrypt": "devtools_cmds",
    "encrypt": "devtools_cmds",
    "log": "ops_cmds",
    "retry": "ops_cmds",
    "login-config": "login_cmds",
    "login": "login_cmds",
    "login-url": "login_cmds",
    "org": "login_cmds",
    "corp": "corp_cmds",
    "token": "token_cmds",
    "alert": "alert_cmds",
    "ids": "ids_cmds",
    "db": "db_cmds",
    "license": "license_cmds",
    "auth-url": "provider_cmds",
    "jsapi-sign": "provider_cmds",
}
_ROOT_OPTIONS_WITH_VALUE = frozenset({"--config", "--auths", "--db"})


def build_app(command: str | None = None, sub: str | None = None) -> typer.Typer:
    """The Typer app with every command, or only the module that defines ``command``.

    Typer converts every registered command to click at start-up (~17 ms for all of
    them), so running one command registers only its own module; ``--help``, unknown
    commands and shell completion get the whole app, and ``command=""`` (``qywx
    --version``) none of it. A module that defines
    ``register_command(app, command, sub)`` narrows further: ``qywx log list`` converts
    ``log list`` alone, not the group's other commands (each about 1.5 ms).
    """
    built = _new_app()
    built.callback()(_root)
    if command == "":  # `qywx --version`: the root's options alone
        return built
    if command in COMMANDS:
        module = importlib.import_module(f"qywx_cli.cli.{COMMANDS[command]}")
        one = getattr(module, "register_command", None)
        if one is not None:
            one(built, command, sub)
        else:
            module.register(built)
        return built
    for name in dict.fromkeys(COMMANDS.values()):
        importlib.import_module(f"qywx_cli.cli.{name}").register(built)
    return built


def _command_name(args: list[str]) -> str | None:
    """The first word that is not a root option or its value."""
    words = _command_words(args)
    return words[0] if words else None


def _command_words(args: list[str]) -> list[str]:
    """The command, and the word right after it when that is not an option (a group's
    subcommand: groups take no options of their own)."""
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
        elif arg in _ROOT_OPTIONS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            return [arg, *(w for w in args[i + 1 : i + 2] if not w.startswith("-"))]
    return []


def _hoist_root_options(args: list[str]) -> list[str]:
    """Move root options written after the command name to just before it.

    People write ``qywx serve --db x.db`` as often as ``qywx --db x.db serve``; click
    only takes the root's options before the command, so the line is reordered here
    rather than every command repeating ``--auths``/``--db``/``--config``/``--debug``.
    The moved options go after those already in front, so the last one written still
    wins; nothing at or after ``--`` moves.
    """
    before: list[str] = []
    moved: list[str] = []
    after: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            after.extend(args[i:])
            break
        if not after:  # still before the command name
            if arg in _ROOT_OPTIONS_WITH_VALUE:
                before.extend(args[i : i + 2])
                i += 2
            else:
                (before if arg.startswith("-") else after).append(arg)
                i += 1
            continue
        if arg == "--debug" or arg.split("=", 1)[0] in _ROOT_OPTIONS_WITH_VALUE:
            take = 1 if arg == "--debug" or "=" in arg else 2
            if take == 2 and (i + 1 == len(args) or args[i + 1] == "--"):
                return [*before, arg]  # no value: let click say the option needs one
            moved.extend(args[i : i + take])
            i += take
            continue
        after.append(arg)
        i += 1
    return before + moved + after


def __getattr__(name: str) -> typer.Typer:
    """``qywx_cli.cli.app``: the full app, built on first use (for CliRunner and docs)."""
    if name == "app":
        return build_app()
    raise AttributeError(name)


def _without_httpx_cli() -> None:
    """Keep httpx from loading its own command-line client in a qywx process.

    httpx's package ``__init__`` imports ``httpx._main`` (its ``httpx`` console tool,
    built on click, rich and pygments) whenever click is installed, as it is beside Flask
    or Django's tooling. That costs every qywx process that talks HTTP (serve, fake-wecom,
    simulate-callback, doctor …) about 0.1 s of CPU for a program qywx never runs. The
    console script owns its process, so it puts an empty stand-in under that name before
    anything imports httpx; a program that imports ``qywx_cli.core`` into its own process
    never runs this, and keeps httpx as it is.
    """
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return
    import types

    def refuse() -> None:
        raise SystemExit("httpx's command-line client is not loaded inside qywx")

    stand_in = types.ModuleType("httpx._main")
    stand_in.main = refuse  # type: ignore[attr-defined]
    sys.modules["httpx._main"] = stand_in


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every outcome leaves through ``cli._errors.run_cli``."""
    from qywx_cli.cli._errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, fail, run_cli

    _without_httpx_cli()
    args = _hoist_root_options(list(sys.argv[1:] if argv is None else argv))
    if sys.stdout is None:  # started with it closed (>&-): nothing could be shown
        fail("standard output is closed: nothing can be shown", EXIT_FAILED)
    for n, arg in enumerate(args, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:  # bytes the locale could not decode; never echoed
            fail(f"argument {n} is not valid UTF-8 text", EXIT_USAGE)
    debug = "--debug" in (args[: args.index("--")] if "--" in args else args)
    completing = any(k.endswith("_COMPLETE") and k.startswith("_") for k in os.environ)
    try:  # building the app imports the command modules: Ctrl-C may land here too
        words = [] if completing else _command_words(args)
        if not (words or completing) and "--version" in args and not {"-h", "--help"} & set(args):
            words = [""]  # nothing else runs: no command module is needed
        command = _click_command(*words[:2])
    except KeyboardInterrupt:
        print("qywx: interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    run_cli(command, args, debug=debug)


@functools.cache
def _click_command(command: str | None = None, sub: str | None = None) -> Any:
    """The click command ``build_app(command, sub)`` converts to, polished.

    Made once per process for each pair: a program that calls :func:`main` more than once
    (the test suite runs about a thousand commands in one process) would otherwise pay
    Typer's conversion every time, 8-12 ms for one command and 100 ms for the whole app.
    Click commands hold no state between invocations; each run gets a new context.
    """
    from qywx_cli.cli._help import polish

    return polish(typer.main.get_command(build_app(command, sub)))
