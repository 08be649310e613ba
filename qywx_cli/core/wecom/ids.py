"""The ID security upgrade's conversion calls (docs 97104, 97062, 97105).

代开发 apps installed after 2022-06-28 see provider-scoped ciphertext ids; a provider
migrating an older customer converts what it stored:

* ``batch/userid_to_openuserid`` with the app's corp token: at most
  :data:`USERID_BATCH_LIMIT` userids a call; ids outside the app's visible range come
  back in ``invalid_userid_list`` (and many wrong ids get the app blocked for a day,
  doc 97062, so callers should not resend them);
* ``externalcontact/get_new_external_userid`` with the same token: ``items`` holds
  the ids WeCom converted; one it could not is simply absent. Its per-call limit is
  not on a primary page (1,000 is commonly cited) — wecom-provider-apis.md §6.2;
* ``service/corpid_to_opencorpid`` with the provider_access_token, one corp a call,
  only for corps that authorized the provider.

Rate limits are WeCom answers (errcode 45009 and kin, :data:`RATE_LIMIT_ERRCODES`),
never retried here: the batch orchestration in :mod:`qywx_cli.core.idconvert` backs
off and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from qywx_cli.core.errors import UsageError
from qywx_cli.core.wecom._http import dict_at, required, str_at, strs
from qywx_cli.core.wecom.corp import CorpAPI
from qywx_cli.core.wecom.provider import ProviderAPI
from qywx_cli.core.wecom.results import ProviderCredentials

APIS: dict[str, str] = {
    "batch/userid_to_openuserid": "POST",
    "externalcontact/get_new_external_userid": "POST",
    "service/corpid_to_opencorpid": "POST",
}
"""The paths this family calls and their methods (the fake must route every one)."""

USERID_BATCH_LIMIT: Final = 1000
"""``userid_list``: "最多不超过1000个" (doc 97062)."""

EXTERNAL_USERID_BATCH_LIMIT: Final = 1000
"""``external_userid_list``: 1,000 as commonly cited (UNCONFIRMED on a primary page)."""

RATE_LIMIT_ERRCODES: Final = frozenset({-1, 45009, 45011, 45033})
"""System busy (-1), API frequency limits (45009 接口调用超过限制, 45011 API freq out of
limit) and concurrency limit (45033): wait and try again, the answer may change."""


@dataclass(frozen=True)
class Converted:
    """One call's answer: ``pairs`` (plain id, open id) and the ids WeCom refused."""

    pairs: tuple[tuple[str, str], ...]
    invalid: tuple[str, ...]


def _check_batch(ids: Sequence[str], limit: int, what: str) -> list[str]:
    if not ids:
        raise UsageError(f"no {what} to convert")
    if len(ids) > limit:
        raise UsageError(f"at most {limit} {what} a call, not {len(ids)}")
    return list(ids)


class IdsAPI(CorpAPI):
    """ID conversion with the 代开发 app's corp token (corpid conversion: provider family)."""

    def userid_to_open_userid(
        self, corp_id: str, permanent_code: str, user_ids: Sequence[str]
    ) -> Converted:
        """userid → open_userid for up to 1,000 members of ``corp_id`` (doc 97062)."""
        api = "batch/userid_to_openuserid"
        body = {"userid_list": _check_batch(user_ids, USERID_BATCH_LIMIT, "userids")}
        data = self._corp_call(corp_id, permanent_code, "POST", api, body=body)
        pairs = []
        for item in data.get("open_userid_list") or ():
            if isinstance(item, dict):
                plain, opened = str_at(item, "userid"), str_at(item, "open_userid")
                if plain and opened:
                    pairs.append((plain, opened))
        return Converted(tuple(pairs), strs(data.get("invalid_userid_list")))

    def new_external_userids(
        self, corp_id: str, permanent_code: str, external_user_ids: Sequence[str]
    ) -> Converted:
        """external_userid → the provider-scoped one; ids WeCom leaves out are ``invalid``."""
        api = "externalcontact/get_new_external_userid"
        asked = _check_batch(external_user_ids, EXTERNAL_USERID_BATCH_LIMIT, "external_userids")
        data = self._corp_call(
            corp_id, permanent_code, "POST", api, body={"external_userid_list": asked}
        )
        pairs = []
        for item in data.get("items") or ():
            node = dict_at({"i": item}, "i")
            plain, opened = str_at(node, "external_userid"), str_at(node, "new_external_userid")
            if plain and opened:
                pairs.append((plain, opened))
        answered = {plain for plain, _ in pairs}
        return Converted(tuple(pairs), tuple(i for i in asked if i not in answered))


class CorpIdAPI(ProviderAPI):
    """corpid → open corpid with the provider_access_token (doc 97105)."""

    def corpid_to_open_corpid(self, provider: ProviderCredentials, corp_id: str) -> str:
        """The provider-scoped (case-sensitive) corp id of an authorized corp."""
        api = "service/corpid_to_opencorpid"
        data = self._provider_call(provider, "POST", api, body={"corpid": corp_id})
        return required(data, api, "open_corpid")
