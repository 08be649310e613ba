"""``qywx db gen-key | rotate-key``, the key settings, and what commands say when the
database's secrets are sealed with a key that is not set.

A real SQLite file in tmp_path; every run is checked to print neither a key nor a
permanent code or token (``run_qywx(secrets=…)``), except gen-key's own output.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from qywx_cli.core.sealing import PREFIX, SecretKey, generate_key
from qywx_cli.core.store import Store
from tests.helpers import assert_one_line_error, run_qywx

SUITE = "tj1234567890abcdef"
CORP = "wwa1b2c3d4e5f60a01"
CODE = "PERMcodeSECRET0123456789abcdefgh"
TOKEN = "CorpTokenSECRET0123456789abcdef"
KEY, OLD = generate_key(), generate_key()
SECRETS = (CODE, TOKEN, KEY, OLD)


def fill(db: str) -> None:
    """An installation written the way qywx wrote it before a key was set."""
    with Store(db) as s:
        s.upsert_corp_auth(SUITE, CORP, permanent_code=CODE, corp_name="Acme")
        s.put_token("corp", CORP, TOKEN, 4_000_000_000.0)


def on_disk(db: str) -> bytes:
    path = Path(db)
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def qywx(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    r = run_qywx(*args, env=env, secrets=SECRETS)
    return r.returncode, r.stdout, r.stderr


def test_gen_key_prints_a_fresh_key_that_parses(cli_env: dict[str, str]) -> None:
    first = run_qywx("db", "gen-key", env=cli_env)
    second = run_qywx("db", "gen-key", env=cli_env)
    assert first.returncode == 0 and first.stderr == ""
    key = first.stdout.strip()
    assert first.stdout == key + "\n" and len(key) == 43 and key != second.stdout.strip()
    assert len(SecretKey.parse(key).raw) == 32
    doc = json.loads(run_qywx("db", "gen-key", "-f", "json", env=cli_env).stdout)
    assert doc["key_id"] == SecretKey.parse(doc["key"]).kid


def test_first_rotation_encrypts_what_was_written_without_a_key(
    cli_env: dict[str, str],
) -> None:
    fill(cli_env["QYWX_DB"])
    assert CODE.encode() in on_disk(cli_env["QYWX_DB"])
    code, out, _ = qywx(cli_env, "db", "info")
    assert code == 0 and "secrets at rest: 2 plaintext" in out

    env = dict(cli_env, QYWX_SECRET_KEY=KEY)
    kid = SecretKey.parse(KEY).kid
    code, out, err = qywx(env, "db", "rotate-key")
    assert (code, err) == (0, "")
    assert f"key id {kid}: 2 plaintext secret(s) encrypted, 0 re-encrypted" in out
    data = on_disk(cli_env["QYWX_DB"])
    assert CODE.encode() not in data and TOKEN.encode() not in data
    assert f"{PREFIX}{kid}:".encode() in data

    code, out, _ = qywx(env, "db", "rotate-key", "-f", "json")
    assert code == 0 and json.loads(out) == {
        "url": cli_env["QYWX_DB"],
        "key_id": kid,
        "encrypted": 0,
        "reencrypted": 0,
        "unchanged": 2,
        "old_copies_left": False,
    }
    code, out, _ = qywx(env, "db", "info", "-f", "json")
    assert json.loads(out)["secrets"] == {"plaintext": 0, "by_key": {kid: 2}}
    code, out, _ = qywx(env, "corp", "show", CORP, "-f", "json")
    assert code == 0 and json.loads(out)  # read back with the key: works as before


def test_reading_without_the_key_is_one_line_naming_what_to_set(
    cli_env: dict[str, str],
) -> None:
    fill(cli_env["QYWX_DB"])
    env = dict(cli_env, QYWX_SECRET_KEY=KEY)
    assert qywx(env, "db", "rotate-key")[0] == 0
    kid = SecretKey.parse(KEY).kid
    r = run_qywx("corp", "show", CORP, env=cli_env, secrets=SECRETS)
    assert_one_line_error(r, 1, f"corp {CORP}", f"key id {kid}", "set QYWX_SECRET_KEY")
    r = run_qywx("corp", "list", env=dict(cli_env, QYWX_SECRET_KEY=OLD), secrets=SECRETS)
    line = assert_one_line_error(r, 1, kid, SecretKey.parse(OLD).kid, "QYWX_OLD_SECRET_KEY")
    assert KEY not in line and OLD not in line
    # what holds no secret still works without the key
    assert qywx(cli_env, "log", "list")[0] == 0


def test_rotation_to_a_new_key_with_the_old_one_given(cli_env: dict[str, str]) -> None:
    fill(cli_env["QYWX_DB"])
    assert qywx(dict(cli_env, QYWX_SECRET_KEY=OLD), "db", "rotate-key")[0] == 0
    new = dict(cli_env, QYWX_SECRET_KEY=KEY)
    # without the old key nothing is changed, and the line says what to pass
    r = run_qywx("db", "rotate-key", env=new, secrets=SECRETS)
    assert_one_line_error(r, 1, SecretKey.parse(OLD).kid, "QYWX_OLD_SECRET_KEY")
    before = on_disk(cli_env["QYWX_DB"])
    assert f"{PREFIX}{SecretKey.parse(OLD).kid}:".encode() in before

    r = run_qywx("db", "rotate-key", "--old-key-env", "MY_OLD", env=new, secrets=SECRETS)
    assert_one_line_error(r, 2, "--old-key-env MY_OLD", "not set")
    code, out, _ = qywx(dict(new, MY_OLD=OLD), "db", "rotate-key", "--old-key-env", "MY_OLD")
    assert code == 0 and "0 plaintext secret(s) encrypted, 2 re-encrypted" in out
    # the same through QYWX_OLD_SECRET_KEY: already done, nothing to change
    code, out, _ = qywx(dict(new, QYWX_OLD_SECRET_KEY=OLD), "db", "rotate-key")
    assert code == 0 and "2 already current" in out
    assert qywx(new, "corp", "show", CORP)[0] == 0
    assert qywx(dict(cli_env, QYWX_SECRET_KEY=OLD), "corp", "show", CORP)[0] == 1


def test_rotate_key_needs_the_new_key(cli_env: dict[str, str]) -> None:
    fill(cli_env["QYWX_DB"])
    r = run_qywx("db", "rotate-key", env=cli_env, secrets=SECRETS)
    assert_one_line_error(r, 2, "set QYWX_SECRET_KEY", "qywx db gen-key")


def test_a_malformed_key_is_one_line_that_does_not_echo_it(cli_env: dict[str, str]) -> None:
    fill(cli_env["QYWX_DB"])
    for bad in ("hunter2-not-a-key", KEY[:-2], KEY + "AAAA", "é" * 43):
        r = run_qywx("db", "info", env=dict(cli_env, QYWX_SECRET_KEY=bad), secrets=(*SECRETS, bad))
        assert_one_line_error(r, 1, "QYWX_SECRET_KEY is not a qywx secret key", "gen-key")
    r = run_qywx("corp", "list", env=dict(cli_env, QYWX_OLD_SECRET_KEY="short"), secrets=SECRETS)
    assert_one_line_error(r, 1, "QYWX_OLD_SECRET_KEY is not a qywx secret key")


def test_the_key_from_qywx_toml_env_reference(cli_env: dict[str, str], tmp_path: Path) -> None:
    fill(cli_env["QYWX_DB"])
    config = tmp_path / "qywx.toml"
    config.write_text('secret_key = "env:APP_DB_KEY"\n')
    code, out, _ = qywx(dict(cli_env, APP_DB_KEY=KEY), "--config", str(config), "db", "rotate-key")
    assert code == 0 and "2 plaintext secret(s) encrypted" in out
    assert CODE.encode() not in on_disk(cli_env["QYWX_DB"])
    r = run_qywx("--config", str(config), "db", "info", env=cli_env, secrets=SECRETS)
    assert_one_line_error(r, 1, "secret_key refers to $APP_DB_KEY, which is not set")
    config.write_text(f'secret_key = "{KEY}"\n')
    r = run_qywx("--config", str(config), "db", "info", env=cli_env, secrets=SECRETS)
    assert_one_line_error(r, 1, "secret_key must be an env:VAR reference")


def test_doctor_judges_secrets_at_rest(cli_env: dict[str, str]) -> None:
    fill(cli_env["QYWX_DB"])

    def check(env: dict[str, str]) -> dict[str, str]:
        r = run_qywx("doctor", "--auth", "QywxProxyTemp", "-f", "json", env=env, secrets=SECRETS)
        doc = json.loads(r.stdout)
        [found] = [c for c in doc["checks"] if c["name"] == "secrets_at_rest"]
        return {k: str(found[k]) for k in ("status", "detail", "fix")}

    none = check(cli_env)
    assert none["status"] == "warning" and "plaintext (2 stored)" in none["detail"]
    assert "QYWX_SECRET_KEY" in none["fix"]
    keyed = dict(cli_env, QYWX_SECRET_KEY=KEY)
    assert check(keyed)["status"] == "warning"  # set, but the rows are not sealed yet
    assert qywx(keyed, "db", "rotate-key")[0] == 0
    assert check(keyed)["status"] == "ok"
    missing = check(cli_env)
    assert missing["status"] == "failed" and SecretKey.parse(KEY).kid in missing["detail"]


def test_doctor_all_and_token_without_the_key(cli_env: dict[str, str]) -> None:
    fill(cli_env["QYWX_DB"])
    assert qywx(dict(cli_env, QYWX_SECRET_KEY=KEY), "db", "rotate-key")[0] == 0
    code, out, err = qywx(cli_env, "doctor", "--all")
    assert code == 1 and "no corp checked" in out and "QYWX_SECRET_KEY" in out, (out, err)
    r = run_qywx("token", "corp", "--corp-id", CORP, env=cli_env, secrets=SECRETS)
    assert_one_line_error(r, 1, "set QYWX_SECRET_KEY")


def test_a_key_passed_as_old_key_env_is_not_echoed(cli_env: dict[str, str]) -> None:
    """`--old-key-env "$OLD"` (the key instead of the variable's name) is a likely slip;
    the refusal must not print the key, whether or not it happens to look like a name."""
    fill(cli_env["QYWX_DB"])
    env = dict(cli_env, QYWX_SECRET_KEY=KEY)
    name_like = next(k for k in iter(generate_key, None) if k[0].isalpha() and "-" not in k)
    not_name = next(k for k in iter(generate_key, None) if "-" in k)
    for old in (name_like, not_name):
        r = run_qywx("db", "rotate-key", "--old-key-env", old, env=env, secrets=(*SECRETS, old))
        assert_one_line_error(r, 2, "--old-key-env", "name")


def test_rotate_key_beside_a_reader_warns_that_old_copies_remain(
    cli_env: dict[str, str],
) -> None:
    # A reader mid-transaction (a running server's read, a log command) keeps SQLite from
    # emptying its WAL: the command still rotates, and says what is left on disk.
    fill(cli_env["QYWX_DB"])
    env = {**cli_env, "QYWX_SECRET_KEY": KEY}
    reader = sqlite3.connect(cli_env["QYWX_DB"], isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM tokens").fetchone()
        code, out, err = qywx(env, "db", "rotate-key", "-f", "json")
    finally:
        reader.close()
    assert code == 0 and json.loads(out)["encrypted"] == 2
    assert json.loads(out)["old_copies_left"] is True
    assert err.startswith("qywx: warning: another process was reading the database")
    assert err.count("\n") == 1 and "run `qywx db rotate-key` again" in err
