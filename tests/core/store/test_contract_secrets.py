"""Secrets at rest, on every backend: permanent codes and cached tokens sealed with the
secret key, bound to their row, migrated and rotated in one transaction.

Each test reads the database's own rows with raw SQL (``backend.query``) to see what a
copied backup would hold, not just what the store hands back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from qywx_cli.core.errors import StoreError
from qywx_cli.core.sealing import PREFIX, Keyring, SecretKey, SecretKeyError, generate_key
from qywx_cli.core.store import Store
from qywx_cli.core.store.maintenance import copy_store
from tests.core.store.conftest import Backend, _postgres_backend, _sqlite_backend
from tests.core.store.conftest import make_record as record
from tests.helpers import Clock

SUITE = "dk0001"
CORP_A, CORP_B = "wwcorpaaaa000001", "wwcorpbbbb000002"
CODE_A, CODE_B = "PermanentCodeOfCorpA-0123456789", "PermanentCodeOfCorpB-9876543210"
TOKENS = {
    ("suite", SUITE): "SuiteAccessToken-abcdef012345",
    ("corp", CORP_A): "CorpAccessToken-A-abcdef012345",
    ("corp", CORP_B): "CorpAccessToken-B-abcdef012345",
    ("provider", "wwprovider000001"): "ProviderAccessToken-abcdef0123",
    ("jsapi_ticket", CORP_A): "JsapiTicket-A-abcdef0123456789",
    ("agent_ticket", f"{CORP_A}/1000002"): "AgentTicket-A-abcdef0123456789",
}
PLAINTEXTS = (CODE_A, CODE_B, *TOKENS.values())
FAR = 4_000_000_000.0


def key() -> SecretKey:
    return SecretKey.parse(generate_key())


def opener(backend: Backend, clock: Clock) -> Callable[..., Store]:
    def open_with(*keys: SecretKey) -> Store:
        ring = Keyring(keys[0]).with_old(*keys[1:]) if keys else None
        return Store(backend.target, now=clock, keys=ring)

    return open_with


def fill(store: Store) -> None:
    """Two corps (one through save_permanent_code, as an install does) and every token kind."""
    rec = record(store, info_type="create_auth")
    store.save_permanent_code(SUITE, CORP_A, CODE_A, callback_id=rec.id, corp_name="A")
    store.upsert_corp_auth(SUITE, CORP_B, permanent_code=CODE_B, agent_id=7)
    for (kind, k), token in TOKENS.items():
        store.put_token(kind, k, token, FAR)


def raw_secrets(backend: Backend) -> list[str]:
    rows = backend.query(
        "SELECT permanent_code FROM corp_auths WHERE permanent_code IS NOT NULL "
        "UNION ALL SELECT token FROM tokens"
    )
    return [str(r[0]) for r in rows]


def assert_reads_back(store: Store) -> None:
    auth_a, auth_b = store.get_corp_auth(CORP_A), store.get_corp_auth(CORP_B)
    assert auth_a is not None and auth_a.permanent_code == CODE_A
    assert auth_b is not None and auth_b.permanent_code == CODE_B
    assert [a.permanent_code for a in store.list_corp_auths(SUITE)] == [CODE_A, CODE_B]
    for (kind, k), token in TOKENS.items():
        cached = store.get_token(kind, k)
        assert cached is not None and cached.token == token


@pytest.fixture
def open_with(backend: Backend, clock: Clock) -> Callable[..., Store]:
    return opener(backend, clock)


def test_with_a_key_no_row_holds_a_plaintext_secret(
    backend: Backend, open_with: Callable[..., Store]
) -> None:
    k = key()
    with open_with(k) as store:
        fill(store)
        assert_reads_back(store)
        # what writes return is plaintext too
        published = store.set_publish_status(SUITE, CORP_A, 2)
        assert published.permanent_code == CODE_A
        assert store.upsert_corp_auth(SUITE, CORP_B, corp_name="B").permanent_code == CODE_B
        survey = store.secrets_at_rest()
    stored = raw_secrets(backend)
    assert len(stored) == 2 + len(TOKENS)
    assert all(v.startswith(f"{PREFIX}{k.kid}:") for v in stored), stored
    assert not [p for p in PLAINTEXTS if any(p in v for v in stored)]
    assert (survey.plaintext, survey.by_key) == (0, {k.kid: len(stored)})
    # two seals of one value differ (a fresh nonce each), so equal secrets do not show
    with open_with(k) as store:
        store.put_token("corp", CORP_A, TOKENS[("corp", CORP_A)], FAR)
    assert len(set(raw_secrets(backend))) == len(stored)


def test_without_a_key_nothing_changes(backend: Backend, open_with: Callable[..., Store]) -> None:
    with open_with() as store:
        fill(store)
        assert_reads_back(store)
        assert store.secrets_at_rest().plaintext == 2 + len(TOKENS)
    assert sorted(raw_secrets(backend)) == sorted(PLAINTEXTS)


def test_a_missing_key_is_one_line_naming_what_to_set(
    backend: Backend, open_with: Callable[..., Store]
) -> None:
    k = key()
    with open_with(k) as store:
        fill(store)
    text = generate_key()
    with open_with() as store:
        with pytest.raises(SecretKeyError) as caught:
            store.get_corp_auth(CORP_A)
        message = caught.value.message
        assert "QYWX_SECRET_KEY" in message and k.kid in message and CORP_A in message
        with pytest.raises(SecretKeyError, match="QYWX_SECRET_KEY"):
            store.get_token("suite", SUITE)
        # what needs no secret still works, and the survey needs no key
        assert store.list_callbacks()
        assert store.secrets_at_rest().by_key == {k.kid: 2 + len(TOKENS)}
    other = SecretKey.parse(text)
    with open_with(other) as store, pytest.raises(SecretKeyError) as caught:
        store.list_corp_auths()
    message = caught.value.message
    assert k.kid in message and other.kid in message and "QYWX_OLD_SECRET_KEY" in message
    assert text not in message and "\n" not in message


def test_a_sealed_value_moved_to_another_row_is_refused(
    backend: Backend, open_with: Callable[..., Store]
) -> None:
    k = key()
    with open_with(k) as store:
        fill(store)
    # corp A's sealed permanent code pasted onto corp B's row, and A's token onto B's
    backend.query(
        "UPDATE corp_auths SET permanent_code = (SELECT permanent_code FROM corp_auths "
        f"WHERE corp_id = '{CORP_A}') WHERE corp_id = '{CORP_B}' RETURNING corp_id"
    )
    backend.query(
        "UPDATE tokens SET token = (SELECT token FROM tokens WHERE kind = 'corp' AND "
        f"key = '{CORP_A}') WHERE kind = 'corp' AND key = '{CORP_B}' RETURNING key"
    )
    with open_with(k) as store:
        with pytest.raises(StoreError, match=f"corp {CORP_B}.*does not authenticate"):
            store.get_corp_auth(CORP_B)
        with pytest.raises(StoreError, match="does not authenticate"):
            store.get_token("corp", CORP_B)
        a = store.get_corp_auth(CORP_A)
        assert a is not None and a.permanent_code == CODE_A  # the source row is intact
        # a rotation refuses it too, and changes nothing
        before = raw_secrets(backend)
        with pytest.raises(StoreError, match="does not authenticate"):
            store.reseal_secrets()
    assert raw_secrets(backend) == before


def test_rows_written_without_a_key_migrate(
    backend: Backend, open_with: Callable[..., Store]
) -> None:
    with open_with() as store:
        fill(store)
    k = key()
    with open_with(k) as store:
        assert_reads_back(store)  # plaintext rows read as they are meanwhile
        assert store.secrets_at_rest().plaintext == 2 + len(TOKENS)
        done = store.reseal_secrets()
        assert (done.sealed, done.rekeyed, done.unchanged, done.key_id) == (
            2 + len(TOKENS),
            0,
            0,
            k.kid,
        )
        assert_reads_back(store)
        again = store.reseal_secrets()
        assert (again.sealed, again.rekeyed, again.unchanged) == (0, 0, 2 + len(TOKENS))
    stored = raw_secrets(backend)
    assert all(v.startswith(f"{PREFIX}{k.kid}:") for v in stored)
    assert not [p for p in PLAINTEXTS if any(p in v for v in stored)]


def test_rotation_moves_every_row_to_the_new_key(
    backend: Backend, open_with: Callable[..., Store]
) -> None:
    old, new = key(), key()
    with open_with(old) as store:
        fill(store)
    with open_with(new, old) as store:
        assert_reads_back(store)  # during a rotation both keys read
        done = store.reseal_secrets()
        assert (done.sealed, done.rekeyed, done.key_id) == (0, 2 + len(TOKENS), new.kid)
    assert all(v.startswith(f"{PREFIX}{new.kid}:") for v in raw_secrets(backend))
    with open_with(new) as store:
        assert_reads_back(store)
    with open_with(old) as store, pytest.raises(SecretKeyError, match=new.kid):
        store.get_corp_auth(CORP_A)


def test_resealing_with_only_an_old_key_writes_plaintext_back(
    backend: Backend, clock: Clock
) -> None:
    """The way out of encryption: the key given only as an old one reads every row, and
    a reseal with no current key stores them as they were before a key was set."""
    k = key()
    with Store(backend.target, now=clock, keys=Keyring(k)) as store:
        fill(store)
    with Store(backend.target, now=clock, keys=Keyring().with_old(k)) as store:
        assert_reads_back(store)
        done = store.reseal_secrets()
        assert (done.rekeyed, done.key_id) == (2 + len(TOKENS), None)
    assert sorted(raw_secrets(backend)) == sorted(PLAINTEXTS)


def test_a_rotation_missing_a_key_writes_nothing(
    backend: Backend, open_with: Callable[..., Store]
) -> None:
    first, second, third = key(), key(), key()
    with open_with(first) as store:
        fill(store)
    with open_with(second, first) as store:  # one token under the second key
        store.put_token("corp", CORP_A, "NewerCorpToken-A-0123456789", FAR)
    before = raw_secrets(backend)
    # the first key is not given
    with open_with(third, second) as store, pytest.raises(SecretKeyError, match=first.kid):
        store.reseal_secrets()
    assert raw_secrets(backend) == before


def test_cancel_still_forgets_the_sealed_code(
    backend: Backend, open_with: Callable[..., Store]
) -> None:
    with open_with(key()) as store:
        fill(store)
        assert store.cancel_corp_auth(SUITE, CORP_A)
        a = store.get_corp_auth(CORP_A)
        assert a is not None and a.permanent_code is None
        assert store.get_token("corp", CORP_A) is None
        assert store.get_token("jsapi_ticket", CORP_A) is None
    assert len(raw_secrets(backend)) == 1 + len(TOKENS) - 3


@pytest.mark.parametrize("direction", ["sqlite-to-postgres", "postgres-to-sqlite"])
def test_db_copy_keeps_the_ciphertext(
    direction: str, tmp_path: Path, pg_url: str, clock: Clock
) -> None:
    sqlite, postgres = _sqlite_backend(tmp_path), _postgres_backend(pg_url)
    source, destination = (
        (sqlite, postgres) if direction == "sqlite-to-postgres" else (postgres, sqlite)
    )
    k = key()
    with opener(source, clock)(k) as store:
        fill(store)
    copy_store(source.target, destination.target)
    assert sorted(raw_secrets(destination)) == sorted(raw_secrets(source))
    assert not [p for p in PLAINTEXTS if any(p in v for v in raw_secrets(destination))]
    with opener(destination, clock)(k) as store:
        assert_reads_back(store)


def test_a_migrated_sqlite_file_keeps_no_old_plaintext(tmp_path: Path, clock: Clock) -> None:
    """Not only the rows: the file and its WAL must not keep the values a rotation
    replaced (SQLite leaves deleted bytes in place unless told otherwise)."""
    sqlite = _sqlite_backend(tmp_path)
    with opener(sqlite, clock)() as store:
        fill(store)

    def on_disk() -> bytes:
        return b"".join(p.read_bytes() for p in tmp_path.glob("qywx.db*"))

    assert all(p.encode() in on_disk() for p in PLAINTEXTS)
    with opener(sqlite, clock)(key()) as store, Store(sqlite.target) as reader:
        assert reader.list_callbacks()  # another connection open, as a server's would be
        store.reseal_secrets()
        assert not [p for p in PLAINTEXTS if p.encode() in on_disk()]
    assert not [p for p in PLAINTEXTS if p.encode() in on_disk()]
