"""An internet-facing ``qywx serve`` tried as an attacker and an unlucky operator would.

A real ``qywx serve`` on loopback (its WeCom a FakeWeCom served by the test): slow-loris
sockets by the thousand, the body-size boundary to the byte, waitress's own error pages,
HEAD, idempotent replays, an unwritable database behind ``/healthz``. Waits are bounded
polls on what the server does (a socket closed, a status changed), never assertions on
how fast it did it.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from qywx_cli.core import events as ev
from qywx_cli.core.crypto import WXBizMsgCrypt
from qywx_cli.core.edge import available as edge_available
from qywx_cli.core.store import Store
from tests.e2e.conftest import Proc, wait_for
from tests.e2e.test_hostile import Answer, notify, read_answer
from tests.helpers import QYWX, SAMPLES, http_client, loopback_fake, qywx_env

INSTANCE = "QywxProxyTemp"
MIB = 1024 * 1024
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def _ready(sock: socket.socket, timeout: float, *, write: bool = False) -> tuple[bool, bool]:
    """(readable, writable) within ``timeout`` s. poll, not select: the thousand-socket
    test pushes descriptors past select's FD_SETSIZE (1024), more so in a test worker."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | (select.POLLOUT if write else 0))
    events = [e for _, e in poller.poll(timeout * 1000)]
    flags = events[0] if events else 0
    readable = bool(flags & (select.POLLIN | select.POLLHUP | select.POLLERR))
    return readable, bool(flags & select.POLLOUT)


class Edge:
    """One ``qywx serve`` (with a fake WeCom) and a signer for its sample instance."""

    def __init__(self, root: Path, *serve_args: str, db_url: str | None = None) -> None:
        self.root = root
        #: the HTTP server under test: --server if given, else what `auto` picks
        self.http = (
            serve_args[serve_args.index("--server") + 1]
            if "--server" in serve_args
            else ("granian" if edge_available() else "waitress")
        )
        self.auths = root / "auths"
        if not self.auths.exists():
            shutil.copytree(SAMPLES, self.auths)
        self.db = root / "data" / "qywx.db"
        #: what QYWX_DB names: the SQLite file, or a postgresql:// URL if given
        self.target = db_url or str(self.db)
        self.env = qywx_env(QYWX_AUTHS=str(self.auths), QYWX_DB=self.target)
        cfg = json.loads((self.auths / INSTANCE / f"{INSTANCE}.json").read_text())["authConfig"]
        self.suite_id = cfg["suiteId"]
        self.crypt = WXBizMsgCrypt(cfg["token"], cfg["encodingAESKey"], {self.suite_id: "suite"})
        self._stack = contextlib.ExitStack()
        self.fake = self._stack.enter_context(loopback_fake())  # served from this process
        self.env["QYWX_API_BASE"] = self.fake.api_base
        try:
            self.server = Proc(
                ["serve", "--port", "0", "--threads", "4", *serve_args], self.env, root
            )
        except BaseException:
            self._stack.close()
            raise
        host, port = self.server.url.removeprefix("http://").split(":")
        self.address = (host, int(port))

    def close(self) -> None:
        try:
            self.server.stop()
        finally:
            self._stack.close()

    def signed(
        self, xml: str | None = None, *, pad: int = 0, sent: float | None = None
    ) -> tuple[str, bytes]:
        """Target and body of a fresh signed callback; ``pad`` spaces before ``</xml>``;
        ``sent`` the timestamp it is signed with (default: now)."""
        ts = str(int(time.time() if sent is None else sent))
        nonce = str(time.monotonic_ns())
        encrypt = self.crypt.encrypt(
            xml or ev.build_event_xml("suite_ticket", suite_id=self.suite_id), self.suite_id
        )
        query = {"msg_signature": self.crypt.sign(ts, nonce, encrypt), "timestamp": ts}
        query["nonce"] = nonce
        body = (
            f"<xml><ToUserName><![CDATA[{self.suite_id}]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypt}]]></Encrypt>{' ' * pad}</xml>"
        )
        return notify(query, INSTANCE), body.encode()

    def sized(self, size: int) -> tuple[str, bytes]:
        """A signed callback padded to exactly ``size`` bytes."""
        _, body = self.signed()
        return self.signed(pad=size - len(body))

    def connect(self) -> socket.socket:
        return socket.create_connection(self.address, timeout=10)

    def send(self, raw: bytes) -> Answer:
        with self.connect() as sock:
            sent = 0
            while sent < len(raw):
                readable, writable = _ready(sock, 10, write=True)
                if readable:
                    break  # answered early (413): stop writing, read the answer
                if writable:
                    try:
                        sent += sock.send(raw[sent : sent + 65536])
                    except (BrokenPipeError, ConnectionResetError):
                        break
            return read_answer(sock)

    def post(self, target: str, body: bytes) -> Answer:
        head = (
            f"POST {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Type: text/xml\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return self.send(head.encode() + body)

    def records(self) -> list:  # type: ignore[type-arg]
        with Store(self.target) as store:
            return store.list_callbacks(limit=100_000)

    def fake_calls(self) -> dict[str, int]:
        return dict(self.fake.state()["calls"])


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Edge]:
    world = Edge(tmp_path, "--header-timeout", "2")
    yield world
    world.close()


