"""Settings precedence (flag > env > qywx.toml > default) and qywx.toml errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qywx_cli.core.errors import ConfigError, UsageError
from qywx_cli.core.settings import DEFAULT_API_BASE, load_settings
from qywx_cli.core.store import DEFAULT_LEASE_SECONDS


def toml(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "qywx.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_relative_to_cwd(tmp_path: Path) -> None:
    s = load_settings(env={}, cwd=tmp_path)
    assert (s.auths_dir, s.db_path) == (tmp_path / "auths", tmp_path / "qywx.db")
    assert (s.api_base, s.provider_corp_id, s.max_clock_skew) == (DEFAULT_API_BASE, None, 300)
    assert s.config_file is None


def test_paths_stay_relative_without_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths keep CI annotations (file=auths/…) attached to the repository."""
    monkeypatch.chdir(tmp_path)
    s = load_settings(env={"QYWX_DB": "state/q.db"})
    assert (s.auths_dir, s.db_path, s.config_file) == (Path("auths"), Path("state/q.db"), None)
    toml(tmp_path, 'auths = "conf/auths"\n')
    s = load_settings(env={})
    assert (s.auths_dir, s.config_file) == (Path("conf/auths"), Path("qywx.toml"))


@pytest.mark.parametrize(
    ("flag", "env", "in_toml", "expected"),
    [
        (Path("from-flag"), "from-env", True, Path("from-flag")),
        (None, "from-env", True, "cwd/from-env"),
        (None, None, True, "conf/from-toml"),
        (None, None, False, "cwd/auths"),
    ],
)
def test_auths_precedence(
    tmp_path: Path, flag: Path | None, env: str | None, in_toml: bool, expected: object
) -> None:
    conf = toml(tmp_path / "conf", 'auths = "from-toml"\n' if in_toml else "")
    s = load_settings(
        config=conf, auths=flag, env={"QYWX_AUTHS": env} if env else {}, cwd=tmp_path / "cwd"
    )
    if isinstance(expected, str):
        head, tail = expected.split("/")
        expected = tmp_path / head / tail
    assert s.auths_dir == expected


def test_db_precedence(tmp_path: Path) -> None:
    conf = toml(tmp_path / "conf", 'db = "data/q.db"\n')
    assert load_settings(config=conf, env={}, cwd=tmp_path).db_path == tmp_path / "conf/data/q.db"
    s = load_settings(config=conf, env={"QYWX_DB": "/abs/e.db"}, cwd=tmp_path)
    assert s.db_path == Path("/abs/e.db")
    s = load_settings(config=conf, db=Path("f.db"), env={"QYWX_DB": "e.db"}, cwd=tmp_path)
    assert s.db_path == Path("f.db")


def test_qywx_toml_in_cwd_is_found_and_paths_are_relative_to_it(tmp_path: Path) -> None:
    conf = toml(tmp_path, 'auths = "cfg/auths"\nprovider_corp_id = "wwprovider01"\n')
    s = load_settings(env={}, cwd=tmp_path)
    assert s.config_file == conf
    assert s.auths_dir == tmp_path / "cfg" / "auths"
    assert s.provider_corp_id == "wwprovider01"


def test_api_base_and_provider_precedence(tmp_path: Path) -> None:
    conf = toml(
        tmp_path,
        'api_base = "http://127.0.0.1:9/cgi-bin/"\nprovider_corp_id = "wwfromtoml"\n'
        "max_clock_skew = 0\n",
    )
    s = load_settings(config=conf, env={}, cwd=tmp_path)
    assert (s.api_base, s.provider_corp_id, s.max_clock_skew) == (
        "http://127.0.0.1:9/cgi-bin",
        "wwfromtoml",
        0,
    )
    env = {"QYWX_API_BASE": "https://example.test/x", "QYWX_PROVIDER_CORP_ID": "wwfromenv"}
    s = load_settings(config=conf, env=env, cwd=tmp_path)
    assert (s.api_base, s.provider_corp_id) == ("https://example.test/x", "wwfromenv")


