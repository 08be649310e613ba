"""Callback crypto in process: verify + decrypt + parse, qywx against wechatpy.

Usage::

    pip install -e . && pip install -r benchmarks/requirements.txt
    python benchmarks/crypto_bench.py                # 2,000 envelopes per case, 7 rounds
    python benchmarks/crypto_bench.py --quick        # 300 envelopes, 3 rounds
    python benchmarks/crypto_bench.py --stages       # also: each step timed on both sides

What one operation is, for each side, on the same signed envelopes (the POST body as
bytes plus msg_signature, timestamp and nonce, exactly what a WSGI handler holds):

* **qywx**: ``WXBizMsgCrypt.decrypt_msg`` (parse the envelope with the DTD-refusing
  parser, check the signature in constant time, AES-256-CBC, 32-byte PKCS#7 and the
  receiveid checked against the instance's set) then ``events.parse_event`` (the same
  safe parser, then a typed event dataclass).
* **wechatpy**: ``WeChatCrypto(token, key, receiveid).decrypt_message`` (``xmltodict``
  on the envelope, signature, AES, receiveid) then the parse a wechatpy application
  does next: ``wechatpy.enterprise.parse_message`` for data callbacks (it needs
  ``MsgType``), ``xmltodict.parse(...)["xml"]`` for command callbacks, for which
  wechatpy has no parser of its own (it is what ``decrypt_message`` itself uses).

Both sides are checked to read the same fields from every case before timing. Rounds
are interleaved (qywx then wechatpy, then the other way round) so that noise from the
machine hits both; the table reports the median round and the best one. A second
table sends hostile envelopes to both and reports what each does with them.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qywx_cli.core.crypto import WXBizMsgCrypt  # noqa: E402
from qywx_cli.core.errors import QywxError  # noqa: E402
from qywx_cli.core.events import build_event_xml, parse_event  # noqa: E402

QYWX_DIR = Path(sys.modules["qywx_cli"].__file__ or "").parent

try:
    import xmltodict
    from wechatpy.enterprise import parse_message as wechatpy_parse_message
    from wechatpy.enterprise.crypto import WeChatCrypto
except ImportError:  # pragma: no cover - a message for people, not a code path
    sys.exit("wechatpy is not installed: pip install -r benchmarks/requirements.txt")

# The sample instance's credentials (sample_auths/QywxProxyTemp): not secrets.
TOKEN = "Ob05nvp8DucDexAf5iTh6IZK"
AES_KEY = "4CUdYrBwSjnWyz4yYNsz3PukTqABgnMBwKuGToYu25b"
SUITE_ID = "tj1234567890abcdef"
CORP_ID = "ww1234567890abcdef"


@dataclass(frozen=True)
class Case:
    """One kind of callback: its plaintext factory and the receiveid WeCom encrypts it for."""

    name: str
    kind: str  # "command" (指令回调, receiveid = suite id) or "data" (receiveid = corp id)
    receive_id: str
    plaintext: Callable[[random.Random, int], str]


@dataclass(frozen=True)
class Request:
    """What the notify handler holds: the query parameters and the raw POST body."""

    msg_signature: str
    timestamp: str
    nonce: str
    body: bytes


def _token(rng: random.Random) -> Callable[[int], str]:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return lambda n: "".join(rng.choice(alphabet) for _ in range(n * 4 // 3))


def _command(info_type: str) -> Callable[[random.Random, int], str]:
    def build(rng: random.Random, now: int) -> str:
        return build_event_xml(
            info_type, suite_id=SUITE_ID, corp_id=CORP_ID, now=lambda: now, token=_token(rng)
        )

    return build


def _contact(ext_attrs: int) -> Callable[[random.Random, int], str]:
    """A data-format change_contact/update_user (§3.6) with ``ext_attrs`` ExtAttr items."""

    def build(rng: random.Random, now: int) -> str:
        items = "".join(
            f"<Item><Name><![CDATA[属性{i}]]></Name><Type>0</Type>"
            f"<Text><Value><![CDATA[值{rng.randrange(10**8)}]]></Value></Text></Item>"
            for i in range(ext_attrs)
        )
        user = f"user{rng.randrange(10**6)}"
        return (
            f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
            "<FromUserName><![CDATA[sys]]></FromUserName>"
            f"<CreateTime>{now}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            "<Event><![CDATA[change_contact]]></Event>"
            "<ChangeType><![CDATA[update_user]]></ChangeType>"
            f"<UserID><![CDATA[{user}]]></UserID><NewUserID><![CDATA[{user}x]]></NewUserID>"
            "<Name><![CDATA[张三]]></Name><Department><![CDATA[1,2,3]]></Department>"
            "<MainDepartment>1</MainDepartment><IsLeaderInDept><![CDATA[1,0,0]]></IsLeaderInDept>"
            "<DirectLeader><![CDATA[lisi,wangwu]]></DirectLeader>"
            "<Position><![CDATA[产品经理]]></Position><Mobile>13800000000</Mobile>"
            "<Gender>1</Gender><Email><![CDATA[zhangsan@example.com]]></Email>"
            "<Status>1</Status><Avatar><![CDATA[https://wework.qpic.cn/avatar/0]]></Avatar>"
            "<Alias><![CDATA[zhangsan]]></Alias><Telephone><![CDATA[020-123456]]></Telephone>"
            "<Address><![CDATA[广州市海珠区新港中路]]></Address>"
            f"<ExtAttr>{items}</ExtAttr></xml>"
        )

    return build


CASES: tuple[Case, ...] = (
    Case("suite_ticket", "command", SUITE_ID, _command("suite_ticket")),
    Case("create_auth", "command", SUITE_ID, _command("create_auth")),
    Case("change_contact", "data", CORP_ID, _contact(4)),
    Case("change_contact, 60 ExtAttr", "data", CORP_ID, _contact(60)),
)


def make_requests(case: Case, count: int, seed: int) -> list[Request]:
    """``count`` distinct envelopes, each with a fresh ticket / AuthCode / nonce / IV."""
    rng = random.Random(f"{seed}:{case.name}")
    crypto = WXBizMsgCrypt(TOKEN, AES_KEY, random_bytes=rng.randbytes)
    requests = []
    base = 1_732_000_000
    for i in range(count):
        plaintext = case.plaintext(rng, base + i)
        env = crypto.encrypt_msg(plaintext, case.receive_id, str(base + i), str(10**9 + i))
        body = env.request_xml(SUITE_ID if case.kind == "command" else CORP_ID, "")
        requests.append(Request(env.msg_signature, env.timestamp, env.nonce, body.encode()))
    return requests


# -- the two sides ------------------------------------------------------------------------

Runner = Callable[[Sequence[Request]], list[Any]]


def qywx_runner(case: Case) -> Runner:
    crypto = WXBizMsgCrypt(TOKEN, AES_KEY, {SUITE_ID: "suite", CORP_ID: "authorized_corp"})

    def run(requests: Sequence[Request]) -> list[Any]:
        return [
            parse_event(crypto.decrypt_msg(r.msg_signature, r.timestamp, r.nonce, r.body).message)
            for r in requests
        ]

    return run


def wechatpy_runner(case: Case) -> Runner:
    crypto = WeChatCrypto(TOKEN, AES_KEY, case.receive_id)
    if case.kind == "data":
        parse: Callable[[str], Any] = wechatpy_parse_message
    else:

        def parse(xml: str) -> Any:
            return xmltodict.parse(xml)["xml"]

    def run(requests: Sequence[Request]) -> list[Any]:
        return [
            parse(crypto.decrypt_message(r.body, r.msg_signature, r.timestamp, r.nonce))
            for r in requests
        ]

    return run


def _fields_wechatpy(parsed: Any) -> dict[str, Any]:
    return dict(parsed) if isinstance(parsed, dict) else dict(parsed._data)


def check_same(case: Case, requests: Sequence[Request]) -> None:
    """Both sides must read the same top-level text fields, or the race is meaningless."""
    ours = qywx_runner(case)(requests[:20])
    theirs = wechatpy_runner(case)(requests[:20])
    for event, other in zip(ours, theirs, strict=True):
        fields = _fields_wechatpy(other)
        for name, value in event.fields.items():
            if isinstance(fields.get(name), str) and fields[name].strip() != value:
                raise SystemExit(f"{case.name}: the two sides disagree on {name}")


# -- timing -------------------------------------------------------------------------------


Clock = Callable[[], float]
CLOCKS: dict[str, Clock] = {"cpu": time.process_time, "wall": time.perf_counter}
"""``cpu`` (default) counts only this process's CPU time, so other jobs on a shared
machine do not show up as slowness of whichever side happened to be running."""


def _ops_per_second(run: Runner, requests: Sequence[Request], clock: Clock) -> float:
    gc.collect()
    started = clock()
    run(requests)
    return len(requests) / (clock() - started)


@dataclass
class Result:
    case: Case
    size: int
    qywx: list[float]
    wechatpy: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(self.qywx) / statistics.median(self.wechatpy)


def measure(case: Case, count: int, rounds: int, seed: int, clock: Clock) -> Result:
    requests = make_requests(case, count, seed)
    check_same(case, requests)
    ours, theirs = qywx_runner(case), wechatpy_runner(case)
    ours(requests[:50])  # warm both (imports, caches) outside the timed rounds
    theirs(requests[:50])
    q: list[float] = []
    w: list[float] = []
    for i in range(rounds):
        order = ((ours, q), (theirs, w)) if i % 2 == 0 else ((theirs, w), (ours, q))
        for run, out in order:
            out.append(_ops_per_second(run, requests, clock))
    size = round(statistics.mean(len(case.plaintext(random.Random(0), 0)) for _ in range(3)))
    return Result(case, size, q, w)


# -- hostile input ------------------------------------------------------------------------

HOSTILE: tuple[tuple[str, Callable[[bytes], bytes]], ...] = (
    (
        "DOCTYPE with an external DTD",
        lambda body: b'<!DOCTYPE xml SYSTEM "http://attacker.invalid/x.dtd">' + body,
    ),
    (
        "entity expansion (billion laughs, 10^9)",
        lambda body: (
            (
                '<!DOCTYPE xml [<!ENTITY a0 "lol">'
                + "".join(f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10))
                + "]>"
            ).encode()
            + body.replace(b"</xml>", b"<X>&a9;</X></xml>")
        ),
    ),
    (
        "external entity (XXE)",
        lambda body: (
            b'<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            + body.replace(b"</xml>", b"<X>&x;</X></xml>")
        ),
    ),
    (
        "100,000-deep nesting (1 MB)",
        lambda body: body.replace(b"</xml>", b"<a>" * 100_000 + b"</a>" * 100_000 + b"</xml>"),
    ),
)
"""Each wraps a *correctly signed* envelope, so only the XML parser can stop it."""


def hostile_outcome(call: Callable[[], object]) -> str:
    started = time.perf_counter()
    try:
        call()
    except QywxError as exc:
        outcome = f"refused: {type(exc).__name__}"
    except Exception as exc:  # wechatpy raises whatever its layers raise
        outcome = f"raised {type(exc).__name__}: {' '.join(str(exc).split())[:40]}"
    else:
        outcome = "accepted"
    return f"{outcome} ({(time.perf_counter() - started) * 1000:.2f} ms)"


def hostile_rows(seed: int) -> list[tuple[str, str, str]]:
    valid = make_requests(CASES[0], 1, seed)[0]
    ours = qywx_runner(CASES[0])
    theirs = wechatpy_runner(CASES[0])
    rows = []
    for name, wrap in HOSTILE:
        bad = [Request(valid.msg_signature, valid.timestamp, valid.nonce, wrap(valid.body))]
        rows.append(
            (
                name,
                hostile_outcome(lambda bad=bad: ours(bad)),
                hostile_outcome(lambda bad=bad: theirs(bad)),
            )
        )
    return rows


# -- stages -------------------------------------------------------------------------------


def _per_op_us(
    fn: Callable[[Request], object], requests: Sequence[Request], rounds: int, clock: Clock
) -> float:
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        started = clock()
        for r in requests:
            fn(r)
        best = min(best, (clock() - started) / len(requests))
    return best * 1e6


Step = tuple[str, Callable[[Request], object], Callable[[Request], object]]


def stages(
    case: Case, count: int, rounds: int, seed: int, clock: Clock
) -> list[tuple[str, float, float]]:
    """Microseconds per step (best round) for qywx and wechatpy, on the same envelopes."""
    from wechatpy.crypto import _get_signature
    from wechatpy.enterprise.crypto import PrpCrypto

    from qywx_cli.core.xmlsafe import envelope_encrypt

    requests = make_requests(case, count, seed)
    ours = WXBizMsgCrypt(TOKEN, AES_KEY, {SUITE_ID: "suite", CORP_ID: "authorized_corp"})
    key = WeChatCrypto(TOKEN, AES_KEY, case.receive_id).key
    encrypt = {r.nonce: envelope_encrypt(r.body) for r in requests}
    plain = {r.nonce: ours.decrypt(encrypt[r.nonce]).message for r in requests}

    def their_event(r: Request) -> object:
        text = plain[r.nonce].decode()
        return wechatpy_parse_message(text) if case.kind == "data" else xmltodict.parse(text)["xml"]

    steps: list[Step] = [
        (
            "parse the envelope, read Encrypt",
            lambda r: envelope_encrypt(r.body),
            lambda r: xmltodict.parse(r.body.decode())["xml"]["Encrypt"],
        ),
        (
            "check msg_signature",
            lambda r: ours.verify(r.msg_signature, r.timestamp, r.nonce, encrypt[r.nonce]),
            lambda r: (
                _get_signature(TOKEN, r.timestamp, r.nonce, encrypt[r.nonce]) == r.msg_signature
            ),
        ),
        (
            "base64, AES-256-CBC, unpad, receiveid",
            lambda r: ours.decrypt(encrypt[r.nonce]),
            lambda r: PrpCrypto(key).decrypt(encrypt[r.nonce], case.receive_id),
        ),
        ("parse the decrypted event", lambda r: parse_event(plain[r.nonce]), their_event),
    ]
    return [
        (name, _per_op_us(q, requests, rounds, clock), _per_op_us(w, requests, rounds, clock))
        for name, q, w in steps
    ]


# -- report -------------------------------------------------------------------------------


def _aes_backend() -> str:
    from wechatpy.crypto import base

    return base.WeChatCipher.__module__.rsplit(".", 1)[-1]


def machine_line() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = ", ".join(
        f"{dist} {importlib.metadata.version(dist)}"
        for dist in ("wechatpy", "xmltodict", "pycryptodome", "defusedxml", "cryptography")
        if _installed(dist)
    )
    return (
        f"{os.cpu_count()} CPU ({cpu}), Python {platform.python_version()}, {versions}; "
        f"wechatpy's AES backend: {_aes_backend()}; qywx from {QYWX_DIR}"
    )


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="envelopes per case")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per case")
    parser.add_argument("--quick", action="store_true", help="300 envelopes, 3 rounds")
    parser.add_argument("--seed", type=int, default=6, help="seed of the generated envelopes")
    parser.add_argument(
        "--stages", action="store_true", help="also time each step of both sides separately"
    )
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="cpu", help="process CPU time or wall time"
    )
    parser.add_argument("--no-hostile", action="store_true", help="skip the hostile table")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.rounds = 300, 3

    print(f"Machine: {machine_line()}")
    print(f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}")
    given = sys.argv[1:] if argv is None else argv
    print(f"Command: python benchmarks/crypto_bench.py {' '.join(given)}".rstrip())
    print(
        f"{args.count} envelopes per case, {args.rounds} interleaved rounds, {args.clock} clock\n"
    )
    print(
        "| case | plaintext bytes | qywx ops/s (median / best) "
        "| wechatpy ops/s (median / best) | qywx ÷ wechatpy |"
    )
    print("|---|---:|---:|---:|---:|")
    for case in CASES:
        r = measure(case, args.count, args.rounds, args.seed, CLOCKS[args.clock])
        print(
            f"| {case.name} ({case.kind}) | {r.size:,} "
            f"| {statistics.median(r.qywx):,.0f} / {max(r.qywx):,.0f} "
            f"| {statistics.median(r.wechatpy):,.0f} / {max(r.wechatpy):,.0f} "
            f"| {r.ratio:.2f}× |",
            flush=True,
        )
    if not args.no_hostile:
        print("\n| hostile envelope | qywx | wechatpy |")
        print("|---|---|---|")
        for name, ours, theirs in hostile_rows(args.seed):
            print(f"| {name} | {ours} | {theirs} |")
    if args.stages:
        for case in (CASES[0], CASES[2], CASES[3]):
            print(f"\nMicroseconds per step, {case.name} ({case.kind}), best of {args.rounds}:\n")
            print("| step | qywx µs | wechatpy µs |")
            print("|---|---:|---:|")
            total_q = total_w = 0.0
            for name, q, w in stages(case, args.count, args.rounds, args.seed, CLOCKS[args.clock]):
                total_q, total_w = total_q + q, total_w + w
                print(f"| {name} | {q:.1f} | {w:.1f} |")
            print(f"| **sum** | **{total_q:.1f}** | **{total_w:.1f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
