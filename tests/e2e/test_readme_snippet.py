"""The README's Python snippet runs as written where the README's walkthrough leaves you:
the repository root (code folders beside ``sample_auths/``), ``QYWX_AUTHS=sample_auths``,
WeCom's API at the fake, and corp ww1234567890abcdef having installed the app."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from qywx_cli.core.app import App
from tests.helpers import REPO, SAMPLES, CallbackSender, LoopbackWeCom, qywx_env

CORP = "ww1234567890abcdef"


def readme_python() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text("utf-8"), re.S)
    assert blocks, "the README has no python block"
    return str(blocks[-1])


def test_readme_snippet_runs_from_a_repository_root(
    tmp_path: Path, loopback_wecom: LoopbackWeCom
) -> None:
    root = tmp_path / "repo"
    for code_folder in ("benchmarks", "docs", "qywx_cli", "tests"):
        (root / code_folder).mkdir(parents=True)
        (root / code_folder / "x.py").write_text("")
    shutil.copytree(SAMPLES, root / "sample_auths")
    installer = App(
        root / "sample_auths",
        db=root / "qywx.db",
        api_base=loopback_wecom.api_base,
        env={},
        background=False,
    )
    sender = CallbackSender(installer)
    sender.send("suite_ticket")
    sender.send("create_auth", CORP)
    installer.close()

    proc = subprocess.run(
        [sys.executable, "-c", readme_python()],
        cwd=root,
        env=qywx_env(QYWX_AUTHS="sample_auths", QYWX_API_BASE=loopback_wecom.api_base),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "'suiteId': 'tj1234567890abcdef'" in lines[0]
    assert lines[1:] == ["lisi 300", "200 True"]