def test_retention_days_is_off_unless_set(tmp_path: Path) -> None:
    assert load_settings(env={}, cwd=tmp_path).retention_days is None
    conf = toml(tmp_path, "retention_days = 30\n")
    assert load_settings(config=conf, env={}, cwd=tmp_path).retention_days == 30


def test_lease_seconds_is_the_claim_lease_unless_set(tmp_path: Path) -> None:
    assert load_settings(env={}, cwd=tmp_path).lease_seconds == DEFAULT_LEASE_SECONDS == 10
    conf = toml(tmp_path, "lease_seconds = 2.5\n")
    assert load_settings(config=conf, env={}, cwd=tmp_path).lease_seconds == 2.5
    conf = toml(tmp_path, "lease_seconds = 60\n")
    assert load_settings(config=conf, env={}, cwd=tmp_path).lease_seconds == 60.0


def test_same_host_takeover_is_on_unless_set_off(tmp_path: Path) -> None:
    assert load_settings(env={}, cwd=tmp_path).same_host_takeover is True
    conf = toml(tmp_path, "same_host_takeover = false\n")
    assert load_settings(config=conf, env={}, cwd=tmp_path).same_host_takeover is False


def test_health_probe_seconds_is_five_unless_set(tmp_path: Path) -> None:
    assert load_settings(env={}, cwd=tmp_path).health_probe_seconds == 5.0
    conf = toml(tmp_path, "[serve]\nhealth_probe_seconds = 0\n")
    assert load_settings(config=conf, env={}, cwd=tmp_path).health_probe_seconds == 0.0
    conf = toml(tmp_path, "[serve]\nhealth_probe_seconds = 0.5\n")
    assert load_settings(config=conf, env={}, cwd=tmp_path).health_probe_seconds == 0.5


