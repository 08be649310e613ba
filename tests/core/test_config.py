"""The auths/ model: every failure mode of issue 2 item 4, plus breakages nobody listed.

Each test breaks a private copy of sample_auths/ (the ``auths`` fixture) and checks the
diagnostic's severity, file, line, code and that the message names the field. Every
report goes through :func:`check`, which also asserts that no diagnostic is more than
one line or carries a secret (the samples' or an env value).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from qywx_cli.core.config import (
    MAX_CONFIG_BYTES,
    Diagnostic,
    ValidationReport,
    find_instance,
    instance_dirs,
    load_instances,
    validate_paths,
)
from qywx_cli.core.errors import ConfigError, InstanceNotFound, UsageError
from tests.helpers import SAMPLE_SECRETS, SAMPLES, TEST_DATA

TEMP = "QywxProxyTemp"
#: secret-looking values used through env:VAR; they must never reach a message
ENV_TOKEN = "Zq8Rb3Lm0Vx6Tn2Kc5Wd9Hf1Jp4Gs7Ya"
ENV_KEY = "Hx3Nw8Qv1Rb6Tz4Lm9Kc2Pd7Fs5Jg0Ya8Ue6Wo3Yi1Q"
ENV_SECRET = "envsecret-Pq7Lx2Vb9Rk4Tz6Hc1Nm8Wd3Fs5"


def check(
    *paths: Path, env: Mapping[str, str] | None = None, resolve_env: bool = True
) -> ValidationReport:
    """validate_paths with an explicit environment, plus the message-safety invariants."""
    env = {} if env is None else env
    report = validate_paths(list(paths), env, resolve_env=resolve_env)
    secrets = [*SAMPLE_SECRETS, *(v for v in env.values() if v)]
    for d in report.diagnostics:
        assert d.message and "\n" not in d.message and "\r" not in d.message, d
        leaked = [s for s in secrets if s in d.message]
        assert not leaked, f"secret in message: {d}"
    return report


def only(report: ValidationReport, code: str | None = None) -> Diagnostic:
    """The single diagnostic of the report (of ``code`` if given), asserting there is one."""
    found = [d for d in report.diagnostics if code is None or d.code == code]
    assert len(found) == 1, [d.as_dict() for d in report.diagnostics]
    return found[0]


def biz(auths: Path, name: str = TEMP) -> Path:
    return auths / name / f"{name}.json"


def e_json(auths: Path, name: str = TEMP) -> Path:
    return auths / name / "e.json"


def edit(path: Path, change: Callable[[dict[str, Any]], object]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def set_auth(path: Path, key: str, value: object) -> None:
    edit(path, lambda d: d["authConfig"].__setitem__(key, value))


def del_auth(path: Path, key: str) -> None:
    edit(path, lambda d: d["authConfig"].pop(key))


def line_of(path: Path, needle: str) -> int:
    """1-based line of the first line containing ``needle``, found independently."""
    for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if needle in text:
            return n
    raise AssertionError(f"{needle!r} not in {path}")


def test_samples_are_valid(auths: Path) -> None:
    report = check(auths)
    assert report.diagnostics == ()
    assert sorted(i.name for i in report.instances) == [
        "QywxProxyCompanyA",
        "QywxProxyCompanyB",
        "QywxProxyDefault",
        TEMP,
    ]
    temp = next(i for i in report.instances if i.name == TEMP)
    assert (temp.suite_id, temp.corp_id, temp.is_active) == (
        "tj1234567890abcdef",
        "ww1234567890abcdef",
        True,
    )
    default = next(i for i in report.instances if i.name == "QywxProxyDefault")
    assert default.corp_id is None
    assert all(s not in repr(report) for s in SAMPLE_SECRETS)


# -- files and JSON -----------------------------------------------------------------------


def test_json_syntax_error_reports_its_line(auths: Path) -> None:
    path = biz(auths)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].rstrip(",")  # line 4 loses its comma: line 5 is where JSON breaks
    path.write_text("\n".join(lines), encoding="utf-8")
    d = only(check(auths))
    assert (d.severity, d.file, d.code, d.line) == ("error", str(path), "json-syntax", 5)
    assert "line 5" in d.message and d.instance == TEMP


def test_bom_is_an_error_and_the_rest_is_still_checked(auths: Path) -> None:
    path = biz(auths)
    del_auth(path, "token")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    report = check(auths)
    bom = only(report, "encoding")
    assert (bom.file, bom.line, bom.severity) == (str(path), 1, "error")
    assert "byte order mark" in bom.message
    assert "authConfig.token" in only(report, "missing-field").message


def test_non_utf8_reports_the_line(auths: Path) -> None:
    path = e_json(auths)
    path.write_bytes(b'{\n  "title": "ok",\n  "type": "\xb5\xc7\xc2\xbc"\n}\n')  # GBK
    d = only(check(auths))
    assert (d.file, d.line, d.code) == (str(path), 3, "encoding")
    assert "UTF-8" in d.message


def test_top_level_array(auths: Path) -> None:
    path = biz(auths)
    path.write_text("[\n" + path.read_text(encoding="utf-8") + "]\n", encoding="utf-8")
    d = only(check(auths))
    assert (d.file, d.line, d.code) == (str(path), 1, "wrong-type")
    assert "top level" in d.message and "array" in d.message


def test_e_json_missing(auths: Path) -> None:
    e_json(auths).unlink()
    d = only(check(auths))
    assert (d.file, d.code, d.severity) == (str(e_json(auths)), "missing-file", "error")
    assert "e.json" in d.message


@pytest.mark.parametrize("field", ["title", "type"])
def test_e_json_field_missing(auths: Path, field: str) -> None:
    edit(e_json(auths), lambda d: d.pop(field))
    d = only(check(auths))
    assert (d.file, d.code, d.line) == (str(e_json(auths)), "missing-field", 1)
    assert field in d.message


def test_wrong_element_type(auths: Path) -> None:
    edit(e_json(auths), lambda d: d.__setitem__("type", "auths.loginTypes.QywxType"))
    d = only(check(auths))
    assert (d.code, d.line) == ("wrong-element-type", line_of(e_json(auths), '"type"'))
    assert "auths.loginTypes.QywxProxyType" in d.message and "QywxType" in d.message


def test_business_file_missing(auths: Path) -> None:
    biz(auths).unlink()
    d = only(check(auths))
    assert (d.file, d.code) == (str(biz(auths)), "missing-file")
    assert f"{TEMP}.json" in d.message


def test_business_file_misnamed(auths: Path) -> None:
    biz(auths).rename(auths / TEMP / "config.json")
    d = only(check(auths))
    assert (d.file, d.code) == (str(biz(auths)), "missing-file")
    assert "config.json" in d.message and "named after the folder" in d.message


# -- authConfig and its fields -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "code", "words"),
    [
        (None, "missing-field", "authConfig is missing"),
        ("suiteId=dk1", "wrong-type", "authConfig must be an object, not string"),
        ("null", "wrong-type", "authConfig must be an object, not null"),
    ],
)
def test_auth_config_missing_or_not_an_object(
    auths: Path, value: str | None, code: str, words: str
) -> None:
    path = biz(auths)
    if value is None:
        edit(path, lambda d: d.pop("authConfig"))
    else:
        edit(path, lambda d: d.__setitem__("authConfig", None if value == "null" else value))
    d = only(check(auths))
    assert (d.file, d.code, d.severity) == (str(path), code, "error")
    assert words in d.message
    assert d.line == (1 if value is None else line_of(path, '"authConfig"'))


BROKEN_VALUES = [
    ("missing", "missing-field"),
    ("", "empty-field"),
    ("   ", "empty-field"),
    (42, "wrong-type"),
    (None, "wrong-type"),
    (["x"], "wrong-type"),
]


@pytest.mark.parametrize("field", ["suiteId", "suiteSecret", "encodingAESKey", "token"])
@pytest.mark.parametrize(("value", "code"), BROKEN_VALUES, ids=lambda v: repr(v))
def test_each_auth_config_field_broken(auths: Path, field: str, value: object, code: str) -> None:
    path = biz(auths)
    if value == "missing":
        del_auth(path, field)
    else:
        set_auth(path, field, value)
    d = only(check(auths))
    assert (d.file, d.code, d.severity, d.instance) == (str(path), code, "error", TEMP)
    assert f"authConfig.{field}" in d.message
    expected_line = line_of(path, '"authConfig"' if value == "missing" else f'"{field}"')
    assert d.line == expected_line
    if code == "wrong-type":
        kind = {int: "number", type(None): "null", list: "array"}[type(value)]
        assert f"must be a string, not {kind}" in d.message


VALID_KEY = "4CUdYrBwSjnWyz4yYNsz3PukTqABgnMBwKuGToYu25b"


@pytest.mark.parametrize(
    ("key", "words"),
    [
        (VALID_KEY[:42], "exactly 43 characters (got 42)"),
        (VALID_KEY + "A", "exactly 43 characters (got 44)"),
        (VALID_KEY[:42] + "-", "base64 alphabet"),
        (VALID_KEY[:42] + "=", "base64 alphabet"),
        (VALID_KEY[:42] + "é", "base64 alphabet"),
        (VALID_KEY[:41] + "１２", "base64 alphabet"),
    ],
)
def test_bad_encoding_aes_key(auths: Path, key: str, words: str) -> None:
    set_auth(biz(auths), "encodingAESKey", key)
    d = only(check(auths))
    assert (d.code, d.line) == ("bad-aes-key", line_of(biz(auths), '"encodingAESKey"'))
    assert "authConfig.encodingAESKey" in d.message and words in d.message
    assert key not in d.message


@pytest.mark.parametrize(
    ("token", "code", "words"),
    [
        ("A" * 33, "bad-token", "at most 32 characters (got 33)"),
        ("abc-def", "bad-token", "ASCII letters and digits"),
        ("tokené", "bad-token", "ASCII letters and digits"),  # 'é'.isalnum() is True
        ("token１２３", "bad-token", "ASCII letters and digits"),  # so are full-width digits
        ("tok en", "bad-token", "ASCII letters and digits"),
        ("", "empty-field", "must not be empty"),
    ],
)
def test_bad_token(auths: Path, token: str, code: str, words: str) -> None:
    set_auth(biz(auths), "token", token)
    d = only(check(auths))
    assert (d.code, d.line) == (code, line_of(biz(auths), '"token"'))
    assert "authConfig.token" in d.message and words in d.message
    if token:
        assert token not in d.message


def test_thirty_two_character_token_is_fine(auths: Path) -> None:
    set_auth(biz(auths), "token", "A1" * 16)
    assert check(auths).diagnostics == ()


@pytest.mark.parametrize("value", ["true", 1])
def test_is_active_must_be_boolean(auths: Path, value: object) -> None:
    edit(biz(auths), lambda d: d.__setitem__("isActive", value))
    d = only(check(auths))
    assert (d.code, d.line) == ("wrong-type", line_of(biz(auths), '"isActive"'))
    assert "isActive must be a boolean" in d.message
    if value == "true":
        assert "without quotes" in d.message


def test_is_active_false_is_loaded_inactive(auths: Path) -> None:
    edit(biz(auths), lambda d: d.__setitem__("isActive", False))
    temp = next(i for i in check(auths).instances if i.name == TEMP)
    assert temp.is_active is False


@pytest.mark.parametrize(
    ("value", "code"),
    [(123, "wrong-type"), ("", "empty-field"), ("ww 1234", "bad-id"), (" ww1234", "bad-id")],
)
def test_bad_corp_id(auths: Path, value: object, code: str) -> None:
    edit(biz(auths), lambda d: d.__setitem__("corpId", value))
    d = only(check(auths))
    assert (d.code, d.line) == (code, line_of(biz(auths), '"corpId"'))
    assert "corpId" in d.message


def test_unknown_keys_at_each_level_are_warnings(auths: Path) -> None:
    edit(e_json(auths), lambda d: d.__setitem__("titel", "x"))
    edit(biz(auths), lambda d: d.__setitem__("isactive", True))
    set_auth(biz(auths), "agentId", "1000002")
    report = check(auths)
    assert [d.severity for d in report.diagnostics] == ["warning"] * 3
    assert {d.code for d in report.diagnostics} == {"unknown-key"}
    by_file = {(Path(d.file).name, d.line): d.message for d in report.diagnostics}
    assert "titel" in by_file[("e.json", line_of(e_json(auths), "titel"))]
    assert "did you mean title" in by_file[("e.json", line_of(e_json(auths), "titel"))]
    assert "did you mean isActive" in by_file[(f"{TEMP}.json", line_of(biz(auths), "isactive"))]
    assert "authConfig.agentId" in by_file[(f"{TEMP}.json", line_of(biz(auths), "agentId"))]
    assert report.ok() and not report.ok(strict=True)
    assert len(report.instances) == 4


def test_schema_key_is_accepted(auths: Path) -> None:
    edit(e_json(auths), lambda d: d.__setitem__("$schema", "https://qywx.dev/schema/e.json"))
    assert check(auths).diagnostics == ()


def test_duplicate_keys_warn_at_the_second_occurrence(auths: Path) -> None:
    path = biz(auths)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace('"isActive": true', '"isActive": true,\n  "isActive": false'))
    d = only(check(auths))
    assert (d.severity, d.code, d.line) == ("warning", "duplicate-key", line_of(path, "false"))
    assert "isActive" in d.message and "last one wins" in d.message


def test_duplicate_keys_in_different_objects_are_not_duplicates(auths: Path) -> None:
    edit(biz(auths), lambda d: d["authConfig"].__setitem__("corpId", "ww1"))
    report = check(auths)
    assert [d.code for d in report.diagnostics] == ["unknown-key"]


def _doc_business_example() -> str:
    """The element doc's business file example, verbatim (kept equal to the doc by
    tests/e2e/test_element_doc_examples.py)."""
    return (TEST_DATA / "element_doc" / "business.json").read_text(encoding="utf-8")


def test_element_doc_placeholders_are_errors_that_point_to_init(auths: Path) -> None:
    example = _doc_business_example()
    assert "your_encoding_aes_key" in example  # really the doc's literal text
    biz(auths).write_text(example, encoding="utf-8")
    report = check(auths)
    assert [d.code for d in report.diagnostics] == ["placeholder"] * 3
    for d, field in zip(
        report.diagnostics, ("suiteSecret", "encodingAESKey", "token"), strict=True
    ):
        assert (d.file, d.line) == (str(biz(auths)), line_of(biz(auths), f'"{field}"'))
        assert f"authConfig.{field}" in d.message and "`qywx init" in d.message


# -- env:VAR secrets -------------------------------------------------------------------


def _env_refs(auths: Path) -> None:
    set_auth(biz(auths), "token", "env:QYWX_T_TOKEN")
    set_auth(biz(auths), "encodingAESKey", "env:QYWX_T_KEY")
    set_auth(biz(auths), "suiteSecret", "env:QYWX_T_SECRET")


def test_env_references_are_resolved(auths: Path) -> None:
    _env_refs(auths)
    env = {"QYWX_T_TOKEN": ENV_TOKEN, "QYWX_T_KEY": ENV_KEY, "QYWX_T_SECRET": ENV_SECRET}
    report = check(auths, env=env)
    assert report.diagnostics == ()
    temp = next(i for i in report.instances if i.name == TEMP)
    assert (temp.token, temp.encoding_aes_key, temp.suite_secret) == (
        ENV_TOKEN,
        ENV_KEY,
        ENV_SECRET,
    )
    assert ENV_TOKEN not in repr(temp)


def test_unset_env_variable_is_named_never_valued(auths: Path) -> None:
    _env_refs(auths)
    report = check(auths, env={"QYWX_T_KEY": ENV_KEY, "QYWX_T_SECRET": "", "OTHER": ENV_TOKEN})
    assert sorted(d.code for d in report.diagnostics) == ["env-unset", "env-unset"]
    messages = " ".join(d.message for d in report.diagnostics)
    assert "QYWX_T_TOKEN" in messages and "QYWX_T_SECRET" in messages
    assert "authConfig.token" in messages and "authConfig.suiteSecret" in messages


def test_env_value_breaking_the_rule_names_the_variable_not_the_value(auths: Path) -> None:
    _env_refs(auths)
    bad_token = "not-a-valid-token-Q7x"
    env = {"QYWX_T_TOKEN": bad_token, "QYWX_T_KEY": ENV_KEY, "QYWX_T_SECRET": ENV_SECRET}
    d = only(check(auths, env=env))
    assert d.code == "bad-token" and "$QYWX_T_TOKEN" in d.message
    assert bad_token not in d.message


@pytest.mark.parametrize("ref", ["env:", "env:1ABC", "env:A-B", "env: SPACED", "env:$X"])
def test_malformed_env_reference(auths: Path, ref: str) -> None:
    set_auth(biz(auths), "token", ref)
    d = only(check(auths))
    assert (d.code, d.line) == ("env-reference", line_of(biz(auths), '"token"'))
    assert "authConfig.token" in d.message


def test_no_env_mode_checks_reference_syntax_only(auths: Path) -> None:
    _env_refs(auths)
    assert check(auths, resolve_env=False).diagnostics == ()
    set_auth(biz(auths), "token", "env:1BAD")
    assert only(check(auths, resolve_env=False)).code == "env-reference"


# -- across instances --------------------------------------------------------------------


def _copy_suite(auths: Path, src: str, dst: str, *, keep_secrets: bool) -> None:
    source = json.loads(biz(auths, src).read_text(encoding="utf-8"))["authConfig"]

    def change(d: dict[str, Any]) -> None:
        d["authConfig"]["suiteId"] = source["suiteId"]
        d["authConfig"]["suiteSecret"] = source["suiteSecret"]  # a suite has one secret
        if keep_secrets:  # the token/key pair
            d["authConfig"]["token"] = source["token"]
            d["authConfig"]["encodingAESKey"] = source["encodingAESKey"]

    edit(biz(auths, dst), change)


def test_one_suite_with_two_secrets_is_a_conflict(auths: Path) -> None:
    _copy_suite(auths, "QywxProxyCompanyA", "QywxProxyCompanyB", keep_secrets=True)
    edit(biz(auths, "QywxProxyCompanyB"), lambda d: d["authConfig"].update(suiteSecret="s3cret"))
    d = only(check(auths))
    assert (d.code, d.severity, d.instance) == ("suite-conflict", "error", "QywxProxyCompanyB")
    assert "different suiteSecret" in d.message and "s3cret" not in d.message


def test_one_suite_secret_written_two_ways_is_a_warning(auths: Path) -> None:
    _copy_suite(auths, "QywxProxyCompanyA", "QywxProxyCompanyB", keep_secrets=True)
    secret = json.loads(biz(auths, "QywxProxyCompanyA").read_text("utf-8"))["authConfig"][
        "suiteSecret"
    ]
    edit(
        biz(auths, "QywxProxyCompanyA"),
        lambda d: d["authConfig"].update(suiteSecret="env:QYWX_A_SECRET"),
    )
    d = only(check(auths, env={"QYWX_A_SECRET": secret}))
    assert (d.code, d.severity) == ("suite-secret-source", "warning")
    assert "env:QYWX_A_SECRET" in d.message and secret not in d.message


def test_suite_conflict(auths: Path) -> None:
    _copy_suite(auths, "QywxProxyCompanyA", "QywxProxyCompanyB", keep_secrets=False)
    d = only(check(auths))
    assert (d.code, d.file, d.instance) == (
        "suite-conflict",
        str(biz(auths, "QywxProxyCompanyB")),
        "QywxProxyCompanyB",
    )
    assert d.line == line_of(biz(auths, "QywxProxyCompanyB"), '"suiteId"')
    assert "QywxProxyCompanyA" in d.message and "dk7f3a9c2e51b04d18" in d.message


def test_same_suite_with_the_same_pair_is_fine(auths: Path) -> None:
    _copy_suite(auths, "QywxProxyCompanyA", "QywxProxyCompanyB", keep_secrets=True)
    assert check(auths).diagnostics == ()


def test_inactive_instances_are_exempt(auths: Path) -> None:
    _copy_suite(auths, "QywxProxyCompanyA", "QywxProxyCompanyB", keep_secrets=False)
    edit(biz(auths, "QywxProxyCompanyB"), lambda d: d.__setitem__("isActive", False))
    assert check(auths).diagnostics == ()


def test_ambiguous_corp(auths: Path) -> None:
    _copy_suite(auths, "QywxProxyCompanyA", "QywxProxyCompanyB", keep_secrets=True)
    edit(biz(auths, "QywxProxyCompanyB"), lambda d: d.__setitem__("corpId", "wwa1b2c3d4e5f60a01"))
    d = only(check(auths))
    assert (d.code, d.file) == ("ambiguous-corp", str(biz(auths, "QywxProxyCompanyB")))
    assert d.line == line_of(biz(auths, "QywxProxyCompanyB"), '"corpId"')
    assert "wwa1b2c3d4e5f60a01" in d.message
    edit(biz(auths, "QywxProxyCompanyA"), lambda d: d.__setitem__("isActive", False))
    assert check(auths).diagnostics == ()


def test_one_instance_is_still_checked_against_its_siblings(auths: Path) -> None:
    _copy_suite(auths, "QywxProxyCompanyA", "QywxProxyCompanyB", keep_secrets=False)
    biz(auths, "QywxProxyDefault").write_text("{broken", encoding="utf-8")
    for target in (auths / "QywxProxyCompanyA", biz(auths, "QywxProxyCompanyA")):
        report = check(target)
        assert report.checked == (str(auths / "QywxProxyCompanyA"),)
        d = only(report)  # the broken sibling is not reported, the conflict is
        assert (d.code, d.instance) == ("suite-conflict", "QywxProxyCompanyA")
        assert d.file == str(biz(auths, "QywxProxyCompanyA"))
    assert check(auths / TEMP).diagnostics == ()


def test_conflict_behind_an_unknown_pair_is_still_found(auths: Path) -> None:
    """The first instance of a suite with env: references (unknown under --no-env or
    unset) must not hide a conflict between the later ones."""
    for name in ("QywxProxyDefault", "QywxProxyCompanyB"):
        _copy_suite(auths, "QywxProxyCompanyA", name, keep_secrets=False)
    set_auth(biz(auths, "QywxProxyCompanyA"), "token", "env:QYWX_TOKEN_A")
    set_auth(biz(auths, "QywxProxyCompanyA"), "encodingAESKey", "env:QYWX_KEY_A")
    d = only(check(auths, resolve_env=False))
    assert (d.code, d.instance) == ("suite-conflict", "QywxProxyDefault")
    assert "QywxProxyCompanyB" in d.message


def test_only_the_odd_instance_of_a_suite_is_blamed(auths: Path) -> None:
    """Three agree, one differs: one error, on the one that differs; validating one of
    the healthy ones alone (as pre-commit does) reports nothing."""
    for name in ("QywxProxyCompanyB", "QywxProxyDefault", TEMP):
        _copy_suite(auths, "QywxProxyCompanyA", name, keep_secrets=True)
    for name in ("QywxProxyCompanyB", "QywxProxyDefault", TEMP):
        edit(biz(auths, name), lambda d: d.pop("corpId", None))
    set_auth(biz(auths, "QywxProxyCompanyB"), "token", "OddToken123")
    d = only(check(auths))
    assert (d.code, d.instance) == ("suite-conflict", "QywxProxyCompanyB")
    assert check(auths / "QywxProxyDefault").diagnostics == ()
    assert only(check(auths / "QywxProxyCompanyB")).instance == "QywxProxyCompanyB"


def test_an_instance_with_its_own_errors_still_takes_part(auths: Path) -> None:
    """Every problem in one run: an unset env: secret does not hide a suite conflict."""
    _copy_suite(auths, "QywxProxyCompanyA", "QywxProxyCompanyB", keep_secrets=False)
    set_auth(biz(auths, "QywxProxyCompanyB"), "suiteSecret", "env:QYWX_UNSET_SECRET")
    report = check(auths)
    assert sorted(d.code for d in report.errors) == ["env-unset", "suite-conflict"]
    assert "QywxProxyCompanyB" not in [i.name for i in report.instances]


def test_one_corp_in_two_suites_is_a_warning(auths: Path) -> None:
    edit(biz(auths, "QywxProxyCompanyB"), lambda d: d.__setitem__("corpId", "wwa1b2c3d4e5f60a01"))
    d = only(check(auths))
    assert (d.severity, d.code, d.instance) == ("warning", "shared-corp", "QywxProxyCompanyB")
    assert "getLoginCode" in d.message and "QywxProxyCompanyA" in d.message


def test_separate_auths_folders_are_not_compared(tmp_path: Path) -> None:
    """Two apps in one repository (pre-commit passes files of both) are two deployments."""
    for app in ("app1", "app2"):
        shutil.copytree(SAMPLES, tmp_path / app / "auths")
    files = [biz(tmp_path / app / "auths", "QywxProxyCompanyA") for app in ("app1", "app2")]
    report = check(*files)
    assert report.diagnostics == () and len(report.instances) == 2


def test_dot_and_bare_file_name_inside_an_instance(auths: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(auths / TEMP)
    for target in (Path(), Path("e.json"), Path(f"{TEMP}.json")):
        report = check(target)
        assert report.diagnostics == (), [d.as_dict() for d in report.diagnostics]
        assert [i.name for i in report.instances] == [TEMP]
    assert find_instance(".", auths, env={}).name == TEMP  # --auth . from inside it


def test_a_file_outside_any_instance_is_a_usage_error(tmp_path: Path) -> None:
    stray = tmp_path / "notes.txt"
    stray.write_text("x", encoding="utf-8")
    with pytest.raises(UsageError, match="not inside an auths/ instance folder"):
        check(stray)


def test_strict_promotes_every_warning(auths: Path) -> None:
    set_auth(biz(auths), "agentId", "1000002")
    report = check(auths)
    assert [d.severity for d in report.diagnostics] == ["warning"] and report.ok()
    strict = report.promoted()
    assert [d.severity for d in strict.diagnostics] == ["error"]
    assert (len(strict.errors), len(strict.warnings), strict.ok()) == (1, 0, False)


def test_five_breakages_five_diagnostics(auths: Path) -> None:
    edit(e_json(auths), lambda d: d.pop("title"))
    set_auth(biz(auths), "token", "bad-token")
    set_auth(biz(auths), "encodingAESKey", "short")
    edit(biz(auths), lambda d: d.__setitem__("isActive", "yes"))
    edit(biz(auths, "QywxProxyCompanyA"), lambda d: d.__setitem__("corpId", 7))
    report = check(auths)
    assert sorted(d.code for d in report.errors) == [
        "bad-aes-key",
        "bad-token",
        "missing-field",
        "wrong-type",
        "wrong-type",
    ]
    assert len(report.diagnostics) == 5
    assert sorted(i.name for i in report.instances) == ["QywxProxyCompanyB", "QywxProxyDefault"]


# -- finding one instance ----------------------------------------------------------------


def test_find_instance_by_name_path_and_element_name(auths: Path) -> None:
    by_name = find_instance(TEMP, auths, env={})
    assert by_name.name == TEMP and by_name.element_name == "auths.QywxProxyTemp"
    assert find_instance(f"auths.{TEMP}", auths, env={}) == by_name
    assert find_instance(str(auths / TEMP), auths, env={}) == by_name
    assert find_instance(str(auths / TEMP), Path("/nonexistent"), env={}) == by_name


@pytest.mark.parametrize("ref", ["Nope", "", "../auths", "auths.Nope"])
def test_find_instance_unknown_lists_the_available(auths: Path, ref: str) -> None:
    with pytest.raises(InstanceNotFound) as err:
        find_instance(ref, auths, env={})
    assert "available: QywxProxyCompanyA, QywxProxyCompanyB, QywxProxyDefault" in err.value.message


def test_find_instance_invalid_names_file_and_field(auths: Path) -> None:
    set_auth(biz(auths), "token", "bad-token")
    with pytest.raises(ConfigError) as err:
        find_instance(TEMP, auths, env={})
    assert not isinstance(err.value, InstanceNotFound)
    line = line_of(biz(auths), '"token"')
    assert f"{biz(auths)}:{line}" in err.value.message and "authConfig.token" in err.value.message


@pytest.mark.parametrize("size", [64 * 1024 - 1, 64 * 1024, 300 * 1024, MAX_CONFIG_BYTES])
def test_a_file_read_in_chunks_is_read_whole(auths: Path, size: int) -> None:
    """Files are read 64 KiB at a time up to the cap: a file of any size up to it parses
    as written (padding after the object, which JSON allows), one byte more does not."""
    path = biz(auths)
    text = path.read_text(encoding="utf-8").rstrip()
    padded = text + " " * (size - len(text.encode()))
    path.write_text(padded, encoding="utf-8")
    assert path.stat().st_size == size
    assert check(auths).diagnostics == ()
    if size == MAX_CONFIG_BYTES:
        path.write_text(padded + " ", encoding="utf-8")
        assert only(check(auths)).code == "too-large"


def test_load_instances_skips_invalid(auths: Path) -> None:
    set_auth(biz(auths), "token", "bad-token")
    assert sorted(i.name for i in load_instances(auths, env={})) == [
        "QywxProxyCompanyA",
        "QywxProxyCompanyB",
        "QywxProxyDefault",
    ]


def test_instance_dirs_accepts_root_auths_instance_and_file(auths: Path) -> None:
    root = auths.parent
    four = sorted(auths.iterdir())
    assert instance_dirs(root) == four
    assert instance_dirs(auths) == four
    assert instance_dirs(auths / TEMP) == [auths / TEMP]
    assert instance_dirs(e_json(auths)) == [auths / TEMP]
    (auths / TEMP / "notes").mkdir()
    (auths / TEMP / "notes" / "x.json").write_text("{}")
    assert instance_dirs(auths / TEMP / "notes" / "x.json") == [auths / TEMP]
    assert instance_dirs(auths / TEMP / "notes") == [auths / TEMP]
    (auths / "stray.json").write_text("{}")
    assert instance_dirs(auths / "stray.json") == four
    with pytest.raises(UsageError, match="does not exist"):
        instance_dirs(auths / "missing")


# -- breakages nobody listed ---------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _deep(auths: Path) -> Path:
    _write(biz(auths), '{"authConfig": ' + "[" * 50_000 + "]" * 50_000 + "}")
    return biz(auths)


def _huge(auths: Path) -> Path:
    _write(biz(auths), '{"pad": "' + "x" * (2 * 1024 * 1024) + '"}')
    return biz(auths)


def _e_symlink_loop(auths: Path) -> Path:
    e_json(auths).unlink()
    e_json(auths).symlink_to("e.json")
    return e_json(auths)


def _empty(auths: Path) -> Path:
    _write(e_json(auths), "  \n")
    return e_json(auths)


def _constant(literal: str) -> Callable[[Path], Path]:
    def breaker(auths: Path) -> Path:
        _write(biz(auths), biz(auths).read_text().replace("true", literal))
        return biz(auths)

    return breaker


def _directory(auths: Path) -> Path:
    e_json(auths).unlink()
    e_json(auths).mkdir()
    return e_json(auths)


def _trailing_comma(auths: Path) -> Path:
    _write(biz(auths), biz(auths).read_text().replace('"ww1234567890abcdef"', '"ww1",'))
    return biz(auths)


def _line_comment(auths: Path) -> Path:
    _write(biz(auths), biz(auths).read_text().replace('"isActive"', '// on\n  "isActive"'))
    return biz(auths)


def _block_comment(auths: Path) -> Path:
    _write(e_json(auths), "/* element */\n" + e_json(auths).read_text())
    return e_json(auths)


def _single_quotes(auths: Path) -> Path:
    _write(e_json(auths), "{'title': 'x', 'type': 'auths.loginTypes.QywxProxyType'}")
    return e_json(auths)


def _long_title(auths: Path) -> Path:
    edit(e_json(auths), lambda d: d.__setitem__("title", "长" * 10_000))
    return e_json(auths)


def _title_newline(auths: Path) -> Path:
    edit(e_json(auths), lambda d: d.__setitem__("title", "two\nlines"))
    return e_json(auths)


def _title_escape(auths: Path) -> Path:
    edit(e_json(auths), lambda d: d.__setitem__("title", "\u001b[31mPWNED"))
    return e_json(auths)


def _type_trailing_space(auths: Path) -> Path:
    edit(e_json(auths), lambda d: d.__setitem__("type", "auths.loginTypes.QywxProxyType "))
    return e_json(auths)


def _lone_surrogate(auths: Path) -> Path:
    _write(e_json(auths), e_json(auths).read_text().replace('"企业', '"\\ud800企业'))
    return e_json(auths)


def _huge_number(auths: Path) -> Path:
    _write(biz(auths), biz(auths).read_text().replace("true", "9" * 5000))
    return biz(auths)


def _utf16(auths: Path) -> Path:
    e_json(auths).write_bytes(e_json(auths).read_text().encode("utf-16"))
    return e_json(auths)


def _fifo(auths: Path) -> Path:
    e_json(auths).unlink()
    os.mkfifo(e_json(auths))
    return e_json(auths)


def _schema_number(auths: Path) -> Path:
    edit(biz(auths), lambda d: d.__setitem__("$schema", 7))
    return biz(auths)


def _case_typo_key(auths: Path) -> Path:
    edit(
        biz(auths), lambda d: d["authConfig"].__setitem__("suiteid", d["authConfig"].pop("suiteId"))
    )
    return biz(auths)


def _business_key_in_e_json(auths: Path) -> Path:
    edit(e_json(auths), lambda d: d.__setitem__("isActive", True))
    return e_json(auths)


def _nested_extra(auths: Path) -> Path:
    set_auth(biz(auths), "callback", {"url": {"deep": [1, {"x": None}]}})
    return biz(auths)


def _control_char_key(auths: Path) -> Path:
    edit(biz(auths), lambda d: d.__setitem__("bad\nkey\x00" + "k" * 500, 1))
    return biz(auths)


def _zero_width_secret(auths: Path) -> Path:
    source = json.loads(biz(auths).read_text())["authConfig"]["suiteSecret"]
    set_auth(biz(auths), "suiteSecret", source + "\u200b")
    return biz(auths)


def _secret_trailing_space(auths: Path) -> Path:
    source = json.loads(biz(auths).read_text())["authConfig"]["suiteSecret"]
    set_auth(biz(auths), "suiteSecret", source + " ")
    return biz(auths)


def _case_mismatched_file(auths: Path) -> Path:
    biz(auths).rename(auths / TEMP / "qywxproxytemp.json")
    return biz(auths)


def _e_json_uppercase(auths: Path) -> Path:
    e_json(auths).rename(auths / TEMP / "E.json")
    return e_json(auths)


def _number_as_suite_id_string_with_unicode(auths: Path) -> Path:
    set_auth(biz(auths), "suiteId", "dk７f3a")
    return biz(auths)


# (breaker, expected code, severity, words the message must contain, line known?)
UNSEEN: dict[str, tuple[Callable[[Path], Path], str, str, str, bool]] = {
    "deeply-nested": (_deep, "json-syntax", "error", "nested too deeply", False),
    "huge-file": (_huge, "too-large", "error", "larger than", False),
    "symlink-loop": (_e_symlink_loop, "unreadable", "error", "looping", False),
    "empty-file": (_empty, "json-syntax", "error", "empty", True),
    "NaN": (_constant("NaN"), "json-syntax", "error", "NaN is not a JSON value", True),
    "Infinity": (_constant("Infinity"), "json-syntax", "error", "Infinity", True),
    "-Infinity": (_constant("-Infinity"), "json-syntax", "error", "-Infinity", True),
    "directory": (_directory, "not-a-file", "error", "e.json is a folder", False),
    "fifo": (_fifo, "not-a-file", "error", "not a regular file", False),
    "trailing-comma": (_trailing_comma, "json-syntax", "error", "trailing comma", True),
    "line-comment": (_line_comment, "json-syntax", "error", "comments are not allowed", True),
    "block-comment": (_block_comment, "json-syntax", "error", "comments are not allowed", True),
    "single-quotes": (_single_quotes, "json-syntax", "error", "double quotes", True),
    "title-10k": (_long_title, "bad-title", "error", "title must be at most 128", True),
    "title-newline": (_title_newline, "bad-title", "error", "title must be one line", True),
    "title-escape": (_title_escape, "bad-title", "error", "without control characters", True),
    "type-space": (_type_trailing_space, "wrong-element-type", "error", "QywxProxyType '", True),
    "lone-surrogate": (_lone_surrogate, "encoding", "error", "title contains an unpaired", True),
    "huge-number": (_huge_number, "json-syntax", "error", "number literal is too long", True),
    "utf-16": (_utf16, "encoding", "error", "UTF-16", True),
    "schema-not-string": (_schema_number, "wrong-type", "error", "$schema must be a string", True),
    "key-case-typo": (_case_typo_key, "missing-field", "error", "authConfig.suiteId", True),
    "key-in-wrong-file": (
        _business_key_in_e_json,
        "unknown-key",
        "warning",
        "belongs in QywxProxyTemp.json",
        True,
    ),
    "nested-extra": (_nested_extra, "unknown-key", "warning", "authConfig.callback", True),
    "control-char-key": (_control_char_key, "unknown-key", "warning", "'bad\\nkey", True),
    "zero-width-secret": (_zero_width_secret, "bad-secret", "error", "suiteSecret", True),
    "secret-space": (_secret_trailing_space, "bad-secret", "error", "no spaces", True),
    "case-mismatch": (_case_mismatched_file, "missing-file", "error", "case-sensitive", False),
    "E.json": (_e_json_uppercase, "missing-file", "error", "found E.json", False),
    "fullwidth-id": (_number_as_suite_id_string_with_unicode, "bad-id", "error", "suiteId", True),
}


@pytest.mark.parametrize("case", UNSEEN, ids=str)
def test_unseen_breakage(auths: Path, case: str) -> None:
    breaker, code, severity, words, has_line = UNSEEN[case]
    path = breaker(auths)
    report = check(auths)
    d = only(report, code)
    assert (d.severity, d.file, d.instance) == (severity, str(path), TEMP)
    assert words in d.message, d.message
    assert (d.line is not None) == has_line, d
    assert len(d.message) < 400
    assert TEMP not in {i.name for i in report.instances} or severity == "warning"
    others = [x for x in report.diagnostics if x.instance != TEMP]
    assert others == []


def test_unseen_lines_point_at_the_culprit(auths: Path) -> None:
    path = _trailing_comma(auths)
    assert only(check(auths)).line == line_of(path, '"ww1",') + 1
    shutil.copy(SAMPLES / TEMP / f"{TEMP}.json", path)
    _constant("NaN")(auths)
    assert only(check(auths)).line == line_of(path, "NaN")
    shutil.copy(SAMPLES / TEMP / f"{TEMP}.json", path)
    _nested_extra(auths)
    assert only(check(auths)).line == line_of(path, '"callback"')


@pytest.mark.parametrize("name", ["Qywx Proxy", "Qywx.Proxy", "企业登录", "1Qywx", "Qywx-Proxy"])
def test_bad_folder_names(auths: Path, name: str) -> None:
    shutil.copytree(auths / TEMP, auths / name)
    (auths / name / f"{TEMP}.json").rename(auths / name / f"{name}.json")
    report = check(auths)
    bad = only(report, "bad-name")
    assert (bad.file, bad.instance, bad.line) == (str(auths / name), name, None)
    assert repr(name) in bad.message


def test_folder_name_that_is_not_utf8(auths: Path) -> None:
    raw = os.fsencode(auths) + b"/Qywx\xff"
    os.mkdir(raw)
    report = check(auths)
    d = only(report, "bad-name")
    d.file.encode("utf-8")  # printable on any UTF-8 stream
    json.dumps(report.checked, ensure_ascii=False).encode("utf-8")
    assert "\\xff" in d.file


@pytest.mark.parametrize("target", ["nowhere", "Gone"], ids=["dangling", "loop"])
def test_broken_instance_link_is_reported(auths: Path, target: str) -> None:
    (auths / "Gone").symlink_to(auths / target)
    d = only(check(auths), "unreadable")
    assert (d.file, d.instance, d.severity) == (str(auths / "Gone"), "Gone", "error")
    assert "looping symbolic link" in d.message


def test_folder_with_only_e_json(auths: Path) -> None:
    (auths / "Half").mkdir()
    shutil.copy(e_json(auths), auths / "Half" / "e.json")
    d = only(check(auths))
    assert (d.code, d.file) == ("missing-file", str(biz(auths, "Half")))
