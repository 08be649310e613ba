"""IdConverter against FakeWeCom (over WSGITransport) and a real store: batches at WeCom's
limit, partial failures, rate-limit backoff, mappings recorded and not sent twice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qywx_cli.core.errors import LoginError, UsageError, WeComAPIError
from qywx_cli.core.fakewecom.ids import new_external_userid, open_userid
from qywx_cli.core.idconvert import IdConverter, read_ids
from tests.core.test_service import CORP, World

USERIDS = "batch/userid_to_openuserid"
EXTERNAL = "externalcontact/get_new_external_userid"


@pytest.fixture
def world(auths: Path, tmp_path: Path) -> Iterator[World]:
    w = World(auths, tmp_path / "qywx.db")
    w.authorized()
    yield w
    w.service.close()


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_2500_userids_take_three_calls_and_record_every_mapping(world: World) -> None:
    ids = [f"user{n:04d}" for n in range(2500)]
    seen: list[tuple[int, int, int]] = []
    report = IdConverter(world.client, world.store).convert(
        "userid", CORP, ids, progress=lambda *a: seen.append(a)
    )
    assert world.calls()[USERIDS] == 3
    assert (report.calls, report.total, len(report.mapped), report.ok) == (3, 2500, 2500, True)
    assert seen == [(0, 2500, 0), (1000, 2500, 1), (2000, 2500, 2), (2500, 2500, 3)]
    assert dict(report.mapped)["user1234"] == open_userid(CORP, "user1234")
    (mapping,) = world.store.lookup_id("user1234")
    assert (mapping.kind, mapping.corp_id, mapping.open_id) == (
        "userid",
        CORP,
        open_userid(CORP, "user1234"),
    )
    (back,) = world.store.lookup_id(open_userid(CORP, "user1234"))
    assert back.plain_id == "user1234"


def test_a_rerun_sends_only_what_is_not_mapped_yet(world: World) -> None:
    converter = IdConverter(world.client, world.store)
    converter.convert("userid", CORP, ["a", "b"])
    again = converter.convert("userid", CORP, ["a", "b", "c"])
    assert world.calls()[USERIDS] == 2
    assert (again.already_known, len(again.mapped), again.calls) == (2, 3, 1)


def test_ids_out_of_range_are_reported_with_the_reason(world: World) -> None:
    report = IdConverter(world.client, world.store).convert(
        "userid", CORP, ["zhangsan", "invalid-gone", "lisi"]
    )
    assert [p for p, _ in report.mapped] == ["zhangsan", "lisi"]
    (failed,) = report.unconverted
    assert failed.id == "invalid-gone" and "visible range" in failed.reason
    assert not report.ok
    assert world.store.lookup_id("invalid-gone") == []


def test_external_userids_partial_answer(world: World) -> None:
    report = IdConverter(world.client, world.store).convert(
        "external_userid", CORP, ["wmAAA", "not-a-customer", "woBBB"]
    )
    assert dict(report.mapped) == {
        "wmAAA": new_external_userid(CORP, "wmAAA"),
        "woBBB": new_external_userid(CORP, "woBBB"),
    }
    assert [u.id for u in report.unconverted] == ["not-a-customer"]
    assert world.calls()[EXTERNAL] == 1


def test_rate_limits_are_waited_out_with_backoff(world: World) -> None:
    world.fake.inject_fault(USERIDS, errcode=45009, count=2)
    sleeps = Sleeps()
    report = IdConverter(world.client, world.store, sleep=sleeps, backoff=0.5).convert(
        "userid", CORP, ["u1", "u2"]
    )
    assert sleeps == [0.5, 1.0]
    assert (report.rate_limit_waits, report.calls, report.ok) == (2, 3, True)


def test_a_rate_limit_that_does_not_lift_stops_with_progress_kept(world: World) -> None:
    converter = IdConverter(world.client, world.store, batch_size=2, max_waits=2, sleep=Sleeps())
    world.fake.inject_fault(USERIDS, errcode=45009, count=1)  # the first batch waits once
    converter.convert("userid", CORP, ["u1", "u2"])
    world.fake.inject_fault(USERIDS, errcode=45009, count=10)
    with pytest.raises(WeComAPIError, match="stopped after 2 of 4 ids") as info:
        converter.convert("userid", CORP, ["u1", "u2", "u3", "u4"])
    assert info.value.errcode == 45009
    assert len(world.store.lookup_id("u2")) == 1 and world.store.lookup_id("u3") == []


def test_other_errors_stop_at_once(world: World) -> None:
    world.fake.inject_fault(USERIDS, errcode=48002, errmsg="api forbidden")
    sleeps = Sleeps()
    with pytest.raises(WeComAPIError, match="48002"):
        IdConverter(world.client, world.store, sleep=sleeps).convert("userid", CORP, ["u1"])
    assert sleeps == []


def test_an_unknown_corp_is_refused_before_any_call(world: World) -> None:
    with pytest.raises(LoginError, match="no permanent code"):
        IdConverter(world.client, world.store).convert("userid", "wwnotauthorized00", ["u1"])
    assert USERIDS not in world.calls()


def test_batch_size_is_capped_at_wecom_limit(world: World) -> None:
    with pytest.raises(UsageError, match="1000"):
        IdConverter(world.client, world.store, batch_size=1001)


def test_the_client_refuses_an_oversized_batch(world: World) -> None:
    auth = world.store.get_corp_auth(CORP)
    assert auth is not None and auth.permanent_code
    with pytest.raises(UsageError, match="at most 1000"):
        world.client.userid_to_open_userid(
            CORP, auth.permanent_code, [f"u{n}" for n in range(1001)]
        )


# -- reading id files ------------------------------------------------------------------------


def test_read_ids_lines_skip_blanks_comments_and_repeats() -> None:
    text = "# exported 2026-11-01\nzhangsan\n\n  lisi  \nzhangsan\nWangWu\nwangwu\n"
    assert read_ids(text) == ["zhangsan", "lisi", "WangWu", "wangwu"]


def test_read_ids_from_a_csv_column() -> None:
    text = "name,userid\n张三,zhangsan\n李四,lisi\n,\n"
    assert read_ids(text, column="userid") == ["zhangsan", "lisi"]
    with pytest.raises(UsageError, match=r"no column 'user_id'.*name, userid"):
        read_ids(text, column="user_id")


def test_read_ids_refuses_what_is_not_an_id_file() -> None:
    with pytest.raises(UsageError, match="longer than"):
        read_ids("x" * 300)


# -- corp ids (provider token) ----------------------------------------------------------------


def test_corp_ids_convert_with_the_provider_token_and_route_by_either_form(world: World) -> None:
    from qywx_cli.core.fakewecom.ids import open_corpid
    from qywx_cli.core.wecom.results import ProviderCredentials

    provider = ProviderCredentials("wwprov1d3r0c0rp1d0", "provider-secret")
    world.fake.inject_fault("service/corpid_to_opencorpid", errcode=45009)
    sleeps = Sleeps()
    report = IdConverter(world.client, world.store, sleep=sleeps).convert_corp_ids(
        provider, [CORP, "wwnotauthorized00"]
    )
    assert report.mapped == ((CORP, open_corpid(CORP)),)
    (refused,) = report.unconverted
    assert refused.id == "wwnotauthorized00" and refused.reason.startswith("errcode 40013")
    assert (report.rate_limit_waits, sleeps) == (1, [1.0])
    found = world.store.get_corp_auth(open_corpid(CORP))
    assert found is not None and found.corp_id == CORP
    again = IdConverter(world.client, world.store).convert_corp_ids(provider, [CORP])
    assert (again.already_known, again.calls) == (1, 0)