def test_missing_config_flag_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="config file not found"):
        load_settings(config=tmp_path / "nope.toml", env={}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("text", "env", "words"),
    [
        ('auths = "x"\nauths = "y"\n', {}, "invalid TOML"),
        ("auths = \n", {}, "invalid TOML"),
        ('auth = "x"\n', {}, "unknown key(s) auth"),
        ("auths = 3\n", {}, "auths must be a non-empty string"),
        ('db = ""\n', {}, "db must be a non-empty string"),
        ('api_base = "ftp://x"\n', {}, "api_base must be an absolute http(s) URL"),
        ('api_base = "https://"\n', {}, "api_base must be an absolute http(s) URL"),
        ("api_base = 5\n", {}, "api_base must be an absolute http(s) URL"),
        ("", {"QYWX_API_BASE": "qyapi.weixin.qq.com"}, "QYWX_API_BASE must be"),
        ('max_clock_skew = "300"\n', {}, "max_clock_skew must be a non-negative"),
        ("max_clock_skew = -1\n", {}, "max_clock_skew must be a non-negative"),
        ("max_clock_skew = true\n", {}, "max_clock_skew must be a non-negative"),
        ("max_clock_skew = 1.5\n", {}, "max_clock_skew must be a non-negative"),
        ("retention_days = 0\n", {}, "retention_days must be a whole number of days from 1 to"),
        ('retention_days = "30d"\n', {}, "retention_days must be a whole number of days"),
        ("retention_days = 7.5\n", {}, "retention_days must be a whole number of days"),
        ("retention_days = true\n", {}, "retention_days must be a whole number of days"),
        ("lease_seconds = 0.5\n", {}, "lease_seconds must be a number of seconds from 1"),
        ("lease_seconds = 3601\n", {}, "lease_seconds must be a number of seconds from 1"),
        ('lease_seconds = "10"\n', {}, "lease_seconds must be a number of seconds from 1"),
        ("lease_seconds = true\n", {}, "lease_seconds must be a number of seconds from 1"),
        ("lease_seconds = nan\n", {}, "lease_seconds must be a number of seconds from 1"),
        ('same_host_takeover = "no"\n', {}, "same_host_takeover must be true or false, not"),
        ("same_host_takeover = 0\n", {}, "same_host_takeover must be true or false, not 0"),
        ("[serve]\nhealth_probe_seconds = -1\n", {}, "serve.health_probe_seconds must be a"),
        ("[serve]\nhealth_probe_seconds = 301\n", {}, "serve.health_probe_seconds must be"),
        ('[serve]\nhealth_probe_seconds = "5"\n', {}, "serve.health_probe_seconds must be"),
        ("[serve]\nhealth_probe_seconds = true\n", {}, "serve.health_probe_seconds must be"),
        ("[serve]\nhealth_probe_seconds = nan\n", {}, "serve.health_probe_seconds must be"),
        ('provider_corp_id = "ww 1"\n', {}, "provider_corp_id must be a corp id"),
        ("", {"QYWX_PROVIDER_CORP_ID": "a/b"}, "QYWX_PROVIDER_CORP_ID must be a corp id"),
    ],
)
def test_bad_settings_are_one_line_config_errors(
    tmp_path: Path, text: str, env: dict[str, str], words: str
) -> None:
    conf = toml(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(config=conf, env=env, cwd=tmp_path)
    message = err.value.message
    assert words in message and "\n" not in message
    if "QYWX_" not in words:
        assert str(conf) in message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a" + ".a" * 20_000 + " = 1\n", "line 1 has a key of more than 32 dotted parts"),
        ("lease_seconds = 5\n[" + "a." * 100_000 + "a]\n", "line 2 has a key of more than"),
        ("# " + "x" * 1_100_000 + "\n", "larger than 1024 KiB"),
    ],
    ids=["dotted-key", "dotted-table", "huge"],
)
def test_a_toml_file_no_qywx_setting_needs_is_refused_before_parsing(
    tmp_path: Path, text: str, words: str
) -> None:
    """tomllib's time grows with the square of a dotted key's parts (20,000 took
    seconds and 1.6 GB; 100,000 were killed for memory): refused before it is asked."""
    conf = toml(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(config=conf, env={}, cwd=tmp_path)
    assert words in err.value.message and "\n" not in err.value.message


def test_api_base_error_does_not_echo_credentials(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env={"QYWX_API_BASE": "ftp://user:hunter2@host"}, cwd=tmp_path)
    assert "hunter2" not in err.value.message


def test_non_utf8_toml(tmp_path: Path) -> None:
    (tmp_path / "qywx.toml").write_bytes(b'auths = "\xff"\n')
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(env={}, cwd=tmp_path)


# -- the system event URL's token and key ------------------------------------------------

_PROVIDER_KEY = "Pr0v1derEnc0d1ngAESKeyF0rSystemEventsXYZ012"


def test_provider_callback_settings_from_toml_and_env_references(tmp_path: Path) -> None:
    conf = toml(
        tmp_path,
        'provider_corp_id = "wwprov1d3r0c0rp1d0"\n'
        'provider_token = "env:SYS_TOKEN"\n'
        f'provider_encoding_aes_key = "{_PROVIDER_KEY}"\n',
    )
    s = load_settings(config=conf, env={"SYS_TOKEN": "Tok3n"}, cwd=tmp_path)
    assert (s.provider_token, s.provider_encoding_aes_key) == ("Tok3n", _PROVIDER_KEY)
    assert s.has_provider_callbacks
    assert "Tok3n" not in repr(s) and _PROVIDER_KEY not in repr(s)


def test_provider_callback_settings_from_the_environment(tmp_path: Path) -> None:
    s = load_settings(
        env={
            "QYWX_PROVIDER_CORP_ID": "wwprov1d3r0c0rp1d0",
            "QYWX_PROVIDER_TOKEN": "T0ken",
            "QYWX_PROVIDER_ENCODING_AES_KEY": _PROVIDER_KEY,
        },
        cwd=tmp_path,
    )
    assert s.has_provider_callbacks and s.provider_token == "T0ken"
    assert not load_settings(env={}, cwd=tmp_path).has_provider_callbacks


@pytest.mark.parametrize(
    ("text", "env", "fragment"),
    [
        ('provider_token = "bad token!"\n', {}, "1 to 32 ASCII letters"),
        ('provider_encoding_aes_key = "short"\n', {}, "43 characters"),
        ('provider_token = "env:1BAD"\n', {}, "not a valid env:VAR"),
        ('provider_token = "env:UNSET_VAR"\n', {}, "$UNSET_VAR, which is not set"),
        ('provider_token = "Tok3n"\nprovider_corp_id = "wwprov1d3r0c0rp1d0"\n', {}, "needs both"),
        (
            f'provider_token = "Tok3n"\nprovider_encoding_aes_key = "{_PROVIDER_KEY}"\n',
            {},
            "provider_corp_id is not",
        ),
        ("provider_token = 42\n", {}, "non-empty string"),
    ],
)
def test_provider_callback_setting_errors_never_show_the_value(
    tmp_path: Path, text: str, env: dict[str, str], fragment: str
) -> None:
    conf = toml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(config=conf, env=env, cwd=tmp_path)
    assert fragment in info.value.message
    assert "bad token!" not in info.value.message and "Tok3n" not in info.value.message


def test_serve_observability_keys(tmp_path: Path) -> None:
    hook = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=robot-key-1234"
    toml(
        tmp_path,
        '[serve]\nlog_format = "json"\nmetrics_port = 9100\nmetrics_token = "env:MY_METRICS"\n'
        'alert_webhook = "env:MY_HOOK"\nconnection_limit = 100\n',
    )
    env = {"MY_METRICS": "m" * 20, "MY_HOOK": hook}
    s = load_settings(env=env, cwd=tmp_path)
    assert (s.log_format, s.metrics_port, s.metrics_host) == ("json", 9100, "127.0.0.1")
    assert (s.metrics_token, s.alert_webhook) == ("m" * 20, hook)
    assert s.http_limits.connection_limit == 100  # the [serve] table holds both kinds
    assert "robot-key" not in repr(s) and "m" * 20 not in repr(s)
    # The environment beats the file, as for every key.
    other = load_settings(env={**env, "QYWX_ALERT_WEBHOOK": "http://127.0.0.1:9/h"}, cwd=tmp_path)
    assert other.alert_webhook == "http://127.0.0.1:9/h"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ('[serve]\nlog_format = "xml"\n', {}, "serve.log_format must be one of text, json"),
        ("[serve]\nmetrics_port = 70000\n", {}, "serve.metrics_port must be a port number"),
        (
            '[serve]\nmetrics_token = "env:NOT_SET"\n',
            {},
            "serve.metrics_token refers to $NOT_SET, which is not set",
        ),
        (
            '[serve]\nalert_webhook = "env:HOOK"\n',
            {"HOOK": "ftp://x/y?key=secret-key"},
            "absolute http(s)",
        ),
        ('log_format = "json"\n', {}, "unknown key(s) log_format"),
    ],
)
def test_serve_observability_errors(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    toml(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        load_settings(env=env, cwd=tmp_path)
    assert "secret-key" not in str(caught.value)


@pytest.mark.parametrize(
    "nest", ["[" * 100_000 + "]" * 100_000, "{a=" * 100_000 + "1" + "}" * 100_000]
)
def test_absurdly_nested_toml_is_one_config_error(tmp_path: Path, nest: str) -> None:
    path = toml(tmp_path, f"api_base = {nest}\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_settings(config=path, cwd=tmp_path)


def test_serve_limits_come_from_the_serve_table(tmp_path: Path) -> None:
    path = toml(tmp_path, "[serve]\nconnection_limit = 500\nheader_timeout = 2.5\n")
    limits = load_settings(config=path, cwd=tmp_path).http_limits
    assert (limits.connection_limit, limits.header_timeout, limits.body_timeout) == (500, 2.5, 30)
    for bad, match in (
        ("[serve]\nconnection_limit = 0\n", "serve.connection_limit must be between"),
        ("[serve]\nheader_timeout = 'x'\n", "serve.header_timeout must be a number"),
        ("[serve]\nbacklog = 5\n", "unknown key"),
        ("serve = 3\n", "serve must be a table"),
    ):
        with pytest.raises(ConfigError, match=match):
            load_settings(config=toml(tmp_path, bad), cwd=tmp_path)


def test_secret_keys_from_the_environment_and_qywx_toml(tmp_path: Path) -> None:
    from qywx_cli.core.sealing import SecretKey, generate_key

    new, old, other = generate_key(), generate_key(), generate_key()
    assert not load_settings(env={}, cwd=tmp_path).secret_keys.enabled
    s = load_settings(env={"QYWX_SECRET_KEY": new, "QYWX_OLD_SECRET_KEY": old}, cwd=tmp_path)
    assert s.secret_keys.kids == (SecretKey.parse(new).kid, SecretKey.parse(old).kid)
    assert new not in repr(s) and new not in repr(s.secret_keys)
    conf = tmp_path / "qywx.toml"
    conf.write_text('secret_key = "env:DB_KEY"\n')
    s = load_settings(config=conf, env={"DB_KEY": other}, cwd=tmp_path)
    assert s.secret_keys.current is not None
    assert s.secret_keys.current.kid == SecretKey.parse(other).kid
    assert "DB_KEY" in s.secret_keys.current.source
    # the environment beats the file
    s = load_settings(config=conf, env={"DB_KEY": other, "QYWX_SECRET_KEY": new}, cwd=tmp_path)
    assert s.secret_keys.kids == (SecretKey.parse(new).kid,)


@pytest.mark.parametrize(
    ("toml", "env", "fragment"),
    [
        ("", {"QYWX_SECRET_KEY": "too-short"}, "QYWX_SECRET_KEY is not a qywx secret key"),
        ("", {"QYWX_OLD_SECRET_KEY": "x" * 44}, "QYWX_OLD_SECRET_KEY is not a qywx secret key"),
        ('secret_key = "env:K"\n', {}, "secret_key refers to $K, which is not set"),
        ('secret_key = "env:K"\n', {"K": "NotAKeyValue"}, "$K (secret_key in"),
        ('secret_key = "AAAA"\n', {}, "secret_key must be an env:VAR reference"),
        ("secret_key = 3\n", {}, "secret_key must be an env:VAR reference"),
    ],
)
def test_bad_secret_keys_are_one_line_without_the_value(
    tmp_path: Path, toml: str, env: dict[str, str], fragment: str
) -> None:
    conf = tmp_path / "qywx.toml"
    conf.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(config=conf, env=env, cwd=tmp_path)
    assert fragment in caught.value.message and "\n" not in caught.value.message
    for value in env.values():
        assert value not in caught.value.message


def test_a_key_written_as_secret_key_env_name_is_not_echoed(tmp_path: Path) -> None:
    """``secret_key = "env:<the key>"``: refused, and the line does not show the key
    (a name-like key would otherwise appear as "$<key>, which is not set")."""
    from qywx_cli.core.sealing import generate_key

    key = next(k for k in iter(generate_key, None) if k[0].isalpha() and "-" not in k)
    conf = tmp_path / "qywx.toml"
    conf.write_text(f'secret_key = "env:{key}"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config=conf, env={}, cwd=tmp_path)
    assert "secret_key" in caught.value.message and key not in caught.value.message