LIMITS = ("--header-timeout", "2", "--body-timeout", "2")


@pytest.fixture(scope="module", params=["granian", "waitress"])
def any_edge(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Edge]:
    """The same endpoint on each HTTP server ``qywx serve --server`` offers: the limits
    of an internet-facing edge hold on both. One server per module and worker for the
    tests that only read their answers to their own requests."""
    world = Edge(tmp_path_factory.mktemp("edge"), *LIMITS, "--server", request.param)
    yield world
    world.close()


@pytest.fixture(params=["granian", "waitress"])
def fresh_edge(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Edge]:
    """As ``any_edge``, a server of the test's own (one it may load with sockets)."""
    world = Edge(tmp_path, *LIMITS, "--server", request.param)
    yield world
    world.close()


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_a_thousand_slow_connections_do_not_lock_wecom_out(fresh_edge: Edge) -> None:
    """1,000 sockets each send half a request and stall (waitress's default limit was 100:
    99 such sockets made every later request wait forever). A signed callback and
    /healthz are still answered, and the header timeout then closes every slow socket."""
    slow: list[socket.socket] = []
    try:
        for _ in range(1000):
            sock = fresh_edge.connect()
            sock.sendall(f"POST {notify({}, INSTANCE)} HTTP/1.1\r\nHost: x\r\n".encode())
            sock.setblocking(False)
            slow.append(sock)
        target, body = fresh_edge.signed()
        answer = fresh_edge.post(target, body)
        assert (answer.status, answer.body) == (200, b"success")
        health = fresh_edge.send(HEALTHZ)
        assert health.status == 200 and json.loads(health.body)["ok"] is True
        # --header-timeout 2: the slow sockets are dropped, their slots given back.
        assert wait_for(lambda: all(_closed_by_server(s) for s in slow[-50:]), timeout=20)
        assert sum(_closed_by_server(s) for s in slow) + 50 >= len(slow)
    finally:
        for sock in slow:
            sock.close()
    assert fresh_edge.server.popen.poll() is None
    assert "Traceback" not in fresh_edge.server.log


def test_a_trickle_of_headers_is_cut_off_by_the_header_timeout(any_edge: Edge) -> None:
    """One header line every 0.3 s keeps waitress's idle timer fresh forever; the header
    timeout (2 s here) counts from the request's first byte instead."""
    with any_edge.connect() as sock:
        sock.sendall(b"POST /notify/QywxProxyTemp HTTP/1.1\r\nHost: x\r\n")
        closed = False
        deadline = time.monotonic() + 15
        while not closed and time.monotonic() < deadline:
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            readable, _ = _ready(sock, 0.3)
            if readable:
                closed = _closed_by_server(sock)
        assert closed


def test_the_body_limit_is_exactly_one_mebibyte(any_edge: Edge) -> None:
    """README: bodies *over* 1 MiB are refused. Exactly 1 MiB (a signed callback padded
    with whitespace) is read and answered; one byte more is 413, one line."""
    target, body = any_edge.sized(MIB)
    assert len(body) == MIB
    answer = any_edge.post(target, body)
    assert (answer.status, answer.body) == (200, b"success")
    target, body = any_edge.sized(MIB + 1)
    answer = any_edge.post(target, body)
    assert answer.status == 413
    assert answer.body.count(b"\n") == 0 and len(answer.body) < 200, answer.body


