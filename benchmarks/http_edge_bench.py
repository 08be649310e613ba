"""The HTTP server under the notify endpoint: waitress (as qywx runs it) vs granian vs gunicorn.

Usage::

    pip install -e . && pip install -r benchmarks/requirements.txt
    python benchmarks/http_edge_bench.py             # ~1.5 min: 3 servers x 2 rounds
    python benchmarks/http_edge_bench.py --quick     # ~30 s: fewer requests, 1 round
    python benchmarks/http_edge_bench.py --count 6000 --concurrency 8 --idle 1000

Each server runs the same *empty* WSGI app in a subprocess on 127.0.0.1: it reads the
request body and answers ``success`` (what a notify endpoint must at least do), so what is
measured is the server alone, the ceiling any handler on it can reach:

* **waitress**: :func:`qywx_cli.core.httpserver.create_server`, exactly the set-up of
  ``qywx serve`` (32 threads, poll, connection limit 4096, header/body timeouts);
* **granian**: ``granian --interface wsgi`` (Rust, tokio), 1 worker, 32 blocking threads;
* **gunicorn**: ``gunicorn -k gthread``, 1 worker, 32 threads.

The load is an asyncio client in this process: ``--concurrency`` keep-alive connections
POSTing a 600-byte body (a callback's size), ``--count`` requests in all after a warm-up.
Reported: requests/s, p50 and p99 latency, and the server's CPU per request (user + system
of the server and its worker processes, from ``/proc``). Rounds alternate the servers.

Then the idle-connection case of the hardening issue: ``--idle`` sockets each send half a
request (a request line and one header) and then one more header line every 2 s, while a
probe opens a fresh connection and sends a whole request every 0.25 s for ``--idle-seconds``;
reported are how many probes were answered, their p50 / max latency, and how many of the
slow sockets the server had closed by the end (a header read timeout frees them).

Only loopback; every loop is bounded in count and time; the servers are killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BODY = b"<xml>" + b"x" * 589 + b"</xml>"
REQUEST = (
    b"POST /notify/QywxProxyTemp?msg_signature=a&timestamp=1&nonce=2 HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n" % len(BODY)
) + BODY
CLOSE_REQUEST = REQUEST.replace(b"Host: 127.0.0.1\r\n", b"Host: 127.0.0.1\r\nConnection: close\r\n")

APP = """
def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "7")])
    return [b"success"]
"""

WAITRESS = """
import sys
sys.path.insert(0, {repo!r})
sys.path.insert(0, {work!r})
from empty_app import app
from qywx_cli.core.httpserver import create_server
server = create_server(app, host="127.0.0.1", port={port}, threads=32, max_body=1 << 20)
server.run()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    process: subprocess.Popen[bytes] | None = None

    def start(self, work: Path) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(work), str(REPO)]))
        self.process = subprocess.Popen(
            self.argv,
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock,
            ):
                sock.sendall(CLOSE_REQUEST)
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not start")

    def pids(self) -> list[int]:
        """The server and its worker processes (same session)."""
        assert self.process is not None
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.getsid(int(entry)) == self.process.pid:
                        found.append(int(entry))
        return found

    def cpu_seconds(self) -> float:
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks
        return total

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def servers(work: Path) -> list[Server]:
    py = sys.executable
    out = []
    port = free_port()
    script = WAITRESS.format(repo=str(REPO), work=str(work), port=port)
    out.append(Server("waitress (qywx serve)", [py, "-c", script], port))
    if version("granian") != "not installed":
        port = free_port()
        out.append(
            Server(
                "granian wsgi",
                [
                    py,
                    "-m",
                    "granian",
                    "--interface",
                    "wsgi",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    "1",
                    "--blocking-threads",
                    "32",
                    "--log-level",
                    "error",
                    "empty_app:app",
                ],
                port,
            )
        )
    if version("gunicorn") != "not installed":
        port = free_port()
        out.append(
            Server(
                "gunicorn gthread",
                [
                    py,
                    "-m",
                    "gunicorn",
                    "-k",
                    "gthread",
                    "-w",
                    "1",
                    "--threads",
                    "32",
                    "-b",
                    f"127.0.0.1:{port}",
                    "--log-level",
                    "error",
                    "empty_app:app",
                ],
                port,
            )
        )
    return out


