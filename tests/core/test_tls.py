"""The TLS context the HTTP clients share: made once per inputs, and as strict as httpx's."""

from __future__ import annotations

import ssl

import certifi
import httpx
import pytest

from qywx_cli.core.tls import client_ssl_context


def test_one_context_per_process_for_the_same_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    first = client_ssl_context()
    assert client_ssl_context() is first
    assert client_ssl_context(trust_env=False) is client_ssl_context(trust_env=False)
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())
    named = client_ssl_context()
    assert named is not first and client_ssl_context() is named
    # Without trust_env the variable is not read, as httpx does not read it then.
    assert client_ssl_context(trust_env=False) is client_ssl_context(trust_env=False)


@pytest.mark.parametrize("trust_env", [True, False])
def test_it_checks_certificates_and_host_names_as_httpx_would(trust_env: bool) -> None:
    ctx = client_ssl_context(trust_env=trust_env)
    own = httpx.create_ssl_context(trust_env=trust_env)
    assert ctx.verify_mode == own.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname is own.check_hostname is True
    assert ctx.minimum_version == own.minimum_version
    assert len(ctx.get_ca_certs()) == len(own.get_ca_certs())
