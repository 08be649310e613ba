"""Interface licences (接口调用许可, docs 95652 and the 97188-97194 family), over the
provider_access_token.

A 代开发 app's members need an activated account once the corp's 90-day trial is over
(doc 97194); WeCom then refuses the app's calls for an unlicensed member and pushes
``unlicensed_notify``. Account ``type``: 1 基础账号, 2 互通账号 (doc 97191).

* ``license/list_actived_account`` (doc 95544): every active account of a corp, paged
  by ``cursor`` (``limit`` ≤ 1000);
* ``license/get_active_info_by_user`` (doc 97191): one member's accounts;
* ``license/active_account`` (doc 97188): bind an activation code to a member; one
  member holds at most one account of each type, stacked validity ≤ 5 years (701030);
* ``license/batch_transfer_license`` (doc 95673): move accounts from members who
  left to their successors, each pair answered with its own errcode;
* ``license/get_order`` / ``license/list_order_account`` (docs 95648, 95649): what a
  ``license_pay_success`` bought — the order, and its activation codes.

Orders are paid in the provider console only (doc 95652); there is no pay call here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from qywx_cli.core.errors import UsageError
from qywx_cli.core.wecom._http import dict_at, int_at, str_at
from qywx_cli.core.wecom.provider import ProviderAPI
from qywx_cli.core.wecom.results import ProviderCredentials

APIS: dict[str, str] = {
    "license/list_actived_account": "POST",
    "license/get_active_info_by_user": "POST",
    "license/active_account": "POST",
    "license/batch_transfer_license": "POST",
    "license/get_order": "POST",
    "license/list_order_account": "POST",
}
"""The paths this family calls and their methods (the fake must route every one)."""

PAGE_LIMIT: Final = 1000
"""``limit`` of the list calls: "最大值1000" (docs 95544, 95649)."""

MAX_PAGES: Final = 10_000
"""A guard against a cursor that never ends (10 million accounts)."""

MAX_TRANSFERS: Final = 1000
"""``transfer_list``: at most 1000 pairs a call (doc 95673)."""

ACCOUNT_TYPES: Final = {1: "basic", 2: "external_contact"}
"""1 基础账号, 2 互通账号 (doc 97191)."""


@dataclass(frozen=True)
class LicenceAccount:
    """One active account: the member it is bound to and when it runs out."""

    user_id: str
    type: int | None
    active_code: str | None
    active_time: int | None
    expire_time: int | None

    @property
    def type_name(self) -> str:
        return ACCOUNT_TYPES.get(self.type or 0, str(self.type))


@dataclass(frozen=True)
class MemberLicence:
    """get_active_info_by_user: ``active`` is active_status 1; the accounts held."""

    user_id: str
    active: bool
    accounts: tuple[LicenceAccount, ...]


@dataclass(frozen=True)
class TransferResult:
    handover_user_id: str
    takeover_user_id: str
    errcode: int

    @property
    def ok(self) -> bool:
        return self.errcode == 0


@dataclass(frozen=True)
class LicenceOrder:
    """get_order's order and list_order_account's codes (what license_pay_success bought)."""

    order_id: str
    corp_id: str | None
    order_type: int | None
    order_status: int | None
    codes: tuple[LicenceAccount, ...]


def _account(item: Any, user_id: str | None = None) -> LicenceAccount | None:
    node = dict_at({"i": item}, "i")
    uid = str_at(node, "userid") or user_id
    if uid is None and str_at(node, "active_code") is None:
        return None
    return LicenceAccount(
        user_id=uid or "",
        type=int_at(node, "type"),
        active_code=str_at(node, "active_code"),
        active_time=int_at(node, "active_time"),
        expire_time=int_at(node, "expire_time"),
    )


class LicencesAPI(ProviderAPI):
    """Interface-licence calls (provider_access_token)."""

    def _pages(
        self, provider: ProviderCredentials, api: str, body: dict[str, Any]
    ) -> list[LicenceAccount]:
        accounts: list[LicenceAccount] = []
        cursor = ""
        for _ in range(MAX_PAGES):
            page = {**body, "limit": PAGE_LIMIT, **({"cursor": cursor} if cursor else {})}
            data = self._provider_call(provider, "POST", api, body=page)
            for item in data.get("account_list") or ():
                account = _account(item)
                if account is not None:
                    accounts.append(account)
            cursor = str_at(data, "next_cursor") or ""
            if not int_at(data, "has_more") or not cursor:
                return accounts
        raise UsageError(f"{api}: more than {MAX_PAGES} pages; stopped")

    def list_active_accounts(
        self, provider: ProviderCredentials, corp_id: str
    ) -> list[LicenceAccount]:
        """Every active account of ``corp_id`` (doc 95544), all pages."""
        return self._pages(provider, "license/list_actived_account", {"corpid": corp_id})

    def member_licence(
        self, provider: ProviderCredentials, corp_id: str, user_id: str
    ) -> MemberLicence:
        data = self._provider_call(
            provider,
            "POST",
            "license/get_active_info_by_user",
            body={"corpid": corp_id, "userid": user_id},
        )
        accounts = tuple(
            a
            for a in (_account(i, user_id) for i in data.get("active_info_list") or ())
            if a is not None
        )
        return MemberLicence(user_id, int_at(data, "active_status") == 1, accounts)

    def activate(
        self, provider: ProviderCredentials, corp_id: str, active_code: str, user_id: str
    ) -> None:
        """Bind ``active_code`` to ``user_id`` (doc 97188)."""
        self._provider_call(
            provider,
            "POST",
            "license/active_account",
            body={"active_code": active_code, "corpid": corp_id, "userid": user_id},
        )

    def transfer(
        self, provider: ProviderCredentials, corp_id: str, pairs: Sequence[tuple[str, str]]
    ) -> list[TransferResult]:
        """Move each handover member's accounts to the takeover member (doc 95673)."""
        if not pairs or len(pairs) > MAX_TRANSFERS:
            raise UsageError(f"a transfer moves 1 to {MAX_TRANSFERS} members' accounts")
        data = self._provider_call(
            provider,
            "POST",
            "license/batch_transfer_license",
            body={
                "corpid": corp_id,
                "transfer_list": [{"handover_userid": h, "takeover_userid": t} for h, t in pairs],
            },
        )
        results = []
        for item in data.get("transfer_result") or ():
            node = dict_at({"i": item}, "i")
            results.append(
                TransferResult(
                    str_at(node, "handover_userid") or "",
                    str_at(node, "takeover_userid") or "",
                    int_at(node, "errcode") or 0,
                )
            )
        return results

    def licence_order(self, provider: ProviderCredentials, order_id: str) -> LicenceOrder:
        """The order a license_pay_success names, with its activation codes."""
        data = self._provider_call(
            provider, "POST", "license/get_order", body={"order_id": order_id}
        )
        order = dict_at(data, "order")
        codes = self._pages(provider, "license/list_order_account", {"order_id": order_id})
        return LicenceOrder(
            order_id=str_at(order, "order_id") or order_id,
            corp_id=str_at(order, "corpid"),
            order_type=int_at(order, "order_type"),
            order_status=int_at(order, "order_status"),
            codes=tuple(codes),
        )
