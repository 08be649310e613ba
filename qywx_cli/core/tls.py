"""The TLS context qywx's HTTP clients check servers with, made once per process.

httpx makes a new ``ssl.SSLContext`` for every client it creates, loading the whole CA
bundle (certifi's, or the one ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` name) each time: about
50 ms of CPU per client. A command makes one or two clients, but a program that uses
the library (the element API, a web app mounting the notify endpoint, the tests) makes
them over and over, and the context is the same for all of them. An ``SSLContext`` may
be shared by any number of clients and threads, so it is made once for each set of
inputs and handed to every client.
"""

from __future__ import annotations

import os
import ssl
import threading

__all__ = ["client_ssl_context"]

_LOCK = threading.Lock()
_MADE: dict[tuple[bool, str | None, str | None], ssl.SSLContext] = {}


def client_ssl_context(*, trust_env: bool = True) -> ssl.SSLContext:
    """The context ``httpx.Client(trust_env=trust_env)`` would make for itself, made once
    per process for each value of ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` (read, as httpx
    reads them, only with ``trust_env``)."""
    import httpx

    env = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    key = (trust_env, *env) if trust_env else (False, None, None)
    with _LOCK:
        made = _MADE.get(key)
        if made is None:
            made = _MADE[key] = httpx.create_ssl_context(trust_env=trust_env)
    return made
