"""The store contract for id mappings, licences and unlicensed members; every backend."""

from __future__ import annotations

import pytest

from qywx_cli.core.errors import UsageError
from qywx_cli.core.store import Licence, Store
from tests.core.store.conftest import T0, Backend
from tests.core.store.conftest import make_record as record
from tests.helpers import Clock

PLAIN = "wwa1b2c3d4e5f60a01"
OPEN = "wpAbCdEf0123456789xyzOpenCorp"


def test_id_mappings_are_found_by_either_form(store: Store, clock: Clock) -> None:
    assert store.save_id_mappings("userid", PLAIN, [("zhangsan", "woZhang"), ("lisi", "woLi")]) == 2
    (by_plain,) = store.lookup_id("zhangsan")
    (by_open,) = store.lookup_id("woZhang")
    assert by_plain == by_open
    assert (by_plain.kind, by_plain.corp_id, by_plain.plain_id, by_plain.open_id) == (
        "userid",
        PLAIN,
        "zhangsan",
        "woZhang",
    )
    assert by_plain.created_at == by_plain.updated_at == T0
    assert store.lookup_id("wozhang") == []  # exact: open ids differ by case alone


def test_known_open_ids_and_a_changed_answer(store: Store, clock: Clock) -> None:
    store.save_id_mappings("userid", PLAIN, [("a", "woA")])
    clock.advance(10)
    store.save_id_mappings("userid", PLAIN, [("a", "woA2"), ("b", "woB")])
    assert store.known_open_ids("userid", PLAIN, ["a", "b", "c"]) == {"a": "woA2", "b": "woB"}
    assert store.known_open_ids("userid", "wwother", ["a"]) == {}
    assert store.known_open_ids("external_userid", PLAIN, ["a"]) == {}
    (a,) = store.lookup_id("a")
    assert (a.open_id, a.created_at, a.updated_at) == ("woA2", T0, T0 + 10)
    assert store.lookup_id("woA") == []


def test_known_open_ids_in_large_sets(store: Store) -> None:
    pairs = [(f"u{n}", f"wo{n}") for n in range(2500)]
    store.save_id_mappings("userid", PLAIN, pairs)
    found = store.known_open_ids("userid", PLAIN, [p for p, _ in pairs])
    assert len(found) == 2500 and found["u1999"] == "wo1999"


@pytest.mark.parametrize(
    ("kind", "corp", "pairs", "fragment"),
    [
        ("email", PLAIN, [("a", "b")], "id kind"),
        ("userid", "", [("a", "b")], "corp_id"),
        ("userid", PLAIN, [("a", "")], "both"),
        ("corpid", PLAIN, [("wwsomeoneelse", OPEN)], "plain corp id"),
    ],
)
def test_bad_mappings_are_usage_errors(
    store: Store, kind: str, corp: str, pairs: list[tuple[str, str]], fragment: str
) -> None:
    with pytest.raises(UsageError, match=fragment):
        store.save_id_mappings(kind, corp, pairs)


def test_get_corp_auth_accepts_either_form_once_mapped(store: Store) -> None:
    store.upsert_corp_auth("dk1", PLAIN, permanent_code="secret-code")
    assert store.get_corp_auth(OPEN) is None
    store.save_id_mappings("corpid", PLAIN, [(PLAIN, OPEN)])
    found = store.get_corp_auth(OPEN, "dk1")
    assert found is not None and found.corp_id == PLAIN
    assert store.get_corp_auth(OPEN, "dk-other") is None
    # A corp stored under its open id is found by the plain one too.
    store.upsert_corp_auth("dk2", OPEN)
    by_plain = store.get_corp_auth(PLAIN, "dk2")
    assert by_plain is not None and by_plain.corp_id == OPEN
    # The form given wins when both are stored.
    exact = store.get_corp_auth(OPEN)
    assert exact is not None and exact.corp_id == OPEN


def test_list_callbacks_by_kind(store: Store) -> None:
    record(store, kind="command")
    data = record(store, kind="data", info_type="enter_agent")
    assert [r.id for r in store.list_callbacks(kind="data")] == [data.id]
    assert len(store.list_callbacks(kind="command")) == 1
    assert store.list_callbacks(kind="verify") == []


def test_unlicensed_members_count_and_order(store: Store) -> None:
    store.record_unlicensed(PLAIN, "zhangsan", agent_id=1000002, seen_at=T0)
    store.record_unlicensed(PLAIN, "lisi", agent_id=None, seen_at=T0 + 5)
    store.record_unlicensed(PLAIN, "zhangsan", agent_id=None, seen_at=T0 + 9)
    members = store.unlicensed_members()
    assert [(m.user_id, m.count, m.agent_id) for m in members] == [
        ("zhangsan", 2, 1000002),
        ("lisi", 1, None),
    ]
    assert (members[0].first_seen, members[0].last_seen) == (T0, T0 + 9)
    assert [m.user_id for m in store.unlicensed_members(since=T0 + 6)] == ["zhangsan"]
    assert store.unlicensed_members(corp_id="wwother") == []


def _licence(user: str, expire: int | None, type: int = 1, code: str | None = None) -> Licence:
    return Licence(PLAIN, user, type, code, int(T0) - 86400, expire, 0.0)


def test_licences_saved_listed_by_expiry_and_clear_unlicensed(store: Store) -> None:
    store.record_unlicensed(PLAIN, "zhangsan", agent_id=None, seen_at=T0)
    store.record_unlicensed(PLAIN, "lisi", agent_id=None, seen_at=T0)
    written = store.save_licences(
        PLAIN,
        [
            _licence("zhangsan", int(T0) + 10 * 86400, code="LC1"),
            _licence("lisi", int(T0) - 60),  # expired: lisi stays unlicensed
            _licence("wangwu", int(T0) + 90 * 86400, type=2),
        ],
    )
    assert written == 3
    assert [m.user_id for m in store.unlicensed_members()] == ["lisi"]
    soon = store.list_licences(expiring_before=T0 + 30 * 86400)
    assert [x.user_id for x in soon] == ["lisi", "zhangsan"]
    (zs,) = store.list_licences(user_id="zhangsan")
    assert (zs.active_code, zs.type, zs.updated_at) == ("LC1", 1, T0)


def test_a_complete_licence_list_replaces_the_corps_accounts(store: Store) -> None:
    store.save_licences(PLAIN, [_licence("a", 1), _licence("b", 2)])
    store.save_licences(PLAIN, [_licence("b", 3)], complete=True)
    assert [(x.user_id, x.expire_time) for x in store.list_licences(corp_id=PLAIN)] == [("b", 3)]
    # A partial update keeps what it does not name, and keeps a known code.
    store.save_licences(PLAIN, [_licence("b", 3, code="CODE")])
    store.save_licences(PLAIN, [_licence("b", 4)])
    (b,) = store.list_licences()
    assert (b.expire_time, b.active_code) == (4, "CODE")


def test_licences_of_another_corp_are_refused(store: Store) -> None:
    with pytest.raises(UsageError, match="corp_id"):
        store.save_licences("wwother", [_licence("a", 1)])


def test_mappings_survive_reopening(backend: Backend) -> None:
    with backend.open() as s:
        s.save_id_mappings("external_userid", PLAIN, [("wmOld", "wmNew")])
    with backend.open() as s:
        (m,) = s.lookup_id("wmNew")
        assert m.plain_id == "wmOld"