def _raw(start: bytes, *headers: bytes) -> bytes:
    lines = [start + b" HTTP/1.1", b"Host: x", b"Connection: close", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


@pytest.mark.parametrize(
    ("raw", "statuses"),
    [
        (_raw(b"POST /notify", b"Transfer-Encoding: gzip, chunked"), {"*": 501}),
        # RFC 9112 §2.2 lets a recipient take a bare LF as a line end: granian (hyper)
        # reads two header fields and answers; waitress refuses the request.
        (_raw(b"GET /healthz", b"X-A: 1\nX-B: 2"), {"granian": 200, "waitress": 400}),
        (_raw(b"GET /healthz", b"Bad Header"), {"*": 400}),
        (_raw(b"POST /notify", b"Content-Length: 2000000"), {"*": 413}),
    ],
    ids=["transfer-coding", "bare-lf", "malformed-header", "declared-too-large"],
)
def test_the_servers_own_errors_are_one_short_line(
    any_edge: Edge, raw: bytes, statuses: dict[str, int]
) -> None:
    answer = any_edge.send(raw)
    assert answer.status == statuses.get(any_edge.http, statuses.get("*"))
    if answer.status >= 400:
        assert b"\n" not in answer.body and len(answer.body) < 200, answer.body
        assert b"generated by" not in answer.body and b"waitress" not in answer.body.lower()
    else:
        assert json.loads(answer.body)["ok"] is True


def test_a_trickle_of_body_bytes_is_cut_off_by_the_body_timeout(any_edge: Edge) -> None:
    """Headers on time, then the body a byte every 0.3 s: the body timeout (2 s here)
    drops the request, so a client cannot hold a request open by sending slowly."""
    target, body = any_edge.signed()
    head = (
        f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    nonce = dict(parse_qsl(urlsplit(target).query))["nonce"]
    with any_edge.connect() as sock:
        sock.sendall(head.encode() + body[:10])
        closed, sent = False, 10
        deadline = time.monotonic() + 15
        while not closed and sent < len(body) - 1 and time.monotonic() < deadline:
            try:
                sock.sendall(body[sent : sent + 1])
                sent += 1
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            readable, _ = _ready(sock, 0.3)
            if readable:  # an answer (granian: 408), or the socket closed (waitress)
                data = b""
                with contextlib.suppress(ConnectionResetError):
                    while chunk := sock.recv(65536):
                        data += chunk
                closed = True
                if data:
                    status_line, _, text = data.partition(b"\r\n\r\n")
                    assert status_line.split()[1] == b"408", status_line
                    assert b"\n" not in text and len(text) < 200, text
        assert closed and sent < len(body) - 1
    recorded = [r for r in any_edge.records() if r.nonce == nonce]
    assert not recorded, "a body never finished is never recorded"


def test_head_gets_the_headers_and_no_body(any_edge: Edge) -> None:
    with any_edge.connect() as sock:
        sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b""
    assert b"content-length: " in head.lower()


def test_an_identical_replay_is_200_and_processed_once(edge: Edge) -> None:
    """The byte-identical request again (our first reply lost): ``success``, logged
    ``duplicate``, and the AuthCode is exchanged once."""
    edge.post(*edge.signed())  # a suite_ticket first: create_auth needs one
    xml = ev.build_event_xml("create_auth", suite_id=edge.suite_id)
    target, body = edge.signed(xml)
    first = edge.post(target, body)
    assert (first.status, first.body) == (200, b"success")
    assert wait_for(lambda: any(r.status == "processed" for r in edge.records()[:1]))
    again = [edge.post(target, body) for _ in range(3)]
    assert [(a.status, a.body) for a in again] == [(200, b"success")] * 3
    mine = [r for r in edge.records() if r.info_type == "create_auth"]
    assert sorted(r.status for r in mine) == ["duplicate"] * 3 + ["processed"]
    assert edge.fake_calls().get("service/v2/get_permanent_code") == 1


# -- an unwritable database -------------------------------------------------------------


def _set_read_only(db: Path, read_only: bool) -> None:
    """Make the database file unwritable: the immutable attribute for root (who ignores
    permissions), mode 0400 for anyone else."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i" if read_only else "-i", str(db)], check=True)
    else:
        db.chmod(0o400 if read_only else 0o600)


def test_healthz_and_doctor_tell_when_nothing_can_be_written(tmp_path: Path) -> None:
    """A read-only database answers reads, so a read-only probe said ok while every
    callback got 503. The write probe makes /healthz 503 (and doctor fail) until the
    database can be written again; the latest suite_ticket's age is reported. The probe
    is reused for half a second here instead of 5 s, so neither change waits it out."""
    (tmp_path / "qywx.toml").write_text("[serve]\nhealth_probe_seconds = 0.5\n", "utf-8")
    edge = Edge(tmp_path)
    try:
        edge.post(*edge.signed())
        healthy = edge.send(HEALTHZ)
        probed = time.monotonic()  # the server's probe was taken before this
        doc = json.loads(healthy.body)
        assert healthy.status == 200 and doc["writable"] is True
        assert isinstance(doc["suite_ticket_age_s"], float) and doc["suite_ticket_age_s"] >= 0
        _set_read_only(edge.db, True)
        try:
            # Past the 0.5 s the healthy verdict may be reused (5 s by default), the next
            # /healthz probes again and finds the database read-only.
            time.sleep(max(0.0, probed + 0.6 - time.monotonic()))
            answer = edge.send(HEALTHZ)
            assert answer.status == 503, answer.body
            doc = json.loads(answer.body)
            assert doc["ok"] is False and doc["writable"] is False and doc["error"]
            doctor = subprocess.run(
                [*QYWX, "doctor", "--auth", INSTANCE, "-f", "json"],
                env=edge.env, cwd=edge.root, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            database = next(
                c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "database"
            )
            assert doctor.returncode == 1 and database["ok"] is False
            assert "NOT writable" in database["detail"], database
        finally:
            _set_read_only(edge.db, False)
        assert wait_for(lambda: edge.send(HEALTHZ).status == 200, timeout=20, interval=0.2)
    finally:
        edge.close()


# -- installations ---------------------------------------------------------------------


def _fault(edge: Edge, errcode: int, count: int) -> None:
    with http_client() as client:
        answer = client.post(
            edge.fake.url + "/cgi-bin/fake/faults",
            json={"api": "service/v2/get_permanent_code", "errcode": errcode, "count": count},
        )
    assert answer.status_code == 200, answer.text


def test_a_transient_wecom_fault_heals_without_qywx_retry(edge: Edge) -> None:
    """WeCom answers "system busy" (-1) twice: the server runs the create_auth again by
    itself, with back-off, while the AuthCode is valid; no operator, no redelivery."""
    edge.post(*edge.signed())
    _fault(edge, -1, 2)
    answer = edge.post(*edge.signed(ev.build_event_xml("create_auth", suite_id=edge.suite_id)))
    assert (answer.status, answer.body) == (200, b"success")

    def installed() -> object:
        mine = [r for r in edge.records() if r.info_type == "create_auth"]
        return mine and mine[0].status == "processed" and mine[0]

    done = wait_for(installed, timeout=30, interval=0.2)
    assert done, [(r.status, r.last_error) for r in edge.records()]
    assert done.attempts == 3 and done.last_error is None  # type: ignore[attr-defined]
    assert edge.fake_calls()["service/v2/get_permanent_code"] == 3
    with Store(edge.db) as store:
        assert [a.state for a in store.list_corp_auths(edge.suite_id)] == ["active"]


def test_a_spent_auth_code_is_failed_with_the_recovery_step(edge: Edge) -> None:
    """40078 with no permanent code stored (the code was spent by a process killed right
    after WeCom answered): ``failed`` with the one way back, counted by /healthz and
    named by doctor; never retried (it cannot succeed)."""
    edge.post(*edge.signed())
    _fault(edge, 40078, 1)
    edge.post(*edge.signed(ev.build_event_xml("create_auth", suite_id=edge.suite_id)))

    def failed() -> object:
        mine = [r for r in edge.records() if r.info_type == "create_auth"]
        return mine and mine[0].status == "failed" and mine[0]

    rec = wait_for(failed, timeout=15)
    assert rec, [(r.status, r.last_error) for r in edge.records()]
    error = rec.last_error or ""  # type: ignore[attr-defined]
    assert "40078" in error and "重置Secret" in error and "reset_permanent_code" in error
    assert "transient" not in error

    def counted() -> object:
        doc = json.loads(edge.send(HEALTHZ).body)
        return doc.get("installs_need_recovery") == 1 and doc

    assert wait_for(counted, timeout=15, interval=0.5)
    doctor = subprocess.run(
        [*QYWX, "doctor", "--auth", INSTANCE, "-f", "json"],
        env=edge.env, cwd=edge.root, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["installations"]["ok"] is False
    assert "reset_permanent_code" in checks["installations"]["fix"]
    assert edge.fake_calls()["service/v2/get_permanent_code"] == 1