async def _one_connection(port: int, todo: list[int], latencies: list[float]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    errors = 0
    try:
        while todo:
            todo.pop()
            started = time.perf_counter()
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200") or body != b"success":
                errors += 1
    finally:
        writer.close()
    return errors


async def _load(port: int, count: int, concurrency: int) -> tuple[float, list[float], int]:
    todo = list(range(count))
    latencies: list[float] = []
    started = time.perf_counter()
    errors = await asyncio.gather(
        *(_one_connection(port, todo, latencies) for _ in range(concurrency))
    )
    return time.perf_counter() - started, latencies, sum(errors)


@dataclass
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float
    errors: int


def load(server: Server, count: int, concurrency: int) -> LoadResult:
    asyncio.run(_load(server.port, 200, concurrency))  # warm-up
    cpu = server.cpu_seconds()
    seconds, latencies, errors = asyncio.run(_load(server.port, count, concurrency))
    cpu = server.cpu_seconds() - cpu
    latencies.sort()
    return LoadResult(
        rps=count / seconds,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99) - 1] * 1000,
        cpu_ms=cpu / count * 1000,
        errors=errors,
    )


@dataclass
class IdleResult:
    probes: int
    answered: int
    p50_ms: float
    max_ms: float
    opened: int
    closed_by_server: int


def idle(server: Server, sockets: int, seconds: float) -> IdleResult:
    slow: list[socket.socket] = []
    for _ in range(sockets):
        try:
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=2)
            sock.sendall(b"POST /notify/QywxProxyTemp HTTP/1.1\r\nHost: x\r\n")
            sock.setblocking(False)
            slow.append(sock)
        except OSError:
            break
    time.sleep(0.5)
    latencies: list[float] = []
    probes = 0
    deadline = time.monotonic() + seconds
    next_trickle = time.monotonic() + 2
    while time.monotonic() < deadline:
        probes += 1
        started = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:
                sock.sendall(CLOSE_REQUEST)
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    latencies.append(time.perf_counter() - started)
        except OSError:
            pass
        if time.monotonic() >= next_trickle:  # one more header line on every slow socket
            next_trickle += 2
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.send(b"X-Slow: 1\r\n")
        time.sleep(0.25)
    closed = 0
    for sock in slow:
        try:
            if sock.recv(1024) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        sock.close()
    latencies.sort()
    return IdleResult(
        probes=probes,
        answered=len(latencies),
        p50_ms=statistics.median(latencies) * 1000 if latencies else float("nan"),
        max_ms=latencies[-1] * 1000 if latencies else float("nan"),
        opened=len(slow),
        closed_by_server=closed,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--idle", type=int, default=1000, help="slow sockets")
    parser.add_argument("--idle-seconds", type=float, default=14.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.rounds, args.idle_seconds = 2000, 1, 12.0
    print(f"# {' '.join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, waitress {version('waitress')}, "
        f"granian {version('granian')}, gunicorn {version('gunicorn')}, "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC"
    )
    with tempfile.TemporaryDirectory(prefix="qywx-edge-") as tmp:
        work = Path(tmp)
        (work / "empty_app.py").write_text(APP)
        results: dict[str, list[LoadResult]] = {}
        idles: dict[str, IdleResult] = {}
        candidates = servers(work)
        try:
            for _ in range(args.rounds):
                for server in candidates:
                    server.start(work)
                    try:
                        results.setdefault(server.name, []).append(
                            load(server, args.count, args.concurrency)
                        )
                    finally:
                        server.stop()
            for server in candidates:
                server.start(work)
                try:
                    idles[server.name] = idle(server, args.idle, args.idle_seconds)
                finally:
                    server.stop()
        finally:
            for server in candidates:
                server.stop()
    reference = "waitress (qywx serve)"
    best = {name: max(rs, key=lambda r: r.rps) for name, rs in results.items()}
    print(
        f"\nEmpty app, {args.count} keep-alive POSTs of {len(BODY)} B, concurrency "
        f"{args.concurrency}, best of {args.rounds} round(s):\n"
    )
    print("| server | requests/s | ÷ waitress | p50 ms | p99 ms | server CPU ms/request | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in best.items():
        ratio = r.rps / best[reference].rps
        print(
            f"| {name} | {r.rps:,.0f} | {ratio:.2f}× | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.cpu_ms:.3f} | {r.errors} |"
        )
    print(
        f"\n{args.idle} slow sockets (half a request, one header line every 2 s) held for "
        f"{args.idle_seconds:.0f} s while a fresh request is sent every 0.25 s:\n"
    )
    print(
        "| server | slow sockets opened | probes answered | probe p50 ms | probe max ms "
        "| slow sockets closed by the server |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in idles.items():
        print(
            f"| {name} | {r.opened} | {r.answered}/{r.probes} | {r.p50_ms:.1f} | "
            f"{r.max_ms:.1f} | {r.closed_by_server} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
