"""Slow and held API calls: how a test catches a receiver in the middle of an exchange.

A kill -9 during get_permanent_code is only worth testing if it lands while the call is
in flight, and a guessed sleep makes that a race. So the fake offers two controls, per
API path and per *stage* of the call:

* **delay** — every call of the API waits ``seconds`` (``qywx fake-wecom --slow``,
  ``POST /fake/slow``): WeCom on a bad day, for benchmarks and demos;
* **hold** — the next ``count`` calls stop and wait until the test releases them
  (``POST /fake/holds``, ``POST /fake/release``). ``GET /fake/state`` lists the calls
  held right now under ``held``, so a test learns from the fake itself that the call
  arrived, then kills the receiver at exactly that point.

Stage ``before``: the call waits before the fake acts on it (an AuthCode not yet spent:
"killed before WeCom answered"). Stage ``after``: the fake has done the work (the code
spent, a permanent code issued) and only the answer waits ("WeCom answered, the
receiver died before it stored the answer"). A release either lets the call go on, or
``drop``\\s it: dropped before, nothing is done; dropped after, the work stays done and
the answer is lost. A dropped call is answered HTTP 503, a one-line JSON body, which is
what a client whose connection survived would see of a lost answer.

A forgotten hold must not pin a server thread for ever: after :data:`HOLD_MAX_SECONDS`
the call goes on as if released.

The gates have their own lock and are never waited on under the fake's state lock, so
a held call blocks nothing but itself (other calls, the controls, ``/fake/state``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qywx_cli.core.errors import UsageError

__all__ = ["HOLD_MAX_SECONDS", "MAX_DELAY_SECONDS", "STAGES", "Gates"]

STAGES = ("before", "after")
"""Where a call waits: before the fake acts on it, or after, with only the answer left."""

HOLD_MAX_SECONDS = 300.0
"""A held call goes on by itself after this long (a test that never released it)."""

MAX_DELAY_SECONDS = 120.0
"""The longest delay a call may be given; WeCom's own callers time out well before."""


@dataclass
class _Waiter:
    path: str
    stage: str
    since: float
    outcome: str | None = None  # "answer" | "drop" once released


class Gates:
    """Delays and holds of the fake's API calls (see the module docstring)."""

    def __init__(
        self,
        *,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        hold_max: float = HOLD_MAX_SECONDS,
    ) -> None:
        self._cond = threading.Condition()
        self._sleep = sleep if sleep is not None else self._wait
        self._clock = clock
        self._closed = False
        self._hold_max = hold_max
        self._delays: dict[tuple[str, str], float] = {}
        self._holds: dict[tuple[str, str], int] = {}
        self._waiting: list[_Waiter] = []
        #: calls ever stopped by a hold, per API (tests wait on this too)
        self.caught: Counter[str] = Counter()

    # -- controls --------------------------------------------------------------------------
    def set_delay(self, path: str, seconds: float, stage: str = "before") -> None:
        """Every call of ``path`` waits ``seconds`` at ``stage``; 0 removes the delay."""
        _check_stage(stage)
        if not math.isfinite(seconds) or not 0 <= seconds <= MAX_DELAY_SECONDS:
            raise UsageError(f"seconds must be between 0 and {MAX_DELAY_SECONDS:g}")
        with self._cond:
            if seconds:
                self._delays[(path, stage)] = seconds
            else:
                self._delays.pop((path, stage), None)

    def hold(self, path: str, stage: str = "before", count: int = 1) -> None:
        """The next ``count`` calls of ``path`` stop at ``stage`` until released."""
        _check_stage(stage)
        if count < 1:
            raise UsageError("count must be at least 1")
        with self._cond:
            self._holds[(path, stage)] = self._holds.get((path, stage), 0) + count

    def release(self, path: str | None = None, *, drop: bool = False) -> int:
        """Let the calls held at ``path`` (every path if None) go on, or drop them;
        unused holds of that path are disarmed too. Returns how many calls were released."""
        with self._cond:
            released = 0
            for waiter in self._waiting:
                if waiter.outcome is None and path in (None, waiter.path):
                    waiter.outcome = "drop" if drop else "answer"
                    released += 1
            for key in [k for k in self._holds if path in (None, k[0])]:
                del self._holds[key]
            self._cond.notify_all()
            return released

    def clear(self) -> int:
        """Remove every delay and hold; held calls go on. Returns how many were held."""
        with self._cond:
            self._delays.clear()
        return self.release()

    def close(self) -> None:
        """The server is stopping: every held call is dropped and every delay cut short,
        so no request keeps a thread (and the shutdown) waiting."""
        with self._cond:
            self._closed = True
            self._delays.clear()
            self._holds.clear()
            for waiter in self._waiting:
                waiter.outcome = waiter.outcome or "drop"
            self._cond.notify_all()

    def _wait(self, seconds: float) -> None:
        """A delay that :meth:`close` cuts short."""
        deadline = self._clock() + seconds
        with self._cond:
            while not self._closed and (left := deadline - self._clock()) > 0:
                self._cond.wait(left)

    # -- the calls -------------------------------------------------------------------------
    def passage(self, path: str, stage: str) -> bool:
        """Called by each API call at each stage: waits as told; False if dropped."""
        with self._cond:
            delay = self._delays.get((path, stage), 0.0)
            waiter: _Waiter | None = None
            if self._holds.get((path, stage), 0) > 0:
                self._holds[(path, stage)] -= 1
                if not self._holds[(path, stage)]:
                    del self._holds[(path, stage)]
                waiter = _Waiter(path, stage, self._clock())
                self._waiting.append(waiter)
                self.caught[path] += 1
                self._cond.notify_all()
        if delay:
            self._sleep(delay)
        if waiter is None:
            return True
        with self._cond:
            deadline = waiter.since + self._hold_max
            while waiter.outcome is None:
                left = deadline - self._clock()
                if left <= 0:
                    waiter.outcome = "answer"
                    break
                self._cond.wait(left)
            self._waiting.remove(waiter)
            self._cond.notify_all()
            return waiter.outcome == "answer"

    def wait_held(self, path: str, count: int = 1, timeout: float = 30.0) -> bool:
        """Until ``count`` calls of ``path`` are held right now (or ``timeout``)."""
        deadline = self._clock() + timeout
        with self._cond:
            while self._held(path) < count:
                left = deadline - self._clock()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def _held(self, path: str) -> int:
        return sum(1 for w in self._waiting if w.path == path and w.outcome is None)

    def snapshot(self) -> dict[str, Any]:
        """What ``GET /fake/state`` shows: calls held now, armed holds, delays."""
        with self._cond:
            held: Counter[str] = Counter(w.path for w in self._waiting if w.outcome is None)
            return {
                "held": dict(held),
                "holds": {f"{p}@{s}": n for (p, s), n in sorted(self._holds.items())},
                "delays": {f"{p}@{s}": d for (p, s), d in sorted(self._delays.items())},
                "caught": dict(self.caught),
            }


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise UsageError(f"stage must be one of {', '.join(STAGES)}")
