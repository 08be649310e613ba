"""``qywx schema [e|business] [--output FILE]`` through the real console script."""

from __future__ import annotations

import json
from pathlib import Path

from qywx_cli.core.scaffold import SCHEMA_URLS
from qywx_cli.core.schema import schema_for
from tests.helpers import assert_one_line_error, run_qywx


def test_both_schemas_as_one_document() -> None:
    from jsonschema import Draft202012Validator  # here: every worker collects this module

    proc = run_qywx("schema")
    assert proc.returncode == 0 and proc.stderr == ""
    doc = json.loads(proc.stdout)
    assert doc == {"e": schema_for("e"), "business": schema_for("business")}
    for schema in doc.values():
        Draft202012Validator.check_schema(schema)


def test_one_schema_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "new" / "business.schema.json"
    proc = run_qywx("schema", "business", "--output", out)
    assert proc.returncode == 0 and proc.stdout == ""
    assert proc.stderr == f"wrote {out}\n"
    assert json.loads(out.read_text(encoding="utf-8")) == schema_for("business")
    e = run_qywx("schema", "e")
    assert json.loads(e.stdout) == schema_for("e")


def test_vscode_settings_fragment() -> None:
    proc = run_qywx("schema", "--vscode")
    assert proc.returncode == 0
    entries = json.loads(proc.stdout)["json.schemas"]
    assert [(e["url"], e["schema"]) for e in entries] == [
        (SCHEMA_URLS["e"], schema_for("e")),
        (SCHEMA_URLS["business"], schema_for("business")),
    ]
    assert entries[0]["fileMatch"] == ["**/auths/*/e.json"]
    assert "!**/auths/*/e.json" in entries[1]["fileMatch"]
    one = json.loads(run_qywx("schema", "e", "--vscode").stdout)["json.schemas"]
    assert [e["url"] for e in one] == [SCHEMA_URLS["e"]]


def test_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    for args in (["schema", "bogus"], ["schema", "e", "--output", tmp_path / "file" / "x.json"]):
        assert_one_line_error(run_qywx(*args), 2)
