"""Converting a customer's stored ids to the upgraded (open) form, in batches.

The ID security upgrade (docs 97104) gives 代开发 apps installed after 2022-06-28
provider-scoped ciphertext ids; a provider migrating an older customer converts what
it stored and must accept both forms while it does (wecom-provider-apis.md §6).

:class:`IdConverter` reads the ids, skips blanks and repeats, sends them at WeCom's
per-call limit (:mod:`qywx_cli.core.wecom.ids`), and records every mapping it gets in
the store **before** moving to the next batch, so an interrupted run keeps what it
converted and a re-run skips it (ids already mapped are not sent again: each wrong
id WeCom sees counts towards its one-day block, doc 97062). A rate-limit answer
(:data:`~qywx_cli.core.wecom.ids.RATE_LIMIT_ERRCODES`) is waited out with exponential
backoff; any other error stops the run with what was done so far in the message.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeVar

from qywx_cli.core.errors import LoginError, StoreError, UsageError, WeComAPIError

if TYPE_CHECKING:
    from qywx_cli.core.settings import Settings

__all__ = [
    "ID_KINDS",
    "ConversionReport",
    "IdConverter",
    "IdKind",
    "Unconverted",
    "convert_ids",
    "corp_id_forms",
    "read_ids",
]

IdKind = Literal["corpid", "userid", "external_userid"]
ID_KINDS: Final[tuple[IdKind, ...]] = ("corpid", "userid", "external_userid")

MAX_IDS: Final = 1_000_000
"""Ids one run takes: a customer's whole directory, with room; more is a wrong file."""

MAX_ID_LENGTH: Final = 256

Progress = Callable[[int, int, int], None]
"""(ids done, ids in all, batches done) after each batch."""


class _CorpAuthLike(Protocol):
    @property
    def corp_id(self) -> str: ...

    @property
    def permanent_code(self) -> str | None: ...


class IdStore(Protocol):
    """What the converter needs from the store."""

    def get_corp_auth(self, corp_id: str, suite_id: str | None = None) -> _CorpAuthLike | None: ...

    def known_open_ids(
        self, kind: str, corp_id: str, plain_ids: Sequence[str]
    ) -> dict[str, str]: ...

    def save_id_mappings(
        self, kind: str, corp_id: str, pairs: Sequence[tuple[str, str]]
    ) -> int: ...


class _Converted(Protocol):
    @property
    def pairs(self) -> tuple[tuple[str, str], ...]: ...

    @property
    def invalid(self) -> tuple[str, ...]: ...


class _ProviderLike(Protocol):
    @property
    def corp_id(self) -> str: ...


_T = TypeVar("_T")


class IdClient(Protocol):
    """What the converter needs from :class:`qywx_cli.core.wecom.WeComClient`."""

    def userid_to_open_userid(
        self, corp_id: str, permanent_code: str, user_ids: Sequence[str]
    ) -> _Converted: ...

    def new_external_userids(
        self, corp_id: str, permanent_code: str, external_user_ids: Sequence[str]
    ) -> _Converted: ...

    def corpid_to_open_corpid(self, provider: Any, corp_id: str) -> str: ...


@dataclass(frozen=True)
class Unconverted:
    """An id WeCom did not convert, and why (its words where it gave any)."""

    id: str
    reason: str


@dataclass(frozen=True)
class ConversionReport:
    """What one run did; ``mapped`` lists every (plain, open) pair, new or already known."""

    kind: IdKind
    corp_id: str
    total: int
    calls: int
    mapped: tuple[tuple[str, str], ...]
    already_known: int
    unconverted: tuple[Unconverted, ...]
    rate_limit_waits: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.unconverted

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "corp_id": self.corp_id,
            "total": self.total,
            "calls": self.calls,
            "converted": len(self.mapped),
            "already_known": self.already_known,
            "unconverted": len(self.unconverted),
            "rate_limit_waits": self.rate_limit_waits,
            "mappings": [{"id": p, "open_id": o} for p, o in self.mapped],
            "failures": [{"id": u.id, "reason": u.reason} for u in self.unconverted],
        }


