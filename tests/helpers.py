"""What many test files share: the console-script runner and its environment, loopback
WSGI servers, callbacks delivered through the element API, an independent WXBizMsgCrypt
and an injectable clock.

:func:`run_qywx` is the one way tests run the CLI. By default it runs in this process,
through ``qywx_cli.cli.main`` (the console script's own entry point, so exit codes and
the one-line errors of ``cli/_errors.py`` are the real ones) under Typer's CliRunner
isolation, with the environment replaced and the working directory changed for the
run: a command costs milliseconds instead of an interpreter start. ``process=True`` runs
the installed console script in a subprocess instead; ``tests/cli/test_smoke.py`` does
that once per command, and tests of signals, start-up and stream encodings do it too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from qywx_cli.core import events as ev

if TYPE_CHECKING:
    import httpx

    from qywx_cli.core.app import App
    from qywx_cli.core.config import AuthInstance
    from qywx_cli.core.fakewecom import FakeWeCom
    from qywx_cli.core.service import NotifyResponse

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
"""The element doc beside the repository; only tests/e2e/test_element_doc_examples.py reads it."""
TEST_DATA = REPO / "tests" / "data"
"""Published facts the tests check against: crypto vectors, the element doc's JSON examples."""
SAMPLES = REPO / "sample_auths"
SECRET_KEYS = ("suiteSecret", "encodingAESKey", "token")
SAMPLE_SECRETS = tuple(
    sorted(
        json.loads(p.read_text(encoding="utf-8"))["authConfig"][k]
        for p in SAMPLES.glob("*/*.json")
        if p.name != "e.json"
        for k in SECRET_KEYS
    )
)
"""Every suiteSecret, EncodingAESKey and token of sample_auths: no output may show one."""

QYWX = (sys.executable, "-m", "qywx_cli")
"""The CLI as a subprocess command line (the test interpreter, this checkout), for Popen."""

_SCRIPT = Path(sys.executable).with_name("qywx")
QYWX_SCRIPT = (str(_SCRIPT),) if _SCRIPT.is_file() else QYWX
"""The console script pip installed beside the test interpreter (``python -m`` without one)."""

WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]

THOROUGH_EXAMPLES = 250
"""``max_examples`` of the "thorough" Hypothesis profile (tests/conftest.py)."""


