"""Rendering: rich for people, one JSON document for machines, nothing else on stdout.

rich is imported only when a table is actually printed, so ``--format json`` and
``--help`` do not pay for it.
"""

from __future__ import annotations

import enum
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class Format(str, enum.Enum):
    text = "text"
    json = "json"


def emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2, default=str) + "\n")


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def cell(value: Any) -> str:
    """A json value as a person reads it in a table: yes/no, a comma list, blank for none."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return "" if value is None else str(value)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title, title_justify="left", show_lines=False)
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        # Text(), not str: values such as "<![CDATA[x]]>" must not be read as rich markup.
        t.add_row(*(Text("" if v is None else str(v)) for v in row))
    out = console()
    if not out.is_terminal:
        # Piped into grep, a file or a CI log: as wide as the content, so no cell wraps
        # and every record stays on one line (a terminal keeps its own width).
        from rich.measure import Measurement

        natural = Measurement.get(out, out.options.update_width(1_000_000), t).maximum
        out.width = max(out.width, natural)
    out.print(t)


def columns(headers: list[str], rows: list[list[str]]) -> None:
    """Plain aligned columns, for commands run in CI where rich's import is start-up cost."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def note(message: str) -> None:
    """A human remark on stderr, so stdout stays parseable in every format."""
    print(message, file=sys.stderr)