def read_ids(text: str, *, column: str | None = None) -> list[str]:
    """Ids from one-per-line text, or from the named column of a CSV with a header row.

    Surrounding space is dropped, blank lines and repeats are skipped (first one
    kept), and a ``#`` line is a comment. Ids are case sensitive: open corp ids differ
    from each other by case alone (doc 97104), so nothing is folded.
    """
    raw: Iterable[str]
    if column is None:
        raw = (line for line in text.splitlines() if not line.lstrip().startswith("#"))
    else:
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is None or column not in reader.fieldnames:
            have = ", ".join(reader.fieldnames or []) or "none"
            raise UsageError(f"the CSV has no column {column!r} (columns: {have})")
        raw = (row.get(column) or "" for row in reader)
    seen: dict[str, None] = {}
    for value in raw:
        value = value.strip()
        if not value:
            continue
        if len(value) > MAX_ID_LENGTH:
            raise UsageError(
                f"an id is longer than {MAX_ID_LENGTH} characters: is this the id file?"
            )
        seen.setdefault(value, None)
        if len(seen) > MAX_IDS:
            raise UsageError(f"more than {MAX_IDS:,} ids: split the file")
    return list(seen)


class IdConverter:
    """Batches, backoff and recording for one kind of id in one corp (see the module).

    ``sleep`` and the backoff are injected so tests wait no wall-clock time.
    """

    def __init__(
        self,
        client: IdClient,
        store: IdStore,
        *,
        batch_size: int = 1000,
        max_waits: int = 6,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 1 <= batch_size <= 1000:
            raise UsageError("batch size must be between 1 and 1000 (WeCom's limit, doc 97062)")
        self._client = client
        self._store = store
        self._batch_size = batch_size
        self._max_waits = max_waits
        self._backoff = backoff
        self._sleep = sleep

    def _waiting(self, call: Callable[[], _T]) -> tuple[_T, int]:
        """``call()``, waiting out rate limits with exponential backoff: (answer, waits).

        Any other error, or a rate limit still there after ``max_waits``, is raised.
        """
        from qywx_cli.core.wecom.ids import RATE_LIMIT_ERRCODES

        waits = 0
        while True:
            try:
                return call(), waits
            except WeComAPIError as exc:
                if exc.errcode not in RATE_LIMIT_ERRCODES or waits >= self._max_waits:
                    raise
            self._sleep(self._backoff * (2**waits))
            waits += 1

    def convert_corp_ids(
        self, provider: _ProviderLike, corp_ids: Sequence[str], progress: Progress | None = None
    ) -> ConversionReport:
        """corpid → open corpid, one call per corp (doc 97105, provider token).

        A corp WeCom refuses (not authorized, already an open id: 40013 …) is reported
        with WeCom's errcode and the run goes on; rate limits are waited out.
        """
        known: dict[str, str] = {}
        for corp in corp_ids:
            known.update(self._store.known_open_ids("corpid", corp, [corp]))
        mapped = [(c, known[c]) for c in corp_ids if c in known]
        unconverted: list[Unconverted] = []
        calls = waits = 0
        done = len(mapped)
        if progress is not None:
            progress(done, len(corp_ids), 0)
        for corp in (c for c in corp_ids if c not in known):
            try:
                opened, waited = self._waiting(
                    lambda c=corp: self._client.corpid_to_open_corpid(provider, c)  # type: ignore[misc]
                )
            except WeComAPIError as exc:
                if exc.errcode in _rate_limit_errcodes():
                    raise _stopped(exc, done, len(corp_ids), len(mapped)) from None
                calls += 1
                unconverted.append(Unconverted(corp, f"errcode {exc.errcode}: {exc.errmsg}"))
            else:
                calls += 1 + waited
                waits += waited
                self._store.save_id_mappings("corpid", corp, [(corp, opened)])
                mapped.append((corp, opened))
            done += 1
            if progress is not None:
                progress(done, len(corp_ids), calls)
        return ConversionReport(
            kind="corpid",
            corp_id="",
            total=len(corp_ids),
            calls=calls,
            mapped=tuple(mapped),
            already_known=len(known),
            unconverted=tuple(unconverted),
            rate_limit_waits=waits,
        )

    def convert(
        self, kind: IdKind, corp_id: str, ids: Sequence[str], progress: Progress | None = None
    ) -> ConversionReport:
        if kind == "corpid":
            raise UsageError("corpid conversion takes the provider token: use convert_corp_ids")
        if kind not in ID_KINDS:
            raise UsageError(f"id kind must be one of {', '.join(ID_KINDS)}")
        auth = self._store.get_corp_auth(corp_id)
        if auth is None or not auth.permanent_code:
            raise LoginError(
                f"corp {corp_id} has no permanent code in the store; was its create_auth processed?"
            )
        # Mappings are recorded under the corp id the store knows the corp by.
        corp, secret = auth.corp_id, auth.permanent_code
        known = self._store.known_open_ids(kind, corp, ids)
        todo = [i for i in ids if i not in known]
        mapped: list[tuple[str, str]] = [(i, known[i]) for i in ids if i in known]
        unconverted: list[Unconverted] = []
        calls = waits = 0
        done = len(ids) - len(todo)
        batches = 0
        if progress is not None:
            progress(done, len(ids), batches)
        call = (
            self._client.userid_to_open_userid
            if kind == "userid"
            else self._client.new_external_userids
        )
        reason = (
            "not a member in the app's visible range (invalid_userid_list)"
            if kind == "userid"
            else "WeCom returned no new id: not a customer of this corp's members"
        )
        for start in range(0, len(todo), self._batch_size):
            batch = todo[start : start + self._batch_size]
            try:
                result, waited = self._waiting(lambda b=batch: call(corp, secret, b))  # type: ignore[misc]
            except WeComAPIError as exc:
                raise _stopped(exc, done, len(ids), len(mapped)) from None
            calls += 1 + waited
            waits += waited
            self._store.save_id_mappings(kind, corp, result.pairs)
            mapped.extend(result.pairs)
            answered = {p for p, _ in result.pairs}
            unconverted.extend(Unconverted(i, reason) for i in result.invalid)
            invalid = set(result.invalid)
            unconverted.extend(
                Unconverted(i, "absent from WeCom's answer")
                for i in batch
                if i not in answered and i not in invalid
            )
            done += len(batch)
            batches += 1
            if progress is not None:
                progress(done, len(ids), batches)
        return ConversionReport(
            kind=kind,
            corp_id=corp,
            total=len(ids),
            calls=calls,
            mapped=tuple(mapped),
            already_known=len(known),
            unconverted=tuple(unconverted),
            rate_limit_waits=waits,
        )


class _LookupStore(Protocol):
    def lookup_id(self, id: str) -> Sequence[Any]: ...


def corp_id_forms(store: _LookupStore, corp_id: str) -> tuple[str | None, str | None]:
    """(plain, open) forms of a corp id as far as recorded corpid mappings tell."""
    for mapping in store.lookup_id(corp_id):
        if mapping.kind == "corpid":
            return mapping.plain_id, mapping.open_id
    return None, None


def _rate_limit_errcodes() -> frozenset[int]:
    from qywx_cli.core.wecom.ids import RATE_LIMIT_ERRCODES

    return RATE_LIMIT_ERRCODES


def _stopped(exc: WeComAPIError, done: int, total: int, mapped: int) -> WeComAPIError:
    """WeCom's error, saying how far the run got: what is recorded stays recorded."""
    return WeComAPIError(
        exc.errcode,
        f"{exc.errmsg} (stopped after {done} of {total} ids; {mapped} mappings are "
        "recorded, re-run to continue)",
        api=exc.api,
    )


def convert_ids(
    settings: Settings,
    kind: str,
    corp_id: str | None,
    ids: Sequence[str],
    *,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ConversionReport:
    """``qywx ids convert``: the existing store, the WeCom client, one converter run."""
    from qywx_cli.core.store import local_file, open_store
    from qywx_cli.core.wecom import WeComClient

    if kind not in ID_KINDS:
        raise UsageError(f"id kind must be one of {', '.join(ID_KINDS)}")
    path = local_file(settings.db_path)
    if path is not None and not path.is_file():
        raise StoreError(f"no database at {path}; run qywx serve first or pass --db")
    with (
        open_store(settings.db_path, keys=settings.secret_keys) as store,
        WeComClient(store, base_url=settings.api_base) as client,
    ):
        converter = IdConverter(client, store, sleep=sleep)
        if kind == "corpid":
            from qywx_cli.core.provider import provider_credentials

            return converter.convert_corp_ids(provider_credentials(settings), ids, progress)
        assert corp_id is not None
        return converter.convert(kind, corp_id, ids, progress)
