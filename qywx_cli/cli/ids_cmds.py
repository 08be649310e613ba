"""qywx ids: convert stored ids to the upgraded (open) form, and look mappings up."""

from __future__ import annotations

import csv
import enum
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qywx_cli.cli._errors import EXIT_FAILED, EXIT_OK
from qywx_cli.cli._output import emit_json, note, table
from qywx_cli.cli._state import globals_of
from qywx_cli.core.errors import UsageError

if TYPE_CHECKING:
    from qywx_cli.core.idconvert import ConversionReport

MAX_ID_FILE_BYTES = 64 * 1024 * 1024
"""A million ids of WeCom's longest shape, with room."""


class Kind(str, enum.Enum):
    corpid = "corpid"
    userid = "userid"
    external_userid = "external_userid"


class ConvertFormat(str, enum.Enum):
    text = "text"
    json = "json"
    csv = "csv"


class LookupFormat(str, enum.Enum):
    text = "text"
    json = "json"


def _read_source(source: str) -> str:
    try:
        if source == "-":
            if sys.stdin is None:
                raise UsageError("cannot read -: standard input is closed")
            data = sys.stdin.buffer.read(MAX_ID_FILE_BYTES + 1)
        else:
            with open(source, "rb") as fh:
                data = fh.read(MAX_ID_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    if len(data) > MAX_ID_FILE_BYTES:
        raise UsageError(f"{source} is larger than {MAX_ID_FILE_BYTES // 2**20} MiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{source} is not UTF-8 text") from None


class _Bar:
    """A rich bar on a terminal; one plain line per batch otherwise (logs, CI, tests)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._progress: Any = None
        self._task: Any = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn(f"converting {kind}s"),
                BarColumn(),
                MofNCompleteColumn(),
                console=Console(stderr=True),
                transient=True,
            )

    def __enter__(self) -> _Bar:
        if self._progress is not None:
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def __call__(self, done: int, total: int, batches: int) -> None:
        if self._progress is not None:
            if self._task is None:
                self._task = self._progress.add_task("convert", total=total)
            self._progress.update(self._task, completed=done)
        elif batches:
            width = 30
            filled = width * done // total if total else width
            bar = "#" * filled + "-" * (width - filled)
            note(f"converting {self.kind}s [{bar}] {done}/{total} (batch {batches})")


def _render(report: ConversionReport, fmt: ConvertFormat) -> None:
    if fmt is ConvertFormat.json:
        emit_json(report.as_dict())
        return
    if fmt is ConvertFormat.csv:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(["id", "open_id", "status", "reason"])
        for plain, opened in report.mapped:
            out.writerow([plain, opened, "converted", ""])
        for failed in report.unconverted:
            out.writerow([failed.id, "", "unconverted", failed.reason])
        return
    where = f", corp {report.corp_id}" if report.corp_id else ""
    table(
        f"{report.kind} → open {report.kind}{where}",
        ["ids", "converted", "already known", "not converted", "WeCom calls", "rate-limit waits"],
        [
            [
                report.total,
                len(report.mapped) - report.already_known,
                report.already_known,
                len(report.unconverted),
                report.calls,
                report.rate_limit_waits,
            ]
        ],
    )
    if report.unconverted:
        table(
            "Not converted",
            ["id", "reason"],
            [[u.id, u.reason] for u in report.unconverted[:200]],
        )
        if len(report.unconverted) > 200:
            note(f"… and {len(report.unconverted) - 200} more (use --format csv for all)")


def ids_convert(
    ctx: typer.Context,
    kind: Annotated[Kind, typer.Argument(help="What the ids are.", show_default=False)],
    source: Annotated[
        str, typer.Argument(metavar="[FILE|-]", help="Ids, one per line (default: stdin).")
    ] = "-",
    corp_id: Annotated[
        str | None,
        typer.Option("--corp-id", metavar="CORP_ID", help="The corp the ids belong to."),
    ] = None,
    column: Annotated[
        str | None,
        typer.Option("--column", metavar="NAME", help="Read a CSV file's NAME column instead."),
    ] = None,
    fmt: Annotated[ConvertFormat, typer.Option("--format", "-f")] = ConvertFormat.text,
) -> int:
    """Convert ids to the upgraded (open) form in batches of 1,000, recording each mapping.

    Ids already mapped are not sent again. Exit 0 when every id converted, 1 when some
    could not be (listed, with WeCom's reason).
    """
    from qywx_cli.core.idconvert import convert_ids, read_ids

    if kind is not Kind.corpid and not corp_id:
        raise UsageError(f"ids convert {kind.value} needs --corp-id")
    ids = read_ids(_read_source(source), column=column)
    if not ids:
        raise UsageError(f"no ids in {'stdin' if source == '-' else source}")
    settings = globals_of(ctx).settings()
    with _Bar(kind.value) as bar:
        report = convert_ids(settings, kind.value, corp_id, ids, progress=bar)
    _render(report, fmt)
    return EXIT_OK if report.ok else EXIT_FAILED


def ids_lookup(
    ctx: typer.Context,
    id: Annotated[str, typer.Argument(metavar="ID", help="A plain or open id.")],
    fmt: Annotated[LookupFormat, typer.Option("--format", "-f")] = LookupFormat.text,
) -> int:
    """Show both forms of an id the store has a mapping for (exit 1 when none)."""
    from qywx_cli.cli.ops_cmds import iso, open_store

    with open_store(globals_of(ctx).settings()) as store:
        found = store.lookup_id(id.strip())
    docs = [
        {
            "kind": m.kind,
            "corp_id": m.corp_id,
            "id": m.plain_id,
            "open_id": m.open_id,
            "recorded_at": iso(m.updated_at),
        }
        for m in found
    ]
    if fmt is LookupFormat.json:
        emit_json(docs)
    elif docs:
        table(
            f"Mappings of {id.strip()}",
            ["kind", "corp", "id", "open id", "recorded (UTC)"],
            [[d["kind"], d["corp_id"], d["id"], d["open_id"], d["recorded_at"]] for d in docs],
        )
    else:
        note(f"no mapping recorded for {id.strip()}; run qywx ids convert first")
    return EXIT_OK if docs else EXIT_FAILED


def register(app: typer.Typer) -> None:
    ids = typer.Typer(
        name="ids",
        help="The ID security upgrade: convert plain ids to open ids, look mappings up.",
        no_args_is_help=True,
    )
    ids.command("convert")(ids_convert)
    ids.command("lookup")(ids_lookup)
    app.add_typer(ids, name="ids")
