"""The exported JSON Schema against an independent validator (``jsonschema``).

The samples must pass it; every broken fixture in tests/fixtures/broken_cases.json that
the schema can express must be rejected by it AND by ``qywx validate``; the others must
be rejected by ``validate`` while the schema accepts them, which keeps the list below
honest. Rules only ``validate`` can check, because a schema sees one parsed document:

* JSON syntax, strict UTF-8, no BOM, no NaN/Infinity, duplicate keys (parsing);
* file layout: e.json and <Name>.json present, named after the folder, folder name;
* env:VAR resolution (is the variable set, does its value obey the rule);
* rules across instances: suite-conflict, ambiguous-corp.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from qywx_cli.core.config import (
    AUTH_CONFIG_FIELDS,
    BUSINESS_FIELDS,
    E_JSON_FIELDS,
    FieldRule,
    validate_paths,
)
from qywx_cli.core.scaffold import SCHEMA_URLS, write_instance
from qywx_cli.core.schema import DIALECT, schema_for
from tests.helpers import REPO, SAMPLES, TEST_DATA, qywx_env, run_qywx

FIXTURES = REPO / "tests" / "fixtures"
TEMP = "QywxProxyTemp"
CASES: list[dict[str, Any]] = json.loads(
    (FIXTURES / "broken_cases.json").read_text(encoding="utf-8")
)["cases"]


def validator(which: str, rules: tuple[FieldRule, ...] | None = None) -> Draft202012Validator:
    schema = schema_for(which, rules)  # type: ignore[arg-type]
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


E_SCHEMA = validator("e")
BIZ_SCHEMA = validator("business")


def schema_of(path: Path) -> Draft202012Validator:
    return E_SCHEMA if path.name == "e.json" else BIZ_SCHEMA


def folder_name(case_id: str) -> str:
    return "Case" + "".join(part.capitalize() for part in case_id.split("-"))


def apply(case: dict[str, Any], folder: Path) -> Path:
    """Break ``folder`` (a copy of QywxProxyTemp) the way ``case`` says; return the file."""
    path = folder / ("e.json" if case["file"] == "e" else f"{folder.name}.json")
    if "raw" in case:
        path.write_text(case["raw"], encoding="utf-8")
        return path
    data = json.loads(path.read_text(encoding="utf-8"))

    def parent_of(dotted: str) -> tuple[dict[str, Any], str]:
        *parents, key = dotted.split(".")
        node = data
        for p in parents:
            node = node[p]
        return node, key

    for dotted in case.get("delete", []):
        node, key = parent_of(dotted)
        del node[key]
    for dotted, value in case.get("set", {}).items():
        node, key = parent_of(dotted)
        node[key] = value
    text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    path.write_bytes((b"\xef\xbb\xbf" if case.get("bom") else b"") + text.encode("utf-8"))
    return path


def instance_copy(root: Path, name: str) -> Path:
    folder = root / name
    shutil.copytree(SAMPLES / TEMP, folder)
    (folder / f"{TEMP}.json").rename(folder / f"{name}.json")
    return folder


def test_schemas_are_draft_2020_12_with_ids() -> None:
    for which in ("e", "business"):
        schema = schema_for(which)
        assert (schema["$schema"], schema["$id"]) == (DIALECT, SCHEMA_URLS[which])
        assert "$schema" in schema["properties"] and schema["additionalProperties"] is False
    token = schema_for("business")["properties"]["authConfig"]["properties"]["token"]
    assert token["title"] == "用于验证回调请求的token" and "ASCII letters" in token["description"]


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*/*.json")), ids=lambda p: p.parent.name)
def test_samples_pass_the_schema(path: Path) -> None:
    errors = list(schema_of(path).iter_errors(json.loads(path.read_text(encoding="utf-8"))))
    assert errors == []


@pytest.mark.parametrize("from_env", [False, True])
def test_init_output_passes_both(tmp_path: Path, from_env: bool) -> None:
    result = write_instance(
        "Shop", tmp_path, suite_id="dk1", suite_secret="s3cret", secrets_from_env=from_env
    )
    for path in result.files:
        doc = json.loads(path.read_text(encoding="utf-8"))
        assert "$schema" in doc and list(schema_of(path).iter_errors(doc)) == []
    report = validate_paths([tmp_path], {}, resolve_env=not from_env)
    assert report.ok(strict=True), report.diagnostics


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_broken_fixture(tmp_path: Path, case: dict[str, Any]) -> None:
    folder = instance_copy(tmp_path / "auths", folder_name(case["id"]))
    path = apply(case, folder)
    report = validate_paths([folder], case.get("env", {}))
    assert case["code"] in {d.code for d in report.diagnostics}, report.diagnostics
    assert not report.ok(strict=True)
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except ValueError:
        assert not case["schema"]  # unparseable: a schema never sees it
        return
    schema_errors = list(schema_of(path).iter_errors(doc))
    if case["schema"]:
        assert schema_errors, "the schema should reject this"
    else:
        assert schema_errors == [], "the schema cannot express this; update the fixture"


def test_qywx_validate_cli_rejects_every_fixture(tmp_path: Path) -> None:
    """The same fixtures, one instance each, through the real console script in one run."""
    auths = tmp_path / "auths"
    env: dict[str, str] = {}
    for i, case in enumerate(CASES):
        folder = instance_copy(auths, folder_name(case["id"]))
        if "raw" not in case and not (
            case["file"] == "business" and "corpId" in case.get("set", {})
        ):
            # distinct corps, so the cases do not also trip ambiguous-corp on each other
            biz = folder / f"{folder.name}.json"
            data = json.loads(biz.read_text(encoding="utf-8"))
            data["corpId"] = f"wwfixture{i:04d}"
            biz.write_text(json.dumps(data), encoding="utf-8")
        apply(case, folder)
        env.update(case.get("env", {}))
    proc = run_qywx("validate", auths, "--format", "json", "--strict", env=qywx_env(**env))
    assert proc.returncode == 1 and proc.stderr == ""
    found: dict[str, set[str]] = {}
    for d in json.loads(proc.stdout)["diagnostics"]:
        found.setdefault(d["instance"], set()).add(d["code"])
    missing = [c["id"] for c in CASES if c["code"] not in found.get(folder_name(c["id"]), set())]
    assert missing == []


def test_fixtures_cover_every_schema_rule() -> None:
    expressed = {c["code"] for c in CASES if c["schema"]}
    assert expressed >= {
        "missing-field",
        "wrong-type",
        "empty-field",
        "wrong-element-type",
        "bad-title",
        "bad-id",
        "bad-secret",
        "bad-aes-key",
        "bad-token",
        "placeholder",
        "env-reference",
        "unknown-key",
    }


def test_element_doc_examples(tmp_path: Path) -> None:
    examples = TEST_DATA / "element_doc"  # the doc's JSON examples, verbatim
    e_example = json.loads((examples / "e.json").read_text(encoding="utf-8"))
    biz_example = json.loads((examples / "business.json").read_text(encoding="utf-8"))
    assert E_SCHEMA.is_valid(e_example)
    placeholder_errors = list(BIZ_SCHEMA.iter_errors(biz_example))
    bad = {e.path[-1] for e in placeholder_errors}
    assert bad == {"suiteSecret", "encodingAESKey", "token"}


def _replace(rules: tuple[FieldRule, ...], name: str, **changes: Any) -> tuple[FieldRule, ...]:
    return tuple(dataclasses.replace(r, **changes) if r.name == name else r for r in rules)


def test_schema_is_generated_from_the_rules() -> None:
    """Change a rule and the schema changes with it: nothing is restated by hand."""
    auth = _replace(AUTH_CONFIG_FIELDS, "token", max_length=16, pattern=r"^[a-z]{1,16}$")
    business = _replace(BUSINESS_FIELDS, "authConfig", fields=auth)
    token = schema_for("business", business)["properties"]["authConfig"]["properties"]["token"]
    literal = token["anyOf"][0]
    assert (literal["maxLength"], literal["pattern"]) == (16, r"^[a-z]{1,16}$")
    sample = json.loads((SAMPLES / TEMP / f"{TEMP}.json").read_text(encoding="utf-8"))
    assert BIZ_SCHEMA.is_valid(sample)
    assert not validator("business", business).is_valid(sample)  # 24 mixed-case characters

    extra = (*E_JSON_FIELDS, FieldRule("owner", "string", True, "负责人", "Who owns it."))
    e_schema = schema_for("e", extra)
    assert e_schema["required"] == ["title", "type", "owner"]
    assert e_schema["properties"]["owner"]["title"] == "负责人"
    optional = _replace(E_JSON_FIELDS, "title", required=False)
    assert schema_for("e", optional)["required"] == ["type"]


def test_every_rule_pattern_refuses_blank_strings() -> None:
    rules = [*E_JSON_FIELDS, *AUTH_CONFIG_FIELDS, *BUSINESS_FIELDS]
    for rule in rules:
        if rule.pattern is not None:
            for blank in ("", " ", "\t \n"):
                assert re.fullmatch(rule.pattern, blank) is None, (rule.name, blank)
