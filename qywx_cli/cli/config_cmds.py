"""``qywx init``, ``qywx validate`` and ``qywx schema``: the auths/ folder in development and CI."""

from __future__ import annotations

import enum
import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from qywx_cli.cli._errors import EXIT_FAILED, EXIT_OK
from qywx_cli.cli._output import Format, columns, emit_json, note
from qywx_cli.cli._state import globals_of
from qywx_cli.core.config import Diagnostic, ValidationReport, validate_paths
from qywx_cli.core.errors import UsageError


class SchemaName(str, enum.Enum):
    e = "e"
    business = "business"


class ValidateFormat(str, enum.Enum):
    text = "text"
    json = "json"
    github = "github"
    junit = "junit"


def _github_escape(value: str, *, prop: bool = False) -> str:
    """GitHub workflow-command escaping (``%``, CR, LF; plus ``:`` and ``,`` in properties)."""
    value = value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        value = value.replace(":", "%3A").replace(",", "%2C")
    return value


def _github(report: ValidationReport) -> None:
    for d in report.diagnostics:
        level = d.severity
        props = f"file={_github_escape(d.file, prop=True)}"
        if d.line:
            props += f",line={d.line}"
        props += f",title={_github_escape(d.code, prop=True)}"
        print(f"::{level} {props}::{_github_escape(d.message)}")
    print(_summary(report))


_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _xml_text(value: str) -> str:
    """XML 1.0 cannot carry most control characters; ElementTree would write them anyway."""
    return _XML_INVALID.sub("\ufffd", value)


def _junit(report: ValidationReport) -> None:
    """One <testcase> per instance folder; its errors fail it, its warnings are its output."""
    from xml.etree import ElementTree as ET

    by_instance: dict[str, list[Diagnostic]] = {}
    for d in report.diagnostics:
        by_instance.setdefault(d.instance or "", []).append(d)
    names = [Path(p).name for p in report.checked]
    failing = [n for n in names if any(d.severity == "error" for d in by_instance.get(n, []))]
    suites = ET.Element("testsuites", name="qywx validate")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="auths",
        tests=str(len(names)),
        failures=str(len(failing)),
        errors="0",
        skipped="0",
    )
    for folder, name in zip(report.checked, names, strict=True):
        case = ET.SubElement(
            suite, "testcase", classname="auths", name=_xml_text(name), file=_xml_text(folder)
        )
        diags = by_instance.get(name, [])
        bad = [d for d in diags if d.severity == "error"]
        if bad:
            failure = ET.SubElement(
                case, "failure", message=_xml_text(bad[0].message), type=bad[0].code
            )
            failure.text = _xml_text("\n".join(_line(d) for d in bad))
        rest = [d for d in diags if d not in bad]
        if rest:
            ET.SubElement(case, "system-out").text = _xml_text("\n".join(_line(d) for d in rest))
    ET.indent(suites)
    print(ET.tostring(suites, encoding="unicode", xml_declaration=True))


def _line(d: Diagnostic) -> str:
    where = f"{d.file}:{d.line}" if d.line else d.file
    return f"{where}: {d.severity}[{d.code}]: {d.message}"


def _summary(report: ValidationReport) -> str:
    n = len(report.checked)
    return (
        f"{n} instance{'s' if n != 1 else ''} checked, {len(report.errors)} error(s), "
        f"{len(report.warnings)} warning(s)"
    )


def _text(report: ValidationReport) -> None:
    """Problems as ``file:line: severity[code]: message`` lines, the form compilers and
    linters use: never wrapped (a table folds long paths), clickable in terminals and
    editors, readable in a pre-commit log. The valid instances follow as plain columns
    (validate runs on every commit, so it does not pay for importing rich)."""
    for d in report.diagnostics:
        print(_line(d))
    if report.instances:
        columns(
            ["instance", "suiteId", "corpId", "active"],
            [
                [i.name, i.suite_id, i.corp_id or "-", "yes" if i.is_active else "no"]
                for i in report.instances
            ],
        )
    mark = "✓" if report.ok() else "✗"
    print(f"{mark} {_summary(report)}")


def validate(
    ctx: typer.Context,
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="[PATH]...",
            help="auths/ folder, one instance folder, a project root holding auths/, or "
            "files inside instances (as pre-commit passes them).",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        ValidateFormat, typer.Option("--format", "-f", help="Output format.")
    ] = ValidateFormat.text,
    strict: Annotated[bool, typer.Option("--strict", help="Treat warnings as errors.")] = False,
    no_env: Annotated[
        bool,
        typer.Option(
            "--no-env",
            help="Check env:VAR references for syntax only; do not require the variables "
            "(for pre-commit and CI jobs without the production secrets).",
        ),
    ] = False,
) -> int:
    """Validate auths/ instance folders; exit 0 valid, 1 invalid, 2 usage error.

    Instances given one by one (or through files inside them) are also checked
    against the other instances in the same auths/ folder for suite and corp conflicts.
    """
    targets = list(paths or [])
    if not targets:
        auths_dir = globals_of(ctx).settings().auths_dir
        if not auths_dir.is_dir():
            raise UsageError(f"no auths/ folder at {auths_dir}; pass a PATH or --auths DIR")
        targets = [auths_dir]
    report = validate_paths(targets, resolve_env=not no_env)
    if not report.checked:
        raise UsageError(f"no instance folders found under {', '.join(map(str, targets))}")
    if strict:
        report = report.promoted()
    ok = report.ok()
    if fmt is ValidateFormat.json:
        emit_json(
            {
                "ok": ok,
                "errors": len(report.errors),
                "warnings": len(report.warnings),
                "diagnostics": [d.as_dict() for d in report.diagnostics],
                "instances": [i.public_dict() for i in report.instances],
            }
        )
    elif fmt is ValidateFormat.github:
        _github(report)
    elif fmt is ValidateFormat.junit:
        _junit(report)
    else:
        _text(report)
    return EXIT_OK if ok else EXIT_FAILED


