"""The peer for serve_bench.py: a minimal notify handler written by hand with wechatpy.

This is what a developer would write without qywx: wechatpy's ``WeChatCrypto`` checks
the signature and decrypts, ``xmltodict`` reads the event's InfoType, and the callback
is written to SQLite **before** ``success`` is sent, with the durability qywx promises:
WAL, ``synchronous=FULL`` (every commit is fsynced), one ``BEGIN IMMEDIATE``
transaction per callback. It is served by waitress with the same thread count and
limits as ``qywx serve``. It does not import qywx: the instance's token, EncodingAESKey
and suite id are read straight from the instance folder's JSON.

What it leaves out, on purpose, because a minimal handler does: the timestamp window,
replay and redelivery checks, the access log, and handling the event afterwards
(qywx stores the SuiteTicket / exchanges the AuthCode in background workers).

Usage::

    python benchmarks/peer_wechatpy_server.py --instance sample_auths/QywxProxyTemp \\
        --db /tmp/peer.db --port 0 --threads 8

It prints ``listening on http://HOST:PORT`` on stderr once it accepts connections.

Two lighter modes give the references of the HTTP edge: ``--no-db`` verifies and
decrypts as above but stores nothing (the non-durable hand-written handler), and
``--empty`` answers ``success`` to every POST without even reading the query (the
ceiling of the HTTP server itself with this thread count).
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import xmltodict
from waitress.server import create_server
from wechatpy.enterprise.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException

SCHEMA = """
CREATE TABLE IF NOT EXISTS callbacks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    info_type TEXT,
    msg_signature TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    nonce TEXT NOT NULL,
    envelope TEXT NOT NULL
)
"""
MAX_BODY = 1024 * 1024


def read_instance(folder: Path) -> tuple[str, str, str]:
    """(token, EncodingAESKey, suite id) from ``<folder>/<name>.json``."""
    config = json.loads((folder / f"{folder.name}.json").read_text(encoding="utf-8"))
    auth = config["authConfig"]
    return auth["token"], auth["encodingAESKey"], auth["suiteId"]


def connect(db: str) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None, timeout=5.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class PeerApp:
    """POST /notify[/…]: verify, decrypt, store (committed), then ``success``."""

    def __init__(
        self, token: str, aes_key: str, suite_id: str, db: str | None, *, empty: bool = False
    ) -> None:
        self.crypto = WeChatCrypto(token, aes_key, suite_id)
        self.db = db
        self.empty = empty
        self.local = threading.local()
        if db is not None:
            conn = connect(db)
            conn.execute(SCHEMA)
            conn.close()

    def conn(self) -> sqlite3.Connection:
        # One connection per waitress thread: SQLite serialises the writers itself.
        conn: sqlite3.Connection | None = getattr(self.local, "conn", None)
        if conn is None:
            assert self.db is not None
            conn = self.local.conn = connect(self.db)
        return conn

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        status, body = self.handle(environ)
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    def handle(self, environ: dict[str, Any]) -> tuple[str, bytes]:
        if not environ.get("PATH_INFO", "").startswith("/notify"):
            return "404 Not Found", b"not found"
        if self.empty:
            environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            return "200 OK", b"success"
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        try:
            signature, timestamp, nonce = (
                query["msg_signature"],
                query["timestamp"],
                query["nonce"],
            )
        except KeyError:
            return "400 Bad Request", b"missing query parameter"
        if environ["REQUEST_METHOD"] == "GET":
            try:
                echo = self.crypto.check_signature(signature, timestamp, nonce, query["echostr"])
            except Exception:
                return "403 Forbidden", b"bad signature"
            return "200 OK", echo.encode()
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if not 0 < length <= MAX_BODY:
            return "400 Bad Request", b"bad body"
        body = environ["wsgi.input"].read(length)
        try:
            plaintext = self.crypto.decrypt_message(body, signature, timestamp, nonce)
            info_type = xmltodict.parse(plaintext)["xml"].get("InfoType")
        except InvalidSignatureException:
            return "403 Forbidden", b"bad signature"
        except Exception:
            return "400 Bad Request", b"cannot decrypt"
        if self.db is None:
            return "200 OK", b"success"
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT INTO callbacks (received_at, info_type, msg_signature, timestamp, nonce, "
                "envelope) VALUES (?, ?, ?, ?, ?, ?)",
                (time.time(), info_type, signature, timestamp, nonce, body.decode()),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return "200 OK", b"success"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="wechatpy-based notify handler (the peer)")
    parser.add_argument("--instance", type=Path, required=True, help="an auths/<Name> folder")
    parser.add_argument("--db", help="SQLite file to write callbacks to")
    parser.add_argument("--no-db", action="store_true", help="verify and decrypt, store nothing")
    parser.add_argument("--empty", action="store_true", help="answer success, do nothing")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    if args.db is None and not (args.no_db or args.empty):
        parser.error("--db is required unless --no-db or --empty")
    db = None if args.no_db or args.empty else args.db
    app = PeerApp(*read_instance(args.instance), db, empty=args.empty)
    # The same waitress settings `qywx serve` uses (qywx_cli/cli/server_cmds.py).
    server = create_server(
        app,
        host=args.host,
        port=args.port,
        threads=args.threads,
        max_request_body_size=MAX_BODY,
        channel_timeout=30,
        ident="peer",
        clear_untrusted_proxy_headers=True,
    )

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(
        f"listening on http://{server.effective_host}:{server.effective_port}",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
