"""Every command, text and json, on the samples: no secret may reach stdout or stderr.

The secrets are the samples' suiteSecret, token and encodingAESKey, plus what flowed
through the pipeline: the SuiteTicket pushed and the permanent code WeCom (the fake)
issued, and the secret key the database is sealed with (``QYWX_SECRET_KEY``), so the
database itself must hold no permanent code or access token in plaintext either. One
``qywx serve`` process (its WeCom a FakeWeCom served by the test) serves the whole
module; each command line is its own test case, run in order (later ones read what
earlier ones wrote: the org code, the retried record).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qywx_cli.core.sealing import Keyring, SecretKey, generate_key
from qywx_cli.core.store import Store
from tests.e2e.conftest import Proc, stored_permanent_code, wait_for
from tests.helpers import SAMPLES, loopback_fake, qywx_env, run_qywx

NAME = "QywxProxyTemp"
SUITE = "tj1234567890abcdef"
CORP = "wwsweep0000000001"
TICKET = "SweepTicket" + "x" * 40
KEY = generate_key()
SERVER = "http://server.invalid"
"""Placeholder in COMMANDS for the running server's URL."""
CAPTURED = "captured-url"
"""Placeholder in COMMANDS for a captured handshake URL."""
TAMPERED = "tampered-url"
"""Placeholder in COMMANDS for that URL with its nonce changed (a bad signature)."""


def qywx(
    env: dict[str, str], *args: str, secrets: set[str] | frozenset[str] = frozenset()
) -> subprocess.CompletedProcess[str]:
    """run_qywx, which also checks that no ``secrets`` (nor a sample secret) is shown."""
    return run_qywx(*args, env=env, cwd=Path(env["QYWX_AUTHS"]).parent, secrets=secrets)


def sample_secrets(auths: Path) -> set[str]:
    found: set[str] = set()
    for biz in auths.glob("*/*.json"):
        if biz.name == "e.json":
            continue
        cfg = json.loads(biz.read_text())["authConfig"]
        found.update(cfg[k] for k in ("suiteSecret", "token", "encodingAESKey"))
    return found


KEYS = Keyring(SecretKey.parse(KEY))


@dataclass
class World:
    env: dict[str, str]
    server: Proc
    secrets: frozenset[str]
    captured_url: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("sweep")
    shutil.copytree(SAMPLES, root / "auths")
    env = qywx_env(
        QYWX_AUTHS=str(root / "auths"), QYWX_DB=str(root / "qywx.db"), QYWX_SECRET_KEY=KEY
    )
    with loopback_fake() as fake:  # the server's WeCom, served from this process
        env["QYWX_API_BASE"] = fake.api_base
        server = Proc(["serve", "--port", "0", "--threads", "4"], env, root)
        try:
            url = f"{server.url}/notify/{NAME}"
            for args in (
                ["--set", f"SuiteTicket={TICKET}"],
                ["--event", "create_auth", "--corp-id", CORP],
            ):
                r = qywx(env, "simulate-callback", "--auth", NAME, "--url", url, *args)
                assert r.returncode == 0, r.stdout + r.stderr

            perm = wait_for(lambda: stored_permanent_code(env["QYWX_DB"], CORP, KEYS))
            assert perm is not None
            dry = qywx(
                env,
                "simulate-callback",
                "--auth",
                NAME,
                "--url",
                url,
                "--verify-url",
                "--dry-run",
                "--format",
                "json",
            )
            secrets = frozenset(sample_secrets(root / "auths") | {TICKET, perm, KEY})
            yield World(env, server, secrets, json.loads(dry.stdout)["url"])
        finally:
            server.stop()
    # the server's own log held none either
    assert not [s for s in secrets if s in server.log]


COMMANDS: list[list[str]] = [
    ["validate"],
    ["validate", "--strict"],
    ["doctor", "--auth", NAME],
    ["doctor", "--auth", NAME, "--url", SERVER],
    ["doctor", "--all"],
    ["simulate-callback", "--auth", NAME, "--url", SERVER, "--dry-run"],
    ["simulate-callback", "--auth", NAME, "--url", SERVER, "--verify-url"],
    ["simulate-callback", "--auth", NAME, "--url", SERVER, "--tamper", "all"],
    ["simulate-callback", "--auth", NAME, "--url", SERVER, "--count", "5", "--concurrency", "2"],
    ["decrypt", "--auth", NAME, "--url", CAPTURED],
    ["decrypt", "--auth", NAME, "--url", TAMPERED],
    ["log", "list"],
    ["log", "show", "1", "--decrypt"],
    ["log", "show", "2", "--decrypt"],
    ["log", "tail"],
    ["log", "stats"],
    ["retry", "--failed", "--dry-run"],
    ["retry", "2"],
    ["login-config", "--auth", NAME],
    ["org", "set-code", CORP, "sweep"],
    ["org", "list"],
    ["org", "show", "sweep"],
    ["login-url", "--auth", NAME, "--corp-id", CORP, "--redirect-uri", "https://a.example/cb"],
    ["login", "--auth", NAME, "--corp-id", CORP, "--code", "CODE-lisi"],
    ["corp", "list"],
    ["corp", "show", CORP],
    ["db", "info"],
    ["db", "rotate-key"],
    ["token", "suite", "--auth", NAME],
    ["token", "suite", "--auth", NAME, "--refresh"],
    ["token", "corp", "--corp-id", CORP],
    ["token", "corp", "--corp-id", CORP, "--refresh"],
]
"""Every command that reads the samples or the log; each runs as text and as json."""

