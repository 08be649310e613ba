"""The pre-commit hook and the docs/ci.md commands, run exactly as documented.

pre-commit is not a qywx dependency, so the hook is exercised the way pre-commit runs
it: read ``entry`` and ``files`` from .pre-commit-hooks.yaml, take the staged files of a
scratch git repository, keep those the ``files`` regex matches, and run the entry with
them appended, from the repository root.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from tests.helpers import REPO, SAMPLES, qywx_env

HOOKS = REPO / ".pre-commit-hooks.yaml"
CI_DOC = REPO / "docs" / "ci.md"


def hook_manifest() -> list[dict[str, str]]:
    """The hooks of .pre-commit-hooks.yaml: a list of flat ``key: value`` mappings."""
    hooks: list[dict[str, str]] = []
    for raw in HOOKS.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].rstrip()
        if not line or line.lstrip().startswith("#"):
            continue
        m = re.fullmatch(r"(- |  )(\w+): (.+)", line)
        assert m is not None, f"unexpected line in {HOOKS.name}: {raw!r}"
        if m[1] == "- ":
            hooks.append({})
        value = m[3].strip()
        hooks[-1][m[2]] = value[1:-1] if value[:1] == value[-1:] == '"' else value
    return hooks


HOOK = next(h for h in hook_manifest() if h["id"] == "qywx-validate")


def clean_env(**extra: str) -> dict[str, str]:
    """The test interpreter's bin folder first on PATH, where the ``qywx`` script lives."""
    env = qywx_env()
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.test", "-c",
         "commit.gpgsign=false", *args],
        cwd=repo, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def run_hook(repo: Path) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """Staged files through the hook's ``files`` filter, then its entry, as pre-commit does."""
    staged = git(repo, "diff", "--cached", "--name-only", "--diff-filter=ACMR").split()
    files = [f for f in staged if re.search(HOOK["files"], f)]
    proc = subprocess.run(
        [*shlex.split(HOOK["entry"]), *files],
        cwd=repo, env=clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr
    return files, proc


def edit_auth(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data["authConfig"].update(changes)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.fail("git is required for the pre-commit test")
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLES, repo / "auths")
    (repo / "README.md").write_text("scratch\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "samples")
    return repo


def test_manifest_declares_the_hook() -> None:
    assert (HOOK["entry"], HOOK["language"]) == ("qywx validate", "python")
    assert (HOOK["pass_filenames"], HOOK["require_serial"]) == ("true", "true")
    pattern = re.compile(HOOK["files"])
    for path in ("auths/A/e.json", "auths/A/A.json", "services/api/auths/B/B.json"):
        assert pattern.search(path), path
    for path in ("README.md", "myauths/A/A.json", "auths/A/A.secrets.env", "auths.json"):
        assert not pattern.search(path), path


def test_good_change_passes(scratch: Path) -> None:
    path = scratch / "auths" / "QywxProxyTemp" / "e.json"
    path.write_text(path.read_text(encoding="utf-8").replace("配置", "配置 v2"), encoding="utf-8")
    (scratch / "README.md").write_text("changed\n")
    git(scratch, "add", "-A")
    files, proc = run_hook(scratch)
    assert files == ["auths/QywxProxyTemp/e.json"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 instance checked, 0 error(s)" in proc.stdout


def test_broken_change_fails(scratch: Path) -> None:
    path = scratch / "auths" / "QywxProxyCompanyA" / "QywxProxyCompanyA.json"
    edit_auth(path, token="not-a-token")
    git(scratch, "add", "-A")
    files, proc = run_hook(scratch)
    assert files == ["auths/QywxProxyCompanyA/QywxProxyCompanyA.json"]
    assert proc.returncode == 1
    assert "auths/QywxProxyCompanyA/QywxProxyCompanyA.json" in proc.stdout
    assert "bad-token" in proc.stdout


def test_change_conflicting_with_an_unchanged_instance_fails(scratch: Path) -> None:
    a = json.loads((scratch / "auths/QywxProxyCompanyA/QywxProxyCompanyA.json").read_text())
    path = scratch / "auths" / "QywxProxyCompanyB" / "QywxProxyCompanyB.json"
    edit_auth(path, suiteId=a["authConfig"]["suiteId"])  # same suite, other token and key
    git(scratch, "add", "-A")
    files, proc = run_hook(scratch)
    assert files == ["auths/QywxProxyCompanyB/QywxProxyCompanyB.json"]
    assert proc.returncode == 1
    assert "suite-conflict" in proc.stdout and "QywxProxyCompanyA" in proc.stdout


def test_new_instance_with_both_files(scratch: Path) -> None:
    new = scratch / "auths" / "QywxProxyNew"
    shutil.copytree(scratch / "auths" / "QywxProxyDefault", new)
    (new / "QywxProxyDefault.json").rename(new / "QywxProxyNew.json")
    git(scratch, "add", "-A")
    files, proc = run_hook(scratch)
    assert sorted(files) == ["auths/QywxProxyNew/QywxProxyNew.json", "auths/QywxProxyNew/e.json"]
    assert proc.returncode == 0, proc.stdout
    assert "1 instance checked" in proc.stdout  # the two files are one instance
    edit_auth(new / "QywxProxyNew.json", suiteId="dk7f3a9c2e51b04d3a", token="Other1")
    git(scratch, "add", "-A")
    _, proc = run_hook(scratch)
    assert proc.returncode == 1 and "suite-conflict" in proc.stdout


# -- docs/ci.md ---------------------------------------------------------------------------


def doc_commands() -> list[str]:
    """Every command in a code block of docs/ci.md that starts with ``qywx``.

    YAML ``run:`` values and list items (``- qywx …``) count: those are the CI snippets.
    """
    commands = []
    in_block = False
    for line in CI_DOC.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        text = re.sub(r"^\s*(?:-\s+)?(?:run:\s+)?", "", line)
        if in_block and text.startswith("qywx "):
            commands.append(text)
    return commands


def test_doc_has_the_ci_commands() -> None:
    commands = doc_commands()
    assert "qywx validate auths --format github" in commands  # GitHub Actions `run:`
    assert "qywx validate auths --format junit > report.xml" in commands  # GitLab `script:`
    assert any(c.startswith("qywx schema") for c in commands)
    snippet = CI_DOC.read_text(encoding="utf-8")
    assert f"- id: {HOOK['id']}" in snippet


@pytest.mark.parametrize("broken", [False, True], ids=["valid", "broken"])
def test_doc_commands_run_as_documented(tmp_path: Path, broken: bool) -> None:
    """On a copy of sample_auths: exit 0 when valid, 1 when broken (validate commands)."""
    shutil.copytree(SAMPLES, tmp_path / "auths")
    if broken:
        edit_auth(tmp_path / "auths/QywxProxyTemp/QywxProxyTemp.json", token="bad-token")

    def run(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    commands = doc_commands()
    with ThreadPoolExecutor(max_workers=4) as pool:  # independent runs, distinct outputs
        runs = list(pool.map(run, commands))
    for command, proc in zip(commands, runs, strict=True):
        validating = command.startswith("qywx validate")
        assert proc.returncode == (1 if broken and validating else 0), (command, proc.stderr)
        assert "Traceback" not in proc.stderr
    ET.parse(tmp_path / "report.xml")
    report = json.loads((tmp_path / "qywx-report.json").read_text(encoding="utf-8"))
    assert report["ok"] is not broken
    for name in ("e", "business"):
        schema = json.loads((tmp_path / "schemas" / f"{name}.schema.json").read_text())
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    vscode = json.loads((tmp_path / ".vscode" / "qywx-schemas.json").read_text())
    assert len(vscode["json.schemas"]) == 2