def init(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Instance element name, e.g. QywxProxyTemp.")],
    suite_id: Annotated[
        str, typer.Option("--suite-id", help="代开发 template id (dk…) or suite id.")
    ],
    corp_id: Annotated[
        str | None,
        typer.Option("--corp-id", help="Corp id this instance serves."),
    ] = None,
    title: Annotated[
        str | None,
        typer.Option("--title", help="Display title for e.json."),
    ] = None,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="auths/ folder to write into (default --auths / ./auths)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
    secrets_from_env: Annotated[
        bool,
        typer.Option(
            "--secrets-from-env",
            help="Write secrets as env:VAR references; generated values go to a 0600 .env file.",
        ),
    ] = False,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text,
) -> int:
    """Scaffold auths/NAME/ with a fresh token and EncodingAESKey that validate.

    The suite secret is read from $QYWX_SUITE_SECRET if set, otherwise written as an
    env:QYWX_<NAME>_SUITE_SECRET reference for you to set.
    """
    from qywx_cli.core.scaffold import write_instance

    auths_dir = directory or globals_of(ctx).settings().auths_dir
    result = write_instance(
        name,
        auths_dir,
        suite_id=suite_id,
        corp_id=corp_id,
        title=title,
        suite_secret=os.environ.get("QYWX_SUITE_SECRET") or None,
        suite_secret_source="$QYWX_SUITE_SECRET",
        force=force,
        secrets_from_env=secrets_from_env,
    )
    steps = []
    if result.reused_from:
        steps.append(
            f"{', '.join(result.reused)} taken from {result.reused_from}: one suite "
            "signs all its callbacks with one token and key, and has one secret"
        )
    if result.secrets_file:
        steps.append(
            f"load the generated secrets: source {result.secrets_file} "
            "(then move them to your secret store and delete the file)"
        )
    for var, what in result.env_vars.items():
        if what == "suiteSecret":
            steps.append(f"export {var}=<template secret from the WeCom provider console>")
    if result.secret_ignored:
        steps.append(
            f"$QYWX_SUITE_SECRET was not written: {result.reused_from} already holds this "
            "suite's secret, and a suite has one"
        )
    if not result.reused_from:
        if result.token and result.encoding_aes_key and not result.secrets_file:
            # Written literally in the business file anyway; with --secrets-from-env
            # they stay in the 0600 secrets file only.
            steps.append(
                "enter these in the WeCom console's callback settings for the template: "
                f"Token {result.token}  EncodingAESKey {result.encoding_aes_key}"
            )
        else:
            where = f" (from {result.secrets_file})" if result.secrets_file else ""
            steps.append(
                "enter the same token and encodingAESKey in the WeCom console's callback "
                f"settings for the template{where}"
            )
    steps.append(f"check it: qywx validate {result.folder}")
    if fmt is Format.json:
        emit_json(
            {
                "instance": name,
                "folder": str(result.folder),
                "files": [str(p) for p in result.files],
                "env_vars": sorted(result.env_vars),
                "secrets_file": str(result.secrets_file) if result.secrets_file else None,
                "reused_from": result.reused_from,
                "next": steps,
            }
        )
    else:
        for p in result.files:
            print(f"wrote {p}")
        if result.secrets_file:
            print(f"wrote {result.secrets_file} (mode 0600)")
        note("next:")
        for i, step in enumerate(steps, 1):
            note(f"  {i}. {step}")
    return EXIT_OK


def _vscode_settings(names: list[SchemaName]) -> dict[str, object]:
    """A .vscode/settings.json fragment: each schema inline, under its ``$id`` as ``url``.

    VS Code resolves a file's ``$schema`` (which ``qywx init`` writes) through schemas
    registered under the same URL before fetching it, and uses ``fileMatch`` for files
    without one, so this works offline and before the URL is served anywhere.
    """
    from qywx_cli.core.scaffold import SCHEMA_URLS
    from qywx_cli.core.schema import schema_for

    patterns = {
        SchemaName.e: ["**/auths/*/e.json"],
        SchemaName.business: ["**/auths/*/*.json", "!**/auths/*/e.json"],
    }
    return {
        "json.schemas": [
            {"url": SCHEMA_URLS[n.value], "fileMatch": patterns[n], "schema": schema_for(n.value)}
            for n in names
        ]
    }


def schema(
    which: Annotated[
        SchemaName | None,
        typer.Argument(
            help="e (e.json) or business (<Name>.json); default: both.", show_default=False
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write to FILE (folders are created) instead of stdout."
        ),
    ] = None,
    vscode: Annotated[
        bool,
        typer.Option(
            "--vscode",
            help="Print a .vscode/settings.json fragment (json.schemas) with the schemas inline.",
        ),
    ] = False,
) -> int:
    """Print the JSON Schema (draft 2020-12) of the auths/ files, generated from validate's rules.

    Without an argument prints {"e": …, "business": …}. Editors use it for hover help
    and to underline mistakes as you type (docs/ci.md shows the set-up).
    """
    from qywx_cli.core.schema import schema_for

    names = [which] if which is not None else list(SchemaName)
    document: object
    if vscode:
        document = _vscode_settings(names)
    elif which is not None:
        document = schema_for(which.value)
    else:
        document = {n.value: schema_for(n.value) for n in names}
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror}") from None
    note(f"wrote {output}")
    return EXIT_OK


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
    app.command("init")(init)
    app.command("schema")(schema)
