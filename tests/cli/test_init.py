"""``qywx init`` through the real console script: what it writes must validate."""

from __future__ import annotations

import json
import re
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from qywx_cli.core.errors import ConfigError, UsageError
from qywx_cli.core.scaffold import SCHEMA_URLS, env_var_names, write_instance
from tests.helpers import REPO, assert_one_line_error, qywx_env, run_qywx

SUITE = "dk7f3a9c2e51b04d18"
SUITE_SECRET = "suite-Secret-Rb4Lx9Qm2Tz7Vc1Hn6Wd3"
CORP = "wwa0a0a0a0a0a0a0a0"


def qywx(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The console script with ``env`` added to a clean environment."""
    return run_qywx(*args, env=qywx_env(**(env or {})), cwd=cwd or REPO)


def secrets_of(path: Path) -> dict[str, str]:
    return dict(json.loads(path.read_text(encoding="utf-8"))["authConfig"])


def exports(path: Path) -> dict[str, str]:
    """The variables a shell would get from ``source FILE`` (values are shlex-quoted)."""
    out = subprocess.run(
        ["sh", "-c", f'. "{path}" && env'], capture_output=True, text=True, check=True
    ).stdout
    names = re.findall(r"^export (\w+)=", path.read_text(encoding="utf-8"), re.M)
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {n: env[n] for n in names}


def test_init_writes_files_that_validate(tmp_path: Path) -> None:
    auths = tmp_path / "auths"
    proc = qywx(
        "init", "Shop", "--suite-id", SUITE, "--corp-id", "wwshop0001", "--dir", auths,
        env={"QYWX_SUITE_SECRET": SUITE_SECRET},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"wrote {auths / 'Shop' / 'e.json'}",
        f"wrote {auths / 'Shop' / 'Shop.json'}",
    ]
    assert "next:" in proc.stderr and f"qywx validate {auths / 'Shop'}" in proc.stderr
    e_doc = json.loads((auths / "Shop" / "e.json").read_text(encoding="utf-8"))
    assert e_doc["$schema"] == SCHEMA_URLS["e"]
    biz = json.loads((auths / "Shop" / "Shop.json").read_text(encoding="utf-8"))
    assert biz["$schema"] == SCHEMA_URLS["business"] and biz["corpId"] == "wwshop0001"
    auth = biz["authConfig"]
    assert (auth["suiteId"], auth["suiteSecret"]) == (SUITE, SUITE_SECRET)
    assert re.fullmatch(r"[A-Za-z0-9]{43}", auth["encodingAESKey"])
    assert re.fullmatch(r"[A-Za-z0-9]{32}", auth["token"])
    assert stat.S_IMODE((auths / "Shop" / "Shop.json").stat().st_mode) == 0o600
    check = qywx("validate", auths, "--format", "json", "--strict")
    assert check.returncode == 0, check.stdout
    assert SUITE_SECRET not in proc.stdout + proc.stderr + check.stdout


def test_suite_secret_reference_when_not_given(tmp_path: Path) -> None:
    proc = qywx("init", "Shop", "--suite-id", SUITE, "--dir", tmp_path, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert list(doc) == [
        "instance",
        "folder",
        "files",
        "env_vars",
        "secrets_file",
        "reused_from",
        "next",
    ]
    assert doc["env_vars"] == ["QYWX_SHOP_SUITE_SECRET"] and doc["secrets_file"] is None
    assert secrets_of(tmp_path / "Shop" / "Shop.json")["suiteSecret"] == (
        "env:QYWX_SHOP_SUITE_SECRET"
    )
    unset = qywx("validate", tmp_path / "Shop", "--format", "json")
    assert unset.returncode == 1
    (d,) = json.loads(unset.stdout)["diagnostics"]
    assert d["code"] == "env-unset" and "QYWX_SHOP_SUITE_SECRET" in d["message"]
    ok = qywx("validate", tmp_path / "Shop", env={"QYWX_SHOP_SUITE_SECRET": SUITE_SECRET})
    assert ok.returncode == 0


def test_fresh_token_and_key_each_time(tmp_path: Path) -> None:
    values = []
    for n, name in enumerate(("One", "Two", "Three")):
        write_instance(name, tmp_path, suite_id=f"{SUITE}{n}", suite_secret=SUITE_SECRET)
        values.append(secrets_of(tmp_path / name / f"{name}.json"))
    assert len({v["token"] for v in values}) == 3
    assert len({v["encodingAESKey"] for v in values}) == 3


def test_second_instance_of_a_suite_shares_its_pair(tmp_path: Path) -> None:
    """One suite, two corps: the second init must reuse the first's token, key and
    secret, or validate reports suite-conflict (WeCom signs a suite with one pair)."""
    first = qywx("init", "CorpA", "--suite-id", SUITE, "--corp-id", CORP, "--dir", tmp_path)
    assert first.returncode == 0, first.stderr
    second = qywx(
        "init", "CorpB", "--suite-id", SUITE, "--corp-id", "wwb0b0b0b0b0b0b0b0",
        "--dir", tmp_path, "--format", "json",
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    doc = json.loads(second.stdout)
    assert doc["reused_from"] == "CorpA"
    assert doc["next"][0].startswith("token, encodingAESKey, suiteSecret taken from CorpA")
    a, b = (
        secrets_of(tmp_path / "CorpA" / "CorpA.json"),
        secrets_of(tmp_path / "CorpB" / "CorpB.json"),
    )
    assert (a["token"], a["encodingAESKey"], a["suiteSecret"]) == (
        b["token"], b["encodingAESKey"], b["suiteSecret"],
    )  # fmt: skip
    env = {"QYWX_CORPA_SUITE_SECRET": SUITE_SECRET}
    proc = qywx("validate", tmp_path, "--format", "json", env=env)
    assert proc.returncode == 0, proc.stdout
    assert len(json.loads(proc.stdout)["instances"]) == 2


def test_file_system_failures_are_one_line(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x", encoding="utf-8")
    assert_one_line_error(qywx("init", "Shop", "--suite-id", SUITE, "--dir", afile), 1, "afile")
    (tmp_path / "auths" / "Dir").mkdir(parents=True)
    (tmp_path / "auths" / "Dir" / "e.json").mkdir()
    forced = qywx("init", "Dir", "--suite-id", SUITE, "--force", cwd=tmp_path)
    assert_one_line_error(forced, 1, "cannot write", "e.json")
    long = qywx("init", "A" * 300, "--suite-id", SUITE, "--dir", tmp_path)
    assert_one_line_error(long, 1, "cannot write", "File name too long")


def test_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    args = ("init", "Shop", "--suite-id", SUITE, "--dir", tmp_path)
    assert qywx(*args).returncode == 0
    before = secrets_of(tmp_path / "Shop" / "Shop.json")
    assert_one_line_error(qywx(*args), 1, "already exists; use --force")
    assert secrets_of(tmp_path / "Shop" / "Shop.json") == before
    forced = qywx(*args, "--force")
    assert forced.returncode == 0
    assert secrets_of(tmp_path / "Shop" / "Shop.json")["token"] != before["token"]
    debug = qywx(*args, "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_secrets_from_env(tmp_path: Path) -> None:
    proc = qywx(
        "init", "Shop", "--suite-id", SUITE, "--dir", tmp_path, "--secrets-from-env",
        "--format", "json", env={"QYWX_SUITE_SECRET": "s3cr$t'with`shell\"chars"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    names = env_var_names("Shop")
    assert sorted(doc["env_vars"]) == sorted(names.values())
    secrets_file = Path(doc["secrets_file"])
    assert secrets_file == tmp_path / "Shop" / "Shop.secrets.env"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert "*.secrets.env" in (tmp_path / "Shop" / ".gitignore").read_text().splitlines()
    auth = secrets_of(tmp_path / "Shop" / "Shop.json")
    assert {auth[k] for k in ("suiteSecret", "token", "encodingAESKey")} == {
        f"env:{v}" for v in names.values()
    }
    exported = exports(secrets_file)
    assert exported[names["suiteSecret"]] == "s3cr$t'with`shell\"chars"
    assert qywx("validate", tmp_path, "--strict", env=exported).returncode == 0
    assert qywx("validate", tmp_path, env={}).returncode == 1
    assert "s3cr$t" not in proc.stdout + proc.stderr


def test_secrets_from_env_without_suite_secret(tmp_path: Path) -> None:
    result = write_instance("Shop", tmp_path, suite_id=SUITE, secrets_from_env=True)
    assert result.secrets_file is not None
    exported = exports(result.secrets_file)
    assert sorted(exported) == ["QYWX_SHOP_ENCODING_AES_KEY", "QYWX_SHOP_TOKEN"]
    proc = qywx("validate", tmp_path, "--format", "json", env=exported)
    (d,) = json.loads(proc.stdout)["diagnostics"]
    assert (proc.returncode, d["code"]) == (1, "env-unset")
    assert "QYWX_SHOP_SUITE_SECRET" in d["message"]


BAD_ARGUMENTS = [
    (["init", "1Bad", "--suite-id", SUITE], "instance name '1Bad'"),
    (["init", "Bad-Name", "--suite-id", SUITE], "instance name 'Bad-Name'"),
    (["init", "Shop", "--suite-id", "dk 1"], "--suite-id may contain only"),
    (["init", "Shop", "--suite-id", SUITE, "--corp-id", "ww/1"], "--corp-id may contain"),
    (["init", "Shop", "--suite-id", SUITE, "--title", "a\nb"], "--title must be one line"),
    (["init", "Shop"], "--suite-id"),
]


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(lambda a: qywx(*a[0], "--dir", tmp_path), BAD_ARGUMENTS))
    for (_, words), proc in zip(BAD_ARGUMENTS, runs, strict=True):
        assert_one_line_error(proc, 2, words)
    assert not any(tmp_path.iterdir())


def test_bad_suite_secret_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="printable ASCII") as err:
        write_instance("Shop", tmp_path, suite_id=SUITE, suite_secret="has space")
    assert "has space" not in err.value.message
    with pytest.raises(UsageError):
        write_instance("Shop", tmp_path, suite_id="")
    assert not any(tmp_path.iterdir())


def test_injected_generators(tmp_path: Path) -> None:
    result = write_instance(
        "Shop",
        tmp_path,
        suite_id=SUITE,
        suite_secret=SUITE_SECRET,
        with_schema=False,
        token=lambda: "T" * 32,
        aes_key=lambda: "K" * 43,
    )
    auth = secrets_of(result.files[1])
    assert (auth["token"], auth["encodingAESKey"]) == ("T" * 32, "K" * 43)
    assert "$schema" not in json.loads(result.files[0].read_text(encoding="utf-8"))
