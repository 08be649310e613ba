"""Every command once through the installed console script, in a subprocess.

The rest of tests/cli runs the CLI in process (``tests.helpers.run_qywx``); this module
keeps what only a real process shows: the console script's entry point, the exit
status the shell sees, and stderr holding one line or nothing. The runs are
independent, so they go in parallel.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from qywx_cli import __version__
from tests.helpers import QYWX_SCRIPT, SAMPLES, assert_one_line_error, qywx_env, run_qywx

# (command line, exit status, a fragment of stdout when 0 / of the one stderr line if not)
CASES: list[tuple[tuple[str, ...], int, str]] = [
    (("--version",), 0, __version__),
    (("validate", "{auths}"), 0, "4 instances checked"),
    (("validate", "{broken}"), 1, ""),
    (("init",), 2, "Missing argument 'NAME'"),
    (("schema", "e"), 0, '"$schema"'),
    (("serve", "--threads", "0"), 2, "--threads"),
    (("serve", "--server", "nginx"), 2, "--server must be auto, granian or waitress"),
    (("fake-wecom", "--port", "-1"), 2, "--port"),
    (("fake-wecom", "--slow", "get_permanent_code"), 2, "--slow"),
    (("fake-wecom", "--slow", "no_such_api=1"), 2, "unknown api"),
    (("fake-wecom", "--slow", "get_permanent_code@during=1"), 2, "stage"),
    (("doctor",), 2, "--auth NAME, or check every one with --all"),
    (("doctor", "--all"), 1, "no database at"),
    (("token", "suite", "--auth", "QywxProxyTemp"), 1, "no database at"),
    (("token", "corp"), 2, "--corp-id"),
    (("token", "provider", "--refresh"), 1, "no database at"),
    (
        (
            "simulate-callback",
            "--auth",
            "QywxProxyTemp",
            "--url",
            "http://127.0.0.1:9/cb",
            "--dry-run",
            "--format",
            "json",
        ),
        0,
        '"method"',
    ),
    (("decrypt", "--auth", "QywxProxyTemp", "--url", "http://x/cb?nonce=1"), 2, "msg_signature"),
    (("encrypt", "--auth", "NoSuch", "hello"), 2, "NoSuch"),
    (("retry", "1"), 1, "no database at"),
    (("login-config", "--auth", "NoSuch"), 2, "NoSuch"),
    (
        ("login", "--auth", "QywxProxyTemp", "--corp-id", "ww1234567890abcdef", "--code", "c"),
        1,
        "no database at",
    ),
    (("login-url", "--auth", "QywxProxyTemp", "--redirect-uri", "https://a.example/cb"), 1, ""),
    (("log", "list"), 1, "no database at"),
    (("org", "show", "ACME"), 1, "no database at"),
    (("db", "rotate-key"), 2, "set QYWX_SECRET_KEY"),
    (("no-such-command",), 2, "No such command"),
]


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[str, ...], subprocess.CompletedProcess[str]]:
    import shutil

    from tests.helpers import SAMPLES, qywx_env

    root = tmp_path_factory.mktemp("smoke")
    auths, broken = root / "auths", root / "broken"
    shutil.copytree(SAMPLES, auths)
    shutil.copytree(SAMPLES, broken)
    biz = broken / "QywxProxyTemp" / "QywxProxyTemp.json"
    doc = json.loads(biz.read_text(encoding="utf-8"))
    doc["authConfig"]["token"] = "not a token!"
    biz.write_text(json.dumps(doc), encoding="utf-8")
    lines = [tuple(a.format(auths=auths, broken=broken) for a in args) for args, _, _ in CASES]

    def run(n: int) -> subprocess.CompletedProcess[str]:
        # each run its own (absent) database: one command's store is no other's
        env = qywx_env(QYWX_AUTHS=str(auths), QYWX_DB=str(root / f"{n}.db"), COLUMNS="200")
        return run_qywx(*lines[n], env=env, cwd=root, process=True)

    with ThreadPoolExecutor(max_workers=4) as pool:
        done = pool.map(run, range(len(lines)))
        return {args: proc for (args, _, _), proc in zip(CASES, done, strict=True)}


def test_the_console_script_is_installed() -> None:
    assert Path(QYWX_SCRIPT[0]).name == "qywx", QYWX_SCRIPT


@pytest.mark.parametrize(
    ("args", "status", "fragment"), CASES, ids=[" ".join(c[0][:2]) for c in CASES]
)
def test_each_command_exits_as_documented(
    runs: dict[tuple[str, ...], subprocess.CompletedProcess[str]],
    args: tuple[str, ...],
    status: int,
    fragment: str,
) -> None:
    proc = runs[args]
    assert proc.returncode == status, (proc.returncode, proc.stdout[-500:], proc.stderr)
    if status == 0:
        assert proc.stderr == "" and fragment in proc.stdout, (proc.stdout, proc.stderr)
    elif args[0] == "validate":
        assert proc.stderr == "" and "bad-token" in proc.stdout  # findings go to stdout
    elif args[:2] == ("doctor", "--all"):
        assert proc.stderr == "" and fragment in proc.stdout  # a failed check is a table row
    else:
        assert_one_line_error(proc, status, fragment)


TO_CLOSED = ("--url", "http://127.0.0.1:1/notify", "--auth", "QywxProxyTemp")


def test_a_command_that_talks_http_does_not_load_httpxs_own_cli(tmp_path: Path) -> None:
    """httpx loads its console tool (click, pygments) on import when click is installed,
    as it is here beside Flask; the qywx process keeps it out. The command is a real
    HTTP call (to a closed port), so httpx's client is loaded and used."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "qywx_cli", "simulate-callback", *TO_CLOSED],
        env=qywx_env(QYWX_AUTHS=str(SAMPLES), QYWX_DB=str(tmp_path / "q.db")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert proc.returncode == 1 and errors == [
        "qywx: error: cannot connect to 127.0.0.1:1: [Errno 111] Connection refused"
    ], errors
    assert "httpx._client" in imported
    assert not {"click", "pygments"} & imported


def test_ctrl_c_while_the_cli_is_still_being_imported_is_one_line() -> None:
    """Ctrl-C in the first 0.1-0.4 s, while Typer is being imported, printed Python's
    traceback of the import. The interrupt is raised exactly there (an import hook that
    raises it when Typer is looked up), not timed with a signal."""
    code = (
        "import sys\n"
        "class CtrlC:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'typer':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        "from qywx_cli._entry import main\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "log", "list"],
        env=qywx_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (130, "", "qywx: interrupted\n")


def test_ctrl_c_inside_a_command_is_the_same_one_line(tmp_path: Path) -> None:
    """Typer turns a KeyboardInterrupt inside a command into a silent exit 130: one
    landing while ``serve`` imports its service (its first 0.1-0.3 s) said nothing. Made
    exact as above: the import itself raises it."""
    code = (
        "import sys\n"
        "class CtrlC:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'qywx_cli.core.service':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        "from qywx_cli._entry import main\n"
        "main()\n"
    )
    env = qywx_env(QYWX_AUTHS=str(SAMPLES), QYWX_DB=str(tmp_path / "q.db"))
    proc = subprocess.run(
        [sys.executable, "-c", code, "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (130, "", "qywx: interrupted\n")


def test_streams_and_arguments_the_machine_spoils_are_one_line(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 in an argument (exit 2, the argument never echoed), a
    full disk behind stdout, a closed stdout or stdin (exit 1): one line each, where
    each was an "internal error" (exit 70) or, for a closed stdout, a silent exit 0."""
    env = qywx_env(QYWX_AUTHS=str(SAMPLES), QYWX_DB=str(tmp_path / "q.db"))

    def qywx(*args: str | bytes, shell: str = "") -> subprocess.CompletedProcess[str]:
        argv: list[str | bytes] = [*QYWX_SCRIPT, *args]
        if shell:  # the redirection applied by a shell, as a user would write it
            argv = ["sh", "-c", f'exec "$0" "$@" {shell}', *argv]
        return subprocess.run(
            argv, env=env, cwd=tmp_path, capture_output=not shell, text=True, timeout=60
        )

    for args in (("log", "list", "--event", b"a\xffb"), ("corp", "show", b"\xff")):
        proc = qywx(*args)
        assert_one_line_error(proc, 2, "is not valid UTF-8 text")
        assert "\udcff" not in proc.stderr and "\\xff" not in proc.stderr
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [*QYWX_SCRIPT, "schema", "e"], env=env, stdout=full, stderr=subprocess.PIPE, text=True
        )
    assert (proc.returncode, proc.stderr) == (1, "qywx: error: No space left on device\n")
    err = tmp_path / "err"
    for shell, command in (
        (f">&- 2>{err}", ("schema", "e")),
        (f"<&- >/dev/null 2>{err}", ("encrypt", "--auth", "QywxProxyTemp", "-")),
    ):
        assert qywx(*command, shell=shell).returncode != 0
        line = err.read_text(encoding="utf-8")
        assert line.startswith("qywx: error: ") and line.count("\n") == 1, line
        assert "closed" in line and "internal error" not in line, line