def examples(thorough: int) -> int:
    """A property test's ``max_examples``: ``thorough`` under the "thorough" profile,
    scaled by the loaded profile's share of it otherwise (2/5 in the default "quick")."""
    from hypothesis import settings

    return max(1, thorough * settings().max_examples // THOROUGH_EXAMPLES)


def auth_config(auths: Path, name: str = "QywxProxyTemp") -> dict[str, str]:
    """The ``authConfig`` of an instance's business file, read independently of qywx."""
    data: dict[str, Any] = json.loads((auths / name / f"{name}.json").read_text("utf-8"))
    return dict(data["authConfig"])


# -- the console script ----------------------------------------------------------------------


def qywx_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``QYWX_*`` setting, importing this checkout.

    Bytecode writing stays on: start-up time is what users and CI see.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("QYWX_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def run_qywx(
    *args: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO,
    input: str | bytes | None = None,
    timeout: float = 60,
    secrets: Iterable[str] = (),
    process: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``qywx ARGS`` to completion; stdout and stderr decoded as UTF-8, newlines kept.

    ``env`` is the whole environment (default :func:`qywx_env`). In process (the
    default) runs are serialised, since they swap the process's streams, environment and
    working directory; ``process=True`` runs the console script, killed after ``timeout``
    seconds. Every run is checked: no traceback unless ``--debug`` was asked for, and
    neither a sample secret nor any of ``secrets`` in stdout or stderr.
    """
    argv = [*map(str, args)]
    environment = qywx_env() if env is None else dict(env)
    data = input.encode("utf-8") if isinstance(input, str) else input
    if process:
        proc = subprocess.run(
            [*QYWX_SCRIPT, *argv],
            env=environment,
            cwd=cwd,
            input=data,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    else:
        code, stdout, stderr = _run_in_process(argv, environment, cwd, data)
    out = subprocess.CompletedProcess(
        ["qywx", *argv], code, stdout.decode("utf-8"), stderr.decode("utf-8")
    )
    if "--debug" not in argv:
        assert "Traceback" not in out.stderr, out.stderr
    for secret in (*SAMPLE_SECRETS, *secrets):
        assert secret not in out.stdout and secret not in out.stderr, "a secret was shown"
    return out


_IN_PROCESS = threading.Lock()
"""One in-process run at a time: a run swaps sys.stdin/stdout/stderr, os.environ and the cwd."""


def _run_in_process(
    argv: list[str], env: Mapping[str, str], cwd: Path, input: bytes | None
) -> tuple[int, bytes, bytes]:
    """``qywx ARGV`` through ``qywx_cli.cli.main`` under Typer's CliRunner isolation.

    Variables of this process that ``env`` lacks are removed for the run, so the command
    sees exactly the environment a subprocess would.
    """
    from typer.testing import CliRunner

    from qywx_cli.cli import main

    search_path = env.get("PYTHONPATH", str(REPO))
    assert search_path == str(REPO), f"PYTHONPATH={search_path} needs a process: process=True"
    overrides: dict[str, str | None] = {k: None for k in os.environ if k not in env}
    overrides.update(env)
    with _IN_PROCESS:
        previous = os.getcwd()
        os.chdir(cwd)
        try:
            with CliRunner().isolation(input=input, env=overrides) as (stdout, stderr, _):
                try:
                    main(argv)
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                return code, stdout.getvalue(), stderr.getvalue()
        finally:
            os.chdir(previous)


def assert_one_line_error(
    result: subprocess.CompletedProcess[str],
    code: int | None = None,
    *fragments: str,
    stdout_empty: bool = True,
) -> str:
    """A refusal as the CLI words it; returns the line.

    Exit ``code`` (any failure when None); stderr is exactly one ``qywx: error: …`` line
    holding every fragment; stdout is empty unless ``stdout_empty`` is False (a
    ``--format json`` run prints its error document there too).
    """
    if code is None:
        assert result.returncode != 0, (result.stdout, result.stderr)
    else:
        assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    if stdout_empty:
        assert result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and result.stderr == lines[0] + "\n", result.stderr
    assert lines[0].startswith("qywx: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, result.stderr)
    return lines[0]


def one_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The whole of stdout parsed as one JSON document."""
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


# -- loopback servers ------------------------------------------------------------------------


def http_client(**options: Any) -> httpx.Client:
    """An httpx client for a test's own calls: no proxy from the environment, a 10 s
    timeout unless given, and the one TLS context of this process.

    httpx builds an ``ssl.create_default_context()`` for every client it makes, loading
    the whole CA bundle: 36 ms of CPU, ten times the loopback request the client then
    makes. The tests make a client per poll of a fake's state, so they share qywx's own
    per-process context (:func:`qywx_cli.core.tls.client_ssl_context`; verification
    stays on, for any https URL). httpx is imported here, not with this module, so a
    fresh interpreter that imports the helpers can still check what qywx loads.
    """
    import httpx

    from qywx_cli.core.tls import client_ssl_context

    options.setdefault("timeout", 10)
    return httpx.Client(trust_env=False, verify=client_ssl_context(trust_env=False), **options)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serving(app: WSGIApp, path: str = "") -> Iterator[str]:
    """Run a WSGI app on 127.0.0.1:<free port> in a thread; yield ``http://127.0.0.1:PORT{path}``."""
    server = make_server(
        "127.0.0.1", 0, app, server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.5,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}{path}"
    finally:
        _shut_down(server)
        server.server_close()
        thread.join(5)


def _shut_down(server: WSGIServer) -> None:
    """``server.shutdown()``, woken by a connection rather than by a short poll interval.

    serve_forever notices a shutdown request only when its select returns: with a
    0.01 s poll interval, every idle loopback server cost 2% of a core. Now the select
    waits up to 0.5 s, and connecting to the server makes it return at once (the
    request is then not served: the loop sees the shutdown first).
    """
    stopper = threading.Thread(target=server.shutdown, daemon=True)
    stopper.start()
    while stopper.is_alive():
        with suppress(OSError):
            socket.create_connection(("127.0.0.1", server.server_port), timeout=1).close()
        stopper.join(0.01)


@dataclass(frozen=True)
class LoopbackWeCom:
    """A FakeWeCom served on 127.0.0.1; ``api_base`` is what QYWX_API_BASE takes."""

    fake: FakeWeCom
    api_base: str

    @property
    def url(self) -> str:
        """Where it listens, as a ``qywx fake-wecom`` process's banner gives it (its
        /fake/… controls answer there and under ``/cgi-bin``)."""
        return self.api_base.removesuffix("/cgi-bin")

    def state(self) -> dict[str, Any]:
        """What the fake says of itself over HTTP (``GET /fake/state``): calls per API,
        calls held, delays and faults set."""
        with http_client() as client:
            answer = client.get(f"{self.url}/fake/state")
        assert answer.status_code == 200, answer.text
        state: dict[str, Any] = answer.json()
        return state


@contextmanager
def loopback_fake() -> Iterator[LoopbackWeCom]:
    """A fresh FakeWeCom served from this process for the block, for processes under
    test that need a WeCom to talk to: what ``qywx fake-wecom`` does, without starting
    an interpreter for it. On the way out, held and delayed calls are let go (as the
    command does when it stops)."""
    from qywx_cli.core.fakewecom import FakeWeCom

    fake = FakeWeCom()
    with serving(fake) as url:
        try:
            yield LoopbackWeCom(fake, f"{url}/cgi-bin")
        finally:
            fake.close()


# -- callbacks through the element API -------------------------------------------------------


class CallbackSender:
    """Signs and delivers command callbacks to one instance through ``App``'s ``notify``.

    With ``App(background=False)`` the handler has run when :meth:`send` returns.
    """

    def __init__(self, app: App, instance: str = "QywxProxyTemp") -> None:
        from qywx_cli.core.app import SERVICE_ELEMENT

        self.service = app.getElement(SERVICE_ELEMENT)
        self.instance = app.getElement(f"auths.{instance}").instance
        self.nonce = 0

    def send(self, event: str, corp: str | None = None) -> NotifyResponse:
        """One signed ``event`` callback (``corp`` as AuthCorpId); WeCom must get ``success``."""
        self.nonce += 1
        suite = self.instance.suite_id
        xml = ev.build_event_xml(event, suite_id=suite, corp_id=corp)
        sealed = self.instance.crypto().encrypt_msg(
            xml, suite, str(int(time.time())), str(self.nonce)
        )
        response: NotifyResponse = self.service.notify(
            sealed.nonce, sealed.msg_signature, sealed.timestamp, body=sealed.request_xml(suite)
        )
        assert response.text == "success", response.text
        return response


# -- an independent WXBizMsgCrypt (the `cryptography` package, wecom-protocol.md §1) ---------


def _cipher(key43: str) -> Cipher[modes.CBC]:
    key = base64.b64decode(key43 + "=")
    return Cipher(algorithms.AES(key), modes.CBC(key[:16]))


def independent_encrypt(key43: str, message: str | bytes, receive_id: str) -> str:
    """Encrypt as WeCom does: random(16) + length + message + receiveid, PKCS#7 to 32 bytes."""
    data = message.encode("utf-8") if isinstance(message, str) else message
    plain = os.urandom(16) + struct.pack(">I", len(data)) + data + receive_id.encode("utf-8")
    pad = 32 - len(plain) % 32
    plain += bytes([pad]) * pad
    enc = _cipher(key43).encryptor()
    return base64.b64encode(enc.update(plain) + enc.finalize()).decode("ascii")


def independent_decrypt(key43: str, encrypt: str, *, strict: bool = True) -> tuple[str, str]:
    """(message, receiveid); ``strict=False`` reads only the last pad byte, as the sample does."""
    dec = _cipher(key43).decryptor()
    plain = dec.update(base64.b64decode(encrypt, validate=True)) + dec.finalize()
    pad = plain[-1]
    if strict:
        assert 1 <= pad <= 32 and plain[-pad:] == bytes([pad]) * pad, "bad padding"
        assert len(plain) % 32 == 0, "bad padding"
    content = plain[16:-pad]
    (length,) = struct.unpack(">I", content[:4])
    return content[4 : 4 + length].decode("utf-8"), content[4 + length :].decode("utf-8")


def sha1_sign(*values: str) -> str:
    """msg_signature: SHA-1 of the sorted, concatenated token, timestamp, nonce and Encrypt."""
    return hashlib.sha1("".join(sorted(values)).encode("utf-8")).hexdigest()


def encrypt_of(body: str) -> str:
    """The ``Encrypt`` CDATA of a callback envelope."""
    return body.split("<Encrypt><![CDATA[")[1].split("]]>")[0]


# -- time --------------------------------------------------------------------------------------


class Clock:
    """An injectable ``now``: a test moves ``t`` instead of sleeping."""

    def __init__(self, start: float) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


# -- WeCom's requests, signed independently of qywx --------------------------------------

_SAMPLE_SUITE = "tj1234567890abcdef"
_SAMPLE_CORP = "ww1234567890abcdef"


@dataclass
class Signed:
    """One request as WeCom sends it: query parameters and (for a POST) the body."""

    query: dict[str, str]
    body: str = ""


class WeComRequests:
    """Builds WeCom's URL-verification GET and signed callback POSTs for one instance."""

    def __init__(self, instance: AuthInstance) -> None:
        self.instance = instance
        self.nonce = 0

    def handshake(self, plaintext: str = "8848123456789") -> Signed:
        encrypt = independent_encrypt(self.instance.encoding_aes_key, plaintext, _SAMPLE_CORP)
        ts, nonce = "1409659589", "1372623149"
        return Signed(
            {
                "msg_signature": sha1_sign(self.instance.token, ts, nonce, encrypt),
                "timestamp": ts,
                "nonce": nonce,
                "echostr": encrypt,
            }
        )

    def suite_ticket(self, ticket: str, *, now: float | None = None) -> Signed:
        """A suite_ticket push carrying ``ticket``, timestamped ``now`` (default: the clock)."""
        return self.callback("suite_ticket", {"SuiteTicket": ticket}, now=now)

    def callback(
        self,
        event: str,
        overrides: dict[str, str] | None = None,
        *,
        corp: str | None = None,
        now: float | None = None,
    ) -> Signed:
        """A signed, encrypted POST of ``event`` as WeCom sends it (receiveid: the suite)."""
        self.nonce += 1
        sent = time.time() if now is None else now
        xml = ev.build_event_xml(
            event, suite_id=_SAMPLE_SUITE, corp_id=corp, overrides=overrides or {}, now=lambda: sent
        )
        encrypt = independent_encrypt(self.instance.encoding_aes_key, xml, _SAMPLE_SUITE)
        ts = str(int(sent))
        nonce = str(7000 + self.nonce)
        body = (
            f"<xml><ToUserName><![CDATA[{_SAMPLE_SUITE}]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        )
        query = {
            "msg_signature": sha1_sign(self.instance.token, ts, nonce, encrypt),
            "timestamp": ts,
            "nonce": nonce,
        }
        return Signed(query, body)


# -- an alert webhook on loopback ----------------------------------------------------------


class Receiver:
    """A webhook endpoint: records each JSON body; answers as told, or blocks."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = 200
        self.errcodes: list[int] = []  # robot errcodes to answer first, one per request
        self.fail_first = 0
        self.hold: threading.Event | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length))
        if self.hold is not None:
            self.hold.wait(30)
        if self.fail_first > 0:
            self.fail_first -= 1
            start_response("502 Bad Gateway", [("Content-Type", "text/plain")])
            return [b"upstream down"]
        self.bodies.append(body)
        errcode = self.errcodes.pop(0) if self.errcodes else 0
        start_response(f"{self.status} X", [("Content-Type", "application/json")])
        return [
            json.dumps({"errcode": errcode, "errmsg": "ok" if not errcode else "busy"}).encode()
        ]


def dead_url() -> str:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"
