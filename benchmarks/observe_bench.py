"""What watching a request costs: the notify endpoint with and without metrics and alerts.

Usage::

    pip install -e '.[metrics]'
    python benchmarks/observe_bench.py            # 20,000 requests per variant, 5 rounds
    python benchmarks/observe_bench.py --quick    # 2,000 requests, 3 rounds

Each request goes through ``NotifyApp.respond`` in process (no socket), so the
observers' share is not hidden behind network or fsync time. Two request kinds:

* **accepted**: a signed suite_ticket, decrypted and committed to a SQLite file in a
  temporary folder (the real hot path, one commit per request);
* **refused**: the same request with a wrong signature, answered 403 without touching
  the store: the cheapest request there is, so the worst case for an observer's share.

Variants, interleaved round by round: ``bare`` (no observer), ``events`` (what
``qywx serve`` always attaches: the JSON/text event log observer), ``metrics``
(``--metrics-port``: counters and histograms), ``metrics+alerts`` (plus the alert
rules, with a sender whose queue nobody drains, as with a dead webhook). The figure is
process CPU µs per request, median of the rounds; ``bare`` is the reference.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qywx_cli.core.alerts import AlertRules, AlertSender, Webhook  # noqa: E402
from qywx_cli.core.logfmt import EventLog  # noqa: E402
from qywx_cli.core.metrics import Metrics  # noqa: E402
from qywx_cli.core.observe import Observers  # noqa: E402
from qywx_cli.core.service import CallbackService  # noqa: E402
from qywx_cli.core.settings import load_settings  # noqa: E402
from qywx_cli.core.wsgi import NotifyApp  # noqa: E402

VARIANTS = ("bare", "events", "metrics", "metrics+alerts")


def _requests(service: CallbackService, count: int, forged: bool) -> list[dict[str, object]]:
    import io

    inst = service.instances["QywxProxyTemp"]
    crypt = inst.crypto()
    from qywx_cli.core import events as ev

    environs = []
    now = int(time.time())
    for n in range(count):
        xml = ev.build_event_xml("suite_ticket", suite_id=inst.suite_id)
        sealed = crypt.encrypt_msg(xml, inst.suite_id, str(now), f"b{n}")
        body = sealed.request_xml(inst.suite_id).encode()
        sig = "0" * 40 if forged else sealed.msg_signature
        environs.append(
            {
                "REQUEST_METHOD": "POST",
                "PATH_INFO": "/notify/QywxProxyTemp",
                "QUERY_STRING": f"msg_signature={sig}&timestamp={sealed.timestamp}"
                f"&nonce={sealed.nonce}",
                "CONTENT_LENGTH": str(len(body)),
                "wsgi.input": io.BytesIO(body),
                "REMOTE_ADDR": "127.0.0.1",
            }
        )
    return environs


def _observers(variant: str, service: CallbackService) -> Observers:
    found = Observers()
    if variant != "bare":
        found.add(EventLog())
    if variant.startswith("metrics"):
        found.add(Metrics(service))
    if variant == "metrics+alerts":  # never started: raise_alert only queues, as with a dead hook
        found.add(AlertRules(AlertSender(Webhook("http://127.0.0.1:9/hook"), queue_size=10)))
    return found


def _round(work: Path, variant: str, count: int, forged: bool) -> float:
    folder = Path(tempfile.mkdtemp(dir=work))
    shutil.copytree(REPO / "sample_auths", folder / "auths")
    settings = load_settings(auths=folder / "auths", db=folder / "qywx.db", env={})
    service = CallbackService(settings, background=False)
    service.observer = _observers(variant, service)
    app = NotifyApp(service)
    environs = _requests(service, count, forged)
    start = time.process_time()
    for environ in environs:
        app.respond(environ)
    spent = time.process_time() - start
    service.close()
    shutil.rmtree(folder)
    return spent / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count, rounds = (2_000, 3) if args.quick else (args.count, args.rounds)
    print(
        f"# observe_bench: {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    print(f"# {' '.join(sys.argv)}; {count} requests x {rounds} rounds per variant\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for kind, forged, n in (("refused", True, count), ("accepted", False, count // 4)):
            samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for _ in range(rounds):
                for variant in VARIANTS:
                    samples[variant].append(_round(work, variant, n, forged))
            base = statistics.median(samples["bare"])
            print(f"| {kind} request | CPU µs/request | ÷ bare |")
            print("|---|---:|---:|")
            for variant in VARIANTS:
                med = statistics.median(samples[variant])
                print(f"| {variant} | {med:.1f} | {med / base:.2f}× |")
            print()


if __name__ == "__main__":
    main()
