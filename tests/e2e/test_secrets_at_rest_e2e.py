"""``qywx serve`` says once, at start, when secrets are kept in plaintext, and works with
a key set from the first install: the permanent code WeCom issues is never on disk in
clear, and a restart without the key is refused nothing but the calls that need it."""

from __future__ import annotations

from pathlib import Path

from qywx_cli.core.sealing import Keyring, SecretKey, generate_key
from tests.e2e.conftest import Proc, stored_permanent_code, wait_for
from tests.helpers import LoopbackWeCom, run_qywx

NAME = "QywxProxyTemp"
CORP = "wwatrest000000001"
KEY = generate_key()


def serve(env: dict[str, str], cwd: Path) -> Proc:
    return Proc(["serve", "--port", "0", "--threads", "2"], env, cwd)


def install(env: dict[str, str], url: str) -> None:
    for extra in ([], ["--event", "create_auth", "--corp-id", CORP]):
        r = run_qywx("simulate-callback", "--auth", NAME, "--url", url, *extra, env=env)
        assert r.returncode == 0, r.stdout + r.stderr


def test_without_a_key_serve_warns_once(
    env: dict[str, str], tmp_path: Path, fake_wecom: LoopbackWeCom
) -> None:
    server = serve(env, tmp_path)
    try:
        assert wait_for(lambda: "no secret key is set" in server.log)
        install(env, f"{server.url}/notify/{NAME}")

        perm = wait_for(lambda: stored_permanent_code(env["QYWX_DB"], CORP))
        assert perm is not None
    finally:
        server.stop()
    warnings = [line for line in server.lines if "secret key" in line]
    assert len(warnings) == 1, warnings
    assert "WARNING" in warnings[0] and "qywx db gen-key" in warnings[0]
    assert perm.encode() in Path(env["QYWX_DB"]).read_bytes()  # as before: plaintext


def test_with_a_key_the_install_is_sealed_from_the_start(
    env: dict[str, str], tmp_path: Path, fake_wecom: LoopbackWeCom
) -> None:
    keyed = dict(env, QYWX_SECRET_KEY=KEY)
    keys = Keyring(SecretKey.parse(KEY))
    server = serve(keyed, tmp_path)
    try:
        install(keyed, f"{server.url}/notify/{NAME}")

        perm = wait_for(lambda: stored_permanent_code(env["QYWX_DB"], CORP, keys))
        assert perm is not None
    finally:
        server.stop()
    assert "secret key" not in server.log and KEY not in server.log
    db = Path(env["QYWX_DB"])
    data = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    assert perm.encode() not in data

    # Restarted without the key: it serves (callbacks are recorded), warns that rows are
    # sealed with a key that is not set, and names what to set.
    server = serve(env, tmp_path)
    try:
        assert wait_for(lambda: "are encrypted (key id" in server.log)
        r = run_qywx(
            "simulate-callback", "--auth", NAME, "--url", f"{server.url}/notify/{NAME}", env=env
        )
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        server.stop()
    [line] = [x for x in server.lines if "secret key" in x]
    assert "QYWX_SECRET_KEY" in line and keys.kids[0] in line and KEY not in line
