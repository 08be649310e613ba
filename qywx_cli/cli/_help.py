"""One naming rule for every command's help, applied to the built click tree.

Written option by option, metavars drift (``--auth NAME`` here, ``--auth <str>``
there, an argument shown as ``{name}``); so the rule lives here: a value option
without its own metavar is shown by its long name in capitals (``--corp-id
CORP_ID``), a choice as ``a|b``, an argument by its name in capitals. The root's
``--config/--auths/--db/--debug`` work after any command name too (``main`` moves
them), so each command's help lists them as well.
"""

from __future__ import annotations

from typing import Any

ROOT_OPTIONS = (
    ("--config", "FILE", "qywx.toml with defaults (default: ./qywx.toml if present)."),
    ("--auths", "DIR", "The auths/ folder (default: $QYWX_AUTHS, else ./auths)."),
    ("--db", "PATH", "The database (default: $QYWX_DB, else ./qywx.db)."),
)


def _choices(param: Any) -> list[str] | None:
    choices = getattr(param.type, "choices", None)
    if not choices:
        return None
    return [getattr(c, "value", c) for c in choices]


#: value options whose capitalised long name would not say what the value is
_NAMED = {
    "--auth": "NAME",
    "--url": "URL",
    "--push-to": "URL",
    "--redirect-uri": "URI",
    "--dir": "DIR",
    "--output": "FILE",
    "--since": "WHEN",
    "--until": "WHEN",
}


def _metavar(param: Any) -> str:
    choices = _choices(param)
    if choices:
        return "|".join(map(str, choices))
    if param.param_type_name == "argument":
        return str(param.name).upper()
    long = max(param.opts, key=len)
    return _NAMED.get(long) or long.lstrip("-").replace("-", "_").upper()


def _argument_metavar(param: Any) -> str:
    """``NAME``, ``[NAME]`` when optional, ``...`` when repeated; never typer's ``{NAME}``."""
    if param.metavar is not None:
        return str(param.metavar)
    shown = _metavar(param)
    if not param.required:
        shown = f"[{shown}]"
    return shown + ("..." if param.nargs != 1 else "")


def _leaves(command: Any) -> list[Any]:
    subs = getattr(command, "commands", None)
    if subs is None:
        return [command]
    return [leaf for sub in subs.values() for leaf in _leaves(sub)]


def polish(root: Any) -> Any:
    """Give every option and argument of ``root``'s commands a readable metavar, and list
    the root options in each command's help. Returns ``root``."""
    from typer.core import TyperOption

    shown_as = {name: metavar for name, metavar, _ in ROOT_OPTIONS}
    for param in getattr(root, "params", []):  # `qywx --help` names them as commands do
        long = max(param.opts, key=len)
        if long in shown_as:
            param.metavar = shown_as[long]
    for leaf in _leaves(root) if getattr(root, "commands", None) else []:
        for param in leaf.params:
            if param.param_type_name == "argument":
                if getattr(param, "_qywx_shown", None):  # polished already
                    continue
                shown = param._qywx_shown = _argument_metavar(param)
                param.make_metavar = lambda *a, _shown=shown, **k: _shown
                if param.metavar is None:  # errors name it as help does, not by its code name
                    param.metavar = _metavar(param)
            elif not getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = _metavar(param)
            if "--format" in param.opts and not param.help:
                param.help = "Output: text for people, json for machines."
        have = {opt for p in leaf.params for opt in p.opts}
        for name, metavar, text in ROOT_OPTIONS:
            if name not in have:
                leaf.params.append(
                    TyperOption(param_decls=[name], metavar=metavar, help=text, expose_value=False)
                )
        if "--debug" not in have:
            leaf.params.append(
                TyperOption(
                    param_decls=["--debug"],
                    is_flag=True,
                    help="Show tracebacks on errors.",
                    expose_value=False,
                )
            )
    return root
