"""The frameworks stay optional: the core never imports one, and a missing one is named."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO, qywx_env

_PROBE = """
import sys
for name in ("flask", "django", "starlette", "a2wsgi", "prometheus_client"):
    sys.modules[name] = None  # importing any of them now raises ImportError
import qywx_cli.core.app, qywx_cli.core.service, qywx_cli.core.wsgi
import qywx_cli.integrations.{module} as adapter
try:
    adapter.{entry}(None)
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def _run(module: str, entry: str) -> str:
    code = _PROBE.format(module=module, entry=entry)
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=qywx_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_core_and_adapters_import_without_any_framework() -> None:
    assert _run("flask", "notify_blueprint") == (
        "UsageError flask is not installed: pip install 'qywx-cli[flask]'"
    )
    assert _run("django", "notify_urls") == (
        "UsageError django is not installed: pip install 'qywx-cli[django]'"
    )
    assert _run("asgi", "notify_asgi") == (
        "UsageError a2wsgi is not installed: pip install 'qywx-cli[asgi]'"
    )
