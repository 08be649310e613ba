"""The client's API families and the fake's mirror each other route for route."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import httpx
import pytest

import qywx_cli.core.fakewecom as fake_pkg
import qywx_cli.core.wecom as wecom_pkg
from qywx_cli.core.fakewecom import APIS as FAKE_APIS
from qywx_cli.core.fakewecom import FakeWeCom
from qywx_cli.core.store import Store
from qywx_cli.core.wecom import APIS as CLIENT_APIS
from qywx_cli.core.wecom import WeComClient


def _families(package: ModuleType, attribute: str) -> dict[str, dict[str, str]]:
    """Public modules of ``package`` declaring ``attribute`` → {path: method}."""
    found: dict[str, dict[str, str]] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        table = getattr(module, attribute, None)
        if table is None:
            continue
        found[info.name] = {
            path: (value[0] if isinstance(value, tuple) else value) for path, value in table.items()
        }
    return found


def test_every_client_api_has_a_route_in_the_fake_with_its_method() -> None:
    missing = {p: m for p, m in CLIENT_APIS.items() if FAKE_APIS.get(p) != m}
    assert missing == {}


def test_the_fake_serves_nothing_the_client_does_not_call() -> None:
    assert set(FAKE_APIS) == set(CLIENT_APIS)


def test_families_mirror_each_other_module_by_module() -> None:
    client = _families(wecom_pkg, "APIS")
    fake = _families(fake_pkg, "ROUTES")
    assert set(client) == set(fake)
    assert "suite" in client and "corp" in client
    for family, paths in client.items():
        assert fake[family] == paths, family


def test_every_family_is_in_the_client_registry() -> None:
    union: dict[str, str] = {}
    for paths in _families(wecom_pkg, "APIS").values():
        union.update(paths)
    assert union == CLIENT_APIS


def test_a_call_outside_the_registry_is_refused_before_any_request(tmp_path: object) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"errcode": 0})

    with (
        Store(f"{tmp_path}/q.db") as store,
        WeComClient(
            store, base_url="http://fake.test/cgi-bin", transport=httpx.MockTransport(handler)
        ) as client,
    ):
        with pytest.raises(AssertionError, match="not in the client's API registry"):
            client._http.call("GET", "user/get")
        with pytest.raises(AssertionError):
            client._http.call("GET", "auth/getuserdetail")  # registered as POST
    assert seen == []


def test_fake_routes_answer_with_wecom_json() -> None:
    fake = FakeWeCom()
    with httpx.Client(
        transport=httpx.WSGITransport(app=fake), base_url="http://fake.test/cgi-bin/"
    ) as http:
        for path, method in FAKE_APIS.items():
            reply = http.request(method, path)
            assert reply.status_code == 200, path
            assert isinstance(reply.json().get("errcode", 0), int), path
