"""What secrets at rest cost: sealing and opening one value, a cached-token read and
write with and without a key, and ``rotate-key`` over many corps (SQLite).

Usage::

    python benchmarks/sealing_bench.py                 # 5 rounds of 5,000 operations
    python benchmarks/sealing_bench.py --quick         # 2 rounds of 1,000

Process CPU µs per operation (user and system: a put's fsync counts), the median of the
rounds; the plain and sealed sides are
interleaved round by round so that drift on a shared machine hits both. The rotation
row is wall time for one ``reseal_secrets`` (one transaction, secure_delete, WAL
truncated) of ``--corps`` permanent codes and as many tokens written without a key.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qywx_cli.core.sealing import Keyring, SecretKey, Slot, generate_key
from qywx_cli.core.store import Store

TOKEN = "T" * 64
FAR = 4_000_000_000.0


def cpu_us(fn: Callable[[], object], n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--corps", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.count, args.rounds, args.corps = 1000, 2, 2000

    keys = Keyring(SecretKey.parse(generate_key()))
    slot = Slot.token("corp", "wwbench")
    sealed = keys.seal(TOKEN, slot)
    folder = Path(tempfile.mkdtemp(prefix="qywx-sealing-"))
    stores = {
        "plain": Store(folder / "plain.db"),
        "sealed": Store(folder / "sealed.db", keys=keys),
    }
    for store in stores.values():
        store.put_token("corp", "wwbench", TOKEN, FAR)

    results: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        results.setdefault("seal one value", []).append(
            cpu_us(lambda: keys.seal(TOKEN, slot), args.count)
        )
        results.setdefault("open one value", []).append(
            cpu_us(lambda: keys.open(sealed, slot), args.count)
        )
        for side, store in stores.items():
            results.setdefault(f"get_token, {side}", []).append(
                cpu_us(functools.partial(store.get_token, "corp", "wwbench"), args.count)
            )
            # a new token each time: SQLite skips rewriting a row whose bytes are
            # unchanged, which would let the plain side commit without a page write
            fresh = itertools.count()

            def put(store: Store = store, fresh: itertools.count[int] = fresh) -> None:
                store.put_token("corp", "wwbench", f"{TOKEN}{next(fresh)}", FAR)

            results.setdefault(f"put_token, {side}", []).append(
                cpu_us(put, max(args.count // 10, 1))
            )
    for store in stores.values():
        store.close()

    with Store(folder / "rotate.db") as store:
        for i in range(args.corps):
            store.upsert_corp_auth("dk0001", f"ww{i:016d}", permanent_code=f"P{i:042d}")
            store.put_token("corp", f"ww{i:016d}", TOKEN, FAR)
    with Store(folder / "rotate.db", keys=keys) as store:
        start = time.perf_counter()
        done = store.reseal_secrets()
        rotate_s = time.perf_counter() - start

    print(f"{'operation':<24} {'CPU µs (median)':>16}")
    for name, values in results.items():
        print(f"{name:<24} {statistics.median(values):>16.1f}")
    print(f"rotate-key: {done.sealed} secrets sealed in {rotate_s:.2f} s (wall)")


if __name__ == "__main__":
    main()