CASES = [(["schema"], None)] + [(args, fmt) for args in COMMANDS for fmt in ("text", "json")]


@pytest.mark.parametrize(
    ("args", "fmt"), CASES, ids=[f"{' '.join(a[:2])}-{f or 'json'}" for a, f in CASES]
)
def test_no_command_prints_a_secret(world: World, args: list[str], fmt: str | None) -> None:
    # schema always prints JSON; every other command takes --format text|json
    subst = {
        SERVER: f"{world.server.url}/notify/{NAME}",
        CAPTURED: world.captured_url,
        TAMPERED: world.captured_url.replace("nonce=", "nonce=9"),
    }
    line = [subst.get(a, a) for a in args]
    r = qywx(world.env, *line, *(("--format", fmt) if fmt else ()), secrets=world.secrets)
    assert r.returncode in (0, 1), (args, fmt, r.returncode, r.stderr)  # not a usage error
    tokens = cached_tokens(world.env)  # as they stand after the run (doctor, token fetch some)
    assert not [t for t in tokens if t in r.stdout or t in r.stderr], "a token was shown"


def cached_tokens(env: dict[str, str]) -> list[str]:
    """The suite and corp access tokens the store holds now."""
    with Store(env["QYWX_DB"], keys=KEYS) as store:
        found = [store.get_token("suite", SUITE), store.get_token("corp", CORP)]
    return [t.token for t in found if t is not None]


def test_show_secrets_is_the_one_way_to_see_them(world: World) -> None:
    shown = qywx(world.env, "log", "show", "1", "--decrypt", "--show-secrets", "--format", "json")
    assert shown.returncode == 0 and TICKET in shown.stdout
    token = qywx(world.env, "token", "corp", "--corp-id", CORP, "--show-secrets")
    assert token.returncode == 0 and cached_tokens(world.env)[-1] in token.stdout


def test_files_holding_secrets_are_private(world: World, tmp_path: Path) -> None:
    env = world.env
    db = Path(env["QYWX_DB"])
    for path in [db, *db.parent.glob(db.name + "-*")]:
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"
    r = qywx(
        env,
        "init",
        "Scaffolded",
        "--suite-id",
        "dk0000000000000001",
        "--dir",
        str(tmp_path / "new"),
        "--secrets-from-env",
    )
    assert r.returncode == 0, r.stderr
    secret_files = [
        p
        for p in (tmp_path / "new" / "Scaffolded").iterdir()
        if re.search(r"secrets|Scaffolded\.json$", p.name)
    ]
    assert len(secret_files) >= 2
    for path in secret_files:
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"


def test_the_database_holds_no_plaintext_credential(world: World) -> None:
    """Run last, after every command above cached what it needed: the file and its WAL
    hold the permanent code and every cached token only sealed (suite tickets are kept
    in clear: one is useless without the suite secret, which is not in the database)."""
    db = Path(world.env["QYWX_DB"])
    with Store(db, keys=KEYS) as store:
        auth = store.get_corp_auth(CORP)
        tokens = [store.get_token(kind, key) for kind, key in store_token_keys(db)]
        survey = store.secrets_at_rest()
    assert auth is not None and auth.permanent_code
    found = [t.token for t in tokens if t is not None]
    assert found, "the commands above cached no token"
    assert survey.plaintext == 0 and set(survey.by_key) == {KEYS.kids[0]}
    data = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    for value in (auth.permanent_code, *found):
        assert value.encode() not in data, "a credential is stored in plaintext"
    assert KEY.encode() not in data
    assert "secret key" not in world.server.log  # set, and every row under it: no warning


def store_token_keys(db: Path) -> list[tuple[str, str]]:
    """The (kind, key) of every cached token, read from the file itself."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        return [(str(k), str(v)) for k, v in conn.execute("SELECT kind, key FROM tokens")]
