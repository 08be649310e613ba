"""The authorized corps, as an operator asks about them (``qywx corp …``).

A corp appears once per 代开发 template (suite) it authorized. The view joins what the
store knows: the authorization (create_auth / change_auth, §3.2-3.3), whether the
permanent code (the app's secret) is held, and the cached corp access token. ``refresh``
asks WeCom now (``service/get_auth_info``, §5.4) instead of waiting for a change_auth.

Fields are one flat mapping (:meth:`CorpView.as_dict`) so more can be added (publish
status, licences…) without changing the commands that render it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from qywx_cli.core.config import AuthInstance
from qywx_cli.core.errors import ConfigError, RecordNotFound
from qywx_cli.core.provider import is_online, publish_label, read_app_status
from qywx_cli.core.store import CorpAuth, Store
from qywx_cli.core.wecom import WeComClient

__all__ = ["CorpView", "corp_views", "refresh_corp"]


@dataclass(frozen=True)
class CorpView:
    """One corp's authorization of one suite; never a secret, only whether one is held."""

    corp_id: str
    corp_name: str | None
    suite_id: str
    instances: tuple[str, ...]
    agent_id: int | None
    state: str
    permanent_code_held: bool
    authorized_at: float
    updated_at: float
    #: when the cached corp access token expires (None: none cached and valid)
    corp_token_expires_at: float | None
    #: both forms of the corp id once `qywx ids convert corpid` recorded them (ID upgrade)
    plain_corp_id: str | None = None
    open_corp_id: str | None = None
    #: the 带参授权链接 state its create_auth carried (qywx auth-url), if any
    link_state: str | None = None
    #: agent/get's customized_publish_status (doc 96448); None until read
    publish_status: int | None = None
    #: ``2 已上线`` …, ``unknown`` until read
    publish_label: str = "unknown"
    #: True online (2/3), False not online yet (0/1), None never read
    online: bool | None = None
    publish_checked_at: float | None = None

    def as_dict(self) -> dict[str, object]:
        doc = asdict(self)
        doc["instances"] = list(self.instances)
        return doc


def _view(store: Store, auth: CorpAuth, instances: Iterable[AuthInstance]) -> CorpView:
    from qywx_cli.core.idconvert import corp_id_forms

    token = store.get_token("corp", auth.corp_id)
    plain, opened = corp_id_forms(store, auth.corp_id)
    return CorpView(
        plain_corp_id=plain,
        open_corp_id=opened,
        corp_id=auth.corp_id,
        corp_name=auth.corp_name,
        suite_id=auth.suite_id,
        instances=tuple(sorted(i.name for i in instances if i.suite_id == auth.suite_id)),
        agent_id=auth.agent_id,
        state=auth.state,
        permanent_code_held=bool(auth.permanent_code),
        authorized_at=auth.created_at,
        updated_at=auth.updated_at,
        corp_token_expires_at=token.expires_at if token is not None else None,
        link_state=auth.link_state,
        publish_status=auth.publish_status,
        publish_label=publish_label(auth.publish_status),
        online=is_online(auth.publish_status),
        publish_checked_at=auth.publish_checked_at,
    )


def corp_views(
    store: Store, instances: Iterable[AuthInstance], corp_id: str | None = None
) -> list[CorpView]:
    """Every authorization (or one corp's, RecordNotFound if it has none), by suite, corp."""
    known = list(instances)
    auths = store.list_corp_auths()
    if corp_id is not None:
        known_as = store.get_corp_auth(corp_id)  # either form of the id, once mapped
        wanted = {corp_id, known_as.corp_id if known_as is not None else corp_id}
        auths = [a for a in auths if a.corp_id in wanted]
        if not auths:
            raise RecordNotFound(
                f"corp {corp_id} has not authorized any suite here (no create_auth recorded); "
                "`qywx corp list` shows the corps that have"
            )
    return [_view(store, a, known) for a in auths]


def refresh_corp(
    store: Store,
    client: WeComClient,
    instances: Iterable[AuthInstance],
    corp_id: str,
    suite_id: str | None = None,
) -> list[CorpView]:
    """Ask WeCom for each of the corp's authorizations now (get_auth_info) and store it."""
    known = list(instances)
    views = corp_views(store, known, corp_id)
    refreshed = []
    for view in views:
        if suite_id is not None and view.suite_id != suite_id:
            continue
        auth = store.get_corp_auth(corp_id, view.suite_id)
        if auth is None or not auth.permanent_code:
            raise RecordNotFound(
                f"corp {corp_id} holds no permanent code for suite {view.suite_id} "
                f"(state {view.state}); only a new create_auth can give one"
            )
        owner = next((i for i in known if i.suite_id == view.suite_id and i.suite_secret), None)
        if owner is None:
            raise ConfigError(
                f"no loadable instance of suite {view.suite_id} with its suiteSecret: "
                "get_auth_info needs the suite's secret"
            )
        info = client.get_auth_info(
            owner.suite_id, owner.suite_secret, corp_id, auth.permanent_code
        )
        store.upsert_corp_auth(
            owner.suite_id,
            corp_id,
            corp_name=info.corp_name,
            agent_id=info.agent_id,
            state="active",
        )
        updated = store.get_corp_auth(corp_id, owner.suite_id)
        assert updated is not None
        read_app_status(store, client, updated)  # agent/get: is the app online yet?
        updated = store.get_corp_auth(corp_id, owner.suite_id)
        assert updated is not None
        refreshed.append(_view(store, updated, known))
    if not refreshed:
        raise RecordNotFound(f"corp {corp_id} has not authorized suite {suite_id}")
    return refreshed
