"""``qywx validate`` as CI runs it: the real console script, exit codes, clean stderr.

Every run is a subprocess (``python -m qywx_cli``), because exit codes, stderr and
"nothing but the document on stdout" are the contract, and CliRunner would hide them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from tests.helpers import REPO, SAMPLES, assert_one_line_error, qywx_env, run_qywx

TEMP = "QywxProxyTemp"
ENV_TOKEN = "Wm4Xk9Qa2Zr7Tb5Nc1Vd8Hf3Jp6Gs0Ly"
GITHUB_LINE = re.compile(r"^::(error|warning) file=([^,:]+)(?:,line=(\d+))?,title=([a-z-]+)::(.+)$")


def qywx(
    *args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI with a clean QYWX_* environment plus ``env``; tokens in it stay hidden."""
    extra = env or {}
    return run_qywx(
        *args,
        env=qywx_env(**extra),
        cwd=cwd or REPO,
        secrets=[v for k, v in extra.items() if k.endswith("TOKEN")],
    )


def qywx_all(
    calls: Sequence[Sequence[object]],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> list[subprocess.CompletedProcess[str]]:
    """Several independent runs at once: each is a full interpreter start."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: qywx(*map(str, args), cwd=cwd, env=env), calls))


FORMATS = ("text", "json", "github", "junit")


def biz(auths: Path, name: str = TEMP) -> Path:
    return auths / name / f"{name}.json"


def set_auth(auths: Path, key: str, value: Any, name: str = TEMP) -> None:
    data = json.loads(biz(auths, name).read_text(encoding="utf-8"))
    data["authConfig"][key] = value
    biz(auths, name).write_text(json.dumps(data, indent=2), encoding="utf-8")


def line_of(path: Path, needle: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(n for n, text in enumerate(lines, 1) if needle in text)


def test_samples_json_ok() -> None:
    proc = qywx("validate", "sample_auths", "--format", "json")
    assert proc.returncode == 0 and proc.stderr == ""
    doc = json.loads(proc.stdout)
    assert list(doc) == ["ok", "errors", "warnings", "diagnostics", "instances"]
    assert (doc["ok"], doc["errors"], doc["warnings"], doc["diagnostics"]) == (True, 0, 0, [])
    assert sorted(i["name"] for i in doc["instances"]) == [
        "QywxProxyCompanyA",
        "QywxProxyCompanyB",
        "QywxProxyDefault",
        TEMP,
    ]
    assert all("token" not in i and "suiteSecret" not in i for i in doc["instances"])


def test_samples_text_ok() -> None:
    proc = qywx("validate", "sample_auths")
    assert proc.returncode == 0 and proc.stderr == ""
    assert "4 instances checked, 0 error(s), 0 warning(s)" in proc.stdout


def test_broken_exits_1_with_every_diagnostic(auths: Path) -> None:
    set_auth(auths, "token", "bad-token")
    set_auth(auths, "encodingAESKey", "short", name="QywxProxyCompanyA")
    proc = qywx("validate", auths, "--format", "json")
    assert proc.returncode == 1 and proc.stderr == ""
    doc = json.loads(proc.stdout)
    assert (doc["ok"], doc["errors"], doc["warnings"]) == (False, 2, 0)
    assert {(d["code"], d["instance"]) for d in doc["diagnostics"]} == {
        ("bad-token", TEMP),
        ("bad-aes-key", "QywxProxyCompanyA"),
    }
    assert set(doc["diagnostics"][0]) == {"severity", "file", "line", "code", "message", "instance"}
    text = qywx("validate", auths)
    assert text.returncode == 1 and "2 error(s)" in text.stdout
    line = line_of(biz(auths), "bad-token")
    assert f"{biz(auths)}:{line}: error[bad-token]: authConfig.token may contain" in text.stdout


USAGE_ERRORS = [
    (["validate", "does-not-exist"], "path does not exist"),
    (["validate", "sample_auths", "--format", "xml"], "--format"),
    (["validate", "sample_auths", "--bogus"], "No such option: --bogus"),
    (["validate", "sample_auths", "--strict=yes"], "--strict"),
]


def test_usage_errors_exit_2_with_one_line() -> None:
    runs = qywx_all([args for args, _ in USAGE_ERRORS])
    for (_, words), proc in zip(USAGE_ERRORS, runs, strict=True):
        assert_one_line_error(proc, 2, words)


def test_no_instances_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "auths").mkdir()
    assert_one_line_error(qywx("validate", tmp_path / "auths"), 2, "no instance folders")


def test_debug_shows_the_traceback_only_then() -> None:
    proc = qywx("validate", "does-not-exist", "--debug")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr
    assert proc.stderr.splitlines()[-1] == "qywx: error: path does not exist: does-not-exist"


def test_strict_turns_warnings_into_failure(auths: Path) -> None:
    set_auth(auths, "agentId", "1000002")
    relaxed = qywx("validate", auths, "--format", "json")
    assert relaxed.returncode == 0
    assert (json.loads(relaxed.stdout)["warnings"], json.loads(relaxed.stdout)["ok"]) == (1, True)
    strict = qywx("validate", auths, "--format", "json", "--strict")
    assert strict.returncode == 1
    doc = json.loads(strict.stdout)
    assert (doc["ok"], doc["errors"], doc["warnings"]) == (False, 1, 0)
    assert [d["severity"] for d in doc["diagnostics"]] == ["error"]  # counts match the list
    text = qywx("validate", auths, "--strict")
    assert "error[unknown-key]" in text.stdout
    assert text.stdout.splitlines()[-1].endswith("1 error(s), 0 warning(s)")


def test_github_annotations(auths: Path) -> None:
    set_auth(auths, "token", "bad-token")
    set_auth(auths, "agentId", "1")
    proc = qywx("validate", auths, "--format", "github")
    assert proc.returncode == 1 and proc.stderr == ""
    *annotations, summary = proc.stdout.splitlines()
    assert summary == "4 instances checked, 1 error(s), 1 warning(s)"
    path = biz(auths)
    assert annotations == [
        f"::error file={path},line={line_of(path, 'bad-token')},title=bad-token::"
        "authConfig.token may contain only ASCII letters and digits (WeCom console rule)",
        f"::warning file={path},line={line_of(path, 'agentId')},title=unknown-key::"
        "unknown key authConfig.agentId, not part of auths.loginTypes.QywxProxyType",
    ]
    strict = qywx("validate", auths, "--format", "github", "--strict")
    assert [GITHUB_LINE.match(x)[1] for x in strict.stdout.splitlines()[:-1]] == ["error"] * 2  # type: ignore[index]


def test_github_escaping(auths: Path) -> None:
    odd = auths / "Odd,Name:1"
    shutil.copytree(auths / TEMP, odd)
    (odd / f"{TEMP}.json").rename(odd / "Odd,Name:1.json")
    data = json.loads((odd / "Odd,Name:1.json").read_text(encoding="utf-8"))
    data["50%off\r\nx"] = 1
    data["isActive"] = False  # a copy of an active instance would also clash with it
    (odd / "Odd,Name:1.json").write_text(json.dumps(data), encoding="utf-8")
    proc = qywx("validate", auths, "--format", "github")
    lines = [x for x in proc.stdout.splitlines() if "Odd" in x]
    assert len(lines) == 2
    for line in lines:
        m = GITHUB_LINE.match(line)
        assert m is not None, line
        assert "Odd%2CName%3A1" in m[2] and "," not in m[2].split("auths/")[-1]
    bad_name = next(x for x in lines if "title=bad-name" in x)
    assert "'Odd,Name:1'" in bad_name  # message data keeps ',' and ':'
    unknown = next(x for x in lines if "title=unknown-key" in x)
    assert "50%25off" in unknown and "\r" not in unknown
    assert "'50%25off\\r\\nx'" in unknown  # the key is shown escaped, on one line


def test_junit_report(auths: Path) -> None:
    set_auth(auths, "token", "bad-token")
    set_auth(auths, "agentId", "1", name="QywxProxyCompanyA")
    proc = qywx("validate", auths, "--format", "junit")
    assert proc.returncode == 1 and proc.stderr == ""
    root = ET.fromstring(proc.stdout)
    suite = root.find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("4", "1")
    cases = {c.get("name", ""): c for c in suite.iter("testcase")}
    assert sorted(cases) == sorted(p.name for p in auths.iterdir())
    failure = cases[TEMP].find("failure")
    assert failure is not None and failure.get("type") == "bad-token"
    assert "authConfig.token" in (failure.text or "")
    assert cases["QywxProxyCompanyA"].find("failure") is None
    assert "unknown-key" in (cases["QywxProxyCompanyA"].findtext("system-out") or "")
    strict = ET.fromstring(qywx("validate", auths, "--format", "junit", "--strict").stdout)
    assert strict.find("testsuite").get("failures") == "2"  # type: ignore[union-attr]


def test_junit_survives_control_characters(auths: Path) -> None:
    data = json.loads(biz(auths).read_text(encoding="utf-8"))
    data["bell\x07\x1b[31m"] = 1
    biz(auths).write_text(json.dumps(data), encoding="utf-8")
    proc = qywx("validate", auths, "--format", "junit", "--strict")
    assert proc.returncode == 1
    ET.fromstring(proc.stdout)  # still well-formed XML


def test_default_path_sources(tmp_path: Path) -> None:
    shutil.copytree(SAMPLES, tmp_path / "auths")
    shutil.copytree(SAMPLES / TEMP, tmp_path / "elsewhere" / TEMP)
    shutil.copytree(SAMPLES / TEMP, tmp_path / "conf" / "mine" / TEMP)
    (tmp_path / "qywx.toml").write_text('auths = "conf/mine"\n', encoding="utf-8")

    def counts(calls: list[list[str | Path]], env: dict[str, str] | None = None) -> list[int]:
        runs = qywx_all([["validate", "--format", "json", *c] for c in calls], tmp_path, env)
        assert [p.returncode for p in runs] == [0] * len(calls), [p.stderr for p in runs]
        return [len(json.loads(p.stdout)["instances"]) for p in runs]

    assert counts([[]]) == [1]  # qywx.toml in cwd
    assert counts([[]], env={"QYWX_AUTHS": "elsewhere"}) == [1]
    assert counts([[]], env={"QYWX_AUTHS": str(tmp_path / "auths")}) == [4]
    (tmp_path / "qywx.toml").unlink()
    assert counts([[]]) == [4]  # ./auths
    proc = qywx("--auths", "elsewhere", "validate", "--format", "json", cwd=tmp_path)
    assert [i["path"] for i in json.loads(proc.stdout)["instances"]] == [f"elsewhere/{TEMP}"]
    shutil.rmtree(tmp_path / "auths")
    assert_one_line_error(qywx("validate", cwd=tmp_path), 2, "no auths/ folder")


def test_default_auths_gives_relative_file_names(tmp_path: Path) -> None:
    shutil.copytree(SAMPLES, tmp_path / "auths")
    set_auth(tmp_path / "auths", "token", "bad-token")
    proc = qywx("validate", "--format", "github", cwd=tmp_path)
    assert proc.stdout.startswith(f"::error file=auths/{TEMP}/{TEMP}.json,line=")


def test_accepted_targets(tmp_path: Path) -> None:
    shutil.copytree(SAMPLES, tmp_path / "auths")
    (tmp_path / "auths" / TEMP / "x").mkdir()
    targets = ["auths", ".", f"auths/{TEMP}", f"auths/{TEMP}/e.json", f"auths/{TEMP}/x"]
    runs = qywx_all([["validate", tmp_path / t, "--format", "json"] for t in targets])
    for target, proc in zip(targets, runs, strict=True):
        assert proc.returncode == 0, (target, proc.stderr)
        names = [i["name"] for i in json.loads(proc.stdout)["instances"]]
        assert names == ([TEMP] if TEMP in target else sorted(p.name for p in SAMPLES.iterdir()))


def test_env_secrets_and_no_env(auths: Path) -> None:
    set_auth(auths, "token", "env:QYWX_TEMP_TOKEN")
    unset, no_env = qywx_all(
        [["validate", auths, "--format", "json"], ["validate", auths, "--no-env"]]
    )
    assert unset.returncode == 1 and no_env.returncode == 0
    (d,) = json.loads(unset.stdout)["diagnostics"]
    assert d["code"] == "env-unset" and "QYWX_TEMP_TOKEN" in d["message"]
    ok = qywx("validate", auths, "--format", "json", env={"QYWX_TEMP_TOKEN": ENV_TOKEN})
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    # a secret that breaks its rule is described in every format, never shown
    bad_env = {"QYWX_TEMP_TOKEN": ENV_TOKEN + "-"}
    calls = [["validate", auths, "--format", fmt] for fmt in FORMATS]
    for proc in qywx_all(calls, env=bad_env):
        assert proc.returncode == 1 and proc.stderr == ""
        assert "$QYWX_TEMP_TOKEN" in proc.stdout


def test_hostile_folder_never_crashes(auths: Path) -> None:
    os.mkfifo(auths / TEMP / "e.json.tmp")
    (auths / TEMP / "e.json").unlink()
    os.mkfifo(auths / TEMP / "e.json")
    os.mkdir(os.fsencode(auths) + b"/Bad\xffName")
    (auths / "Loop").symlink_to(auths / "Loop")
    biz(auths, "QywxProxyCompanyA").write_text('{"authConfig": "\\ud800", "x": NaN}')
    biz(auths, "QywxProxyCompanyB").write_bytes(b"\xef\xbb\xbf" + b"[" * 100_000)
    calls = [["validate", auths, "--format", fmt] for fmt in FORMATS]
    runs = qywx_all(calls, env={"PYTHONIOENCODING": "utf-8"})  # strict: no surrogates pass
    for fmt, proc in zip(FORMATS, runs, strict=True):
        assert proc.returncode == 1 and proc.stderr == "", (fmt, proc.stderr)
        if fmt == "json":
            doc = json.loads(proc.stdout)
            assert {d["instance"] for d in doc["diagnostics"]} >= {
                TEMP,
                "Loop",
                "QywxProxyCompanyA",
                "QywxProxyCompanyB",
            }
        if fmt == "junit":
            ET.fromstring(proc.stdout)


def test_version() -> None:
    proc = qywx("--version")
    assert proc.returncode == 0 and re.fullmatch(r"qywx \d+\.\d+\.\d+\n", proc.stdout)


def test_root_options_may_follow_the_command(tmp_path: Path) -> None:
    """``qywx validate --auths DIR`` and ``qywx log list --db=F`` read like the root form."""
    auths = tmp_path / "elsewhere"
    shutil.copytree(SAMPLES, auths)
    after = qywx("validate", "--format", "json", "--auths", auths, cwd=tmp_path)
    before = qywx("--auths", auths, "validate", "--format", "json", cwd=tmp_path)
    assert after.returncode == before.returncode == 0
    assert json.loads(after.stdout)["instances"] == json.loads(before.stdout)["instances"]
    assert len(json.loads(after.stdout)["instances"]) == 4
    missing_db = qywx("log", "list", f"--db={tmp_path / 'none.db'}", cwd=tmp_path)
    assert_one_line_error(missing_db, None, "none.db")
    last_wins = qywx("--db", tmp_path / "a.db", "log", "list", "--db", tmp_path / "b.db")
    assert_one_line_error(last_wins, None, "b.db")
    assert_one_line_error(qywx("validate", "--auths", cwd=tmp_path), 2, "'--auths' requires")
