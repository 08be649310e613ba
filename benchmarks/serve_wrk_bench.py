"""The notify endpoint driven by wrk, a C load generator: the server-bound case.

Usage::

    apt-get install wrk                                # or your platform's package
    pip install -e . && pip install -r benchmarks/requirements.txt
    python benchmarks/serve_wrk_bench.py               # c=8 and c=32, 2 rounds each
    python benchmarks/serve_wrk_bench.py --concurrency 32 --seconds 10 --rounds 3

``serve_bench.py`` drives both servers with ``qywx simulate-callback``, a Python load
generator that needs more CPU per request than either server, so on a small machine
it measures the generator as much as the servers. Here wrk sends the requests and
takes a small share of a CPU, so the servers' own cost per callback decides.

wrk cannot sign requests, so before each round this script signs and encrypts
``--requests`` distinct suite_ticket callbacks with wechatpy (not qywx: the envelopes
come from an independent implementation) and hands them to wrk as a Lua table that
one wrk thread walks in order. Every request is a fresh delivery; a round that would
need more requests than were signed is reported, since wrap-around repeats are
replays that qywx refuses by design.

Both servers are the ones ``serve_bench.py`` runs (``qywx serve`` with a fake WeCom,
and ``peer_wechatpy_server.py``), on the same waitress thread count (``--threads``,
default 32, qywx's default). After each round the server is killed with SIGKILL and
its database opened: every callback answered 2xx must be in it.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from serve_bench import (
    INSTANCE,
    LABELS,
    REPO,
    SIDES,
    fsync_ms,
    print_header,
    start_fake_wecom,
    start_server,
    stored,
    work_folder,
)

SUITE_TICKET = (
    "<xml><SuiteId><![CDATA[{suite}]]></SuiteId><InfoType><![CDATA[suite_ticket]]></InfoType>"
    "<TimeStamp>{ts}</TimeStamp><SuiteTicket><![CDATA[{ticket}]]></SuiteTicket></xml>"
)
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_TOTAL = re.compile(r"(\d+) requests in")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass
class Round:
    side: str
    concurrency: int
    throughput: float
    p50: float
    p99: float
    sent: int
    answered_2xx: int
    errors: int
    found: int
    cpu_ms: float
    exhausted: bool


def signed_requests(auths: Path, count: int, path: str) -> list[tuple[str, str]]:
    """``count`` distinct (URL path + query, body) suite_ticket callbacks, signed by wechatpy."""
    import xmltodict
    from wechatpy.enterprise.crypto import WeChatCrypto

    config = json.loads((auths / INSTANCE / f"{INSTANCE}.json").read_text(encoding="utf-8"))
    auth = config["authConfig"]
    crypto = WeChatCrypto(auth["token"], auth["encodingAESKey"], auth["suiteId"])
    out = []
    for _ in range(count):
        ts, nonce = str(int(time.time())), secrets.token_hex(8)
        plain = SUITE_TICKET.format(suite=auth["suiteId"], ts=ts, ticket=secrets.token_hex(24))
        signed = xmltodict.parse(crypto.encrypt_message(plain, nonce, ts))["xml"]
        body = (
            f"<xml><ToUserName><![CDATA[{auth['suiteId']}]]></ToUserName>"
            f"<Encrypt><![CDATA[{signed['Encrypt']}]]></Encrypt>"
            "<AgentID><![CDATA[]]></AgentID></xml>"
        )
        query = f"msg_signature={signed['MsgSignature']}&timestamp={ts}&nonce={nonce}"
        out.append((f"{path}?{query}", body))
    return out


def lua_script(requests: list[tuple[str, str]], target: Path) -> None:
    """A wrk script sending ``requests`` in order; long brackets never occur in them."""
    lines = ["local reqs = {"]
    lines += [f"{{[==[{p}]==], [==[{b}]==]}}," for p, b in requests]
    lines += [
        "}",
        "local i = 0",
        "request = function()",
        "  i = i + 1",
        "  local r = reqs[((i - 1) % #reqs) + 1]",
        "  return wrk.format('POST', r[1], {['Content-Type'] = 'text/xml'}, r[2])",
        "end",
    ]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_round(
    side: str, concurrency: int, work: Path, api_base: str, args: argparse.Namespace, index: int
) -> Round:
    folder = work / f"{index:02d}-c{concurrency}-{side}"
    folder.mkdir()
    auths = folder / "auths"
    shutil.copytree(REPO / "sample_auths", auths)
    db = folder / "callbacks.db"
    server = start_server(side, folder, auths, db, args.threads, api_base)
    try:
        script = folder / "requests.lua"
        lua_script(signed_requests(auths, args.requests, f"/notify/{INSTANCE}"), script)
        cpu_before = server.cpu_seconds()
        done = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{args.seconds}s", "--latency", "-s",
             str(script), server.url],
            capture_output=True, text=True, timeout=args.seconds + 120, check=False,
        )  # fmt: skip
        cpu = server.cpu_seconds() - cpu_before
    finally:
        server.kill()  # SIGKILL: only what was committed before each reply survives
    if done.returncode != 0:
        raise SystemExit(f"wrk failed: {done.stderr.strip()}")
    text = done.stdout
    total = int(_TOTAL.search(text).group(1))  # type: ignore[union-attr]
    non_2xx = int(m.group(1)) if (m := _NON_2XX.search(text)) else 0
    socket_errors = sum(map(int, m.groups())) if (m := _ERRORS.search(text)) else 0
    latency = {p: float(v) * _UNIT_MS[u] for p, v, u in _LATENCY.findall(text)}
    return Round(
        side=side,
        concurrency=concurrency,
        throughput=float(_RPS.search(text).group(1)),  # type: ignore[union-attr]
        p50=latency.get("50", float("nan")),
        p99=latency.get("99", float("nan")),
        sent=total,
        answered_2xx=total - non_2xx,
        errors=non_2xx + socket_errors,
        found=stored(db),
        cpu_ms=cpu * 1000 / max(1, total),
        exhausted=total > args.requests,
    )


def _row(label: str, rounds: list[Round]) -> str:
    med = statistics.median
    lost: int | str = sum(max(0, r.answered_2xx - r.found) for r in rounds)
    if rounds[0].side in ("peer-nodb", "empty"):
        lost = "not stored"
    return (
        f"| {label} | {rounds[0].concurrency} | {med(r.throughput for r in rounds):,.0f} "
        f"| {med(r.p50 for r in rounds):.1f} | {med(r.p99 for r in rounds):.1f} "
        f"| {med(r.cpu_ms for r in rounds):.2f} "
        f"| {sum(r.answered_2xx for r in rounds):,} / {sum(r.found for r in rounds):,} "
        f"| {sum(r.errors for r in rounds)} | {lost} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--concurrency", type=int, action="append", help="wrk connections (repeatable; 8, 32)"
    )
    parser.add_argument("--seconds", type=int, default=8, help="length of each timed round")
    parser.add_argument("--threads", type=int, default=32, help="waitress threads, both servers")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per side, alternating")
    parser.add_argument("--requests", type=int, default=40000, help="signed requests per round")
    parser.add_argument("--keep", type=Path, help="keep databases and logs under this folder")
    parser.add_argument(
        "--sides", default="qywx,peer", help=f"comma-separated, in order, of {', '.join(SIDES)}"
    )
    args = parser.parse_args(argv)
    levels = args.concurrency or [8, 32]
    sides = [s for s in args.sides.split(",") if s]
    if not set(sides) <= set(SIDES) or not sides:
        parser.error(f"--sides takes {', '.join(SIDES)}")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")

    work = work_folder(args.keep, "qywx-wrk-bench-")
    print_header("serve_wrk_bench.py", argv)
    print(
        f"wrk -t1, {args.seconds} s per round, {args.rounds} round(s) per side alternating, "
        f"{args.threads} waitress threads; one committed SQLite transaction costs "
        f"{fsync_ms(work):.2f} ms on this disk",
        flush=True,
    )
    fake = start_fake_wecom(work)
    results: dict[tuple[str, int], list[Round]] = {}
    try:
        for level in levels:
            for i in range(args.rounds):
                for side in sides if i % 2 == 0 else sides[::-1]:
                    r = run_round(
                        side, level, work, f"{fake.url}/cgi-bin", args, len(results) * 10 + i
                    )
                    results.setdefault((side, level), []).append(r)
                    print(
                        f"  c={level} round {i + 1} {side}: {r.throughput:,.0f} callbacks/s, "
                        f"p99 {r.p99:.1f} ms, 2xx {r.answered_2xx}, found {r.found}"
                        + (" (ran out of signed requests)" if r.exhausted else ""),
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        fake.kill()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    print(
        "\n| server | wrk connections | callbacks/s (median) | p50 ms | p99 ms "
        "| server CPU ms / callback | answered 2xx / found after kill -9 | errors | lost |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for level in levels:
        for side in sides:
            print(_row(LABELS[side], results[(side, level)]))
    if "qywx" not in sides:
        return 0
    med = statistics.median
    for level in levels:
        q = results[("qywx", level)]
        for side in sides:
            if side != "qywx":
                p = results[(side, level)]
                print(
                    f"\nc={level}: qywx ÷ {side}: throughput "
                    f"{med(r.throughput for r in q) / med(r.throughput for r in p):.2f}×, "
                    f"server CPU per callback "
                    f"{med(r.cpu_ms for r in q) / med(r.cpu_ms for r in p):.2f}×"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
