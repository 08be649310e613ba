"""Keep a worker's claims alive while it works: renew every few seconds, on any backend.

Claims carry a short lease (:data:`.records.DEFAULT_LEASE_SECONDS`) so that the records
of a killed host come back to the other hosts within seconds. A live worker therefore
renews what it holds; one background thread per process does it for every claim in
one :meth:`Store.renew_claims` call (one statement on PostgreSQL, one transaction on
SQLite) every :data:`.records.LEASE_RENEW_SECONDS`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from qywx_cli.core.errors import QywxError
from qywx_cli.core.store.base import Store
from qywx_cli.core.store.records import LEASE_RENEW_SECONDS

__all__ = ["LeaseKeeper"]

log = logging.getLogger("qywx.store")


class LeaseKeeper:
    """The claims this process holds, renewed in the background while held.

    The thread starts with the first :meth:`hold` and stops at :meth:`close`; tests may
    call :meth:`renew_now` instead of waiting for it.
    """

    def __init__(self, store: Store, *, every: float = LEASE_RENEW_SECONDS) -> None:
        self._store = store
        self._every = every
        self._held: dict[int, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def hold(self, record_id: int, worker: str) -> Iterator[None]:
        """Renew ``worker``'s claim on ``record_id`` until the block ends."""
        with self._lock:
            self._held[record_id] = worker
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="qywx-lease-keeper", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                if self._held.get(record_id) == worker:
                    del self._held[record_id]

    @property
    def held(self) -> dict[int, str]:
        with self._lock:
            return dict(self._held)

    def renew_now(self) -> int:
        held = self.held
        return self._store.renew_claims(held.items()) if held else 0

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.renew_now()
            except QywxError as exc:  # a database outage: the next round tries again
                log.warning("renewing claims failed: %s", exc.message)

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join()
