"""``qywx doctor``: what is wrong with a deployment, one check at a time, each with a fix.

The checks follow a callback's dependencies: a valid config and resolvable secrets,
then a writable, current database, then a recent suite_ticket (WeCom pushes one every
ten minutes, wecom-protocol.md §3.1, valid 30), then a suite token obtainable from
WeCom (proving suite id, secret, ticket and IP whitelist together, §4), and finally,
given a URL, the public endpoint answering WeCom's handshake and a signed callback.

The probe suite_ticket sent to the URL carries ``TimeStamp`` 1: the store keeps the
ticket with the greatest WeCom timestamp as the latest, so a probe can never displace
the real ticket (which would break get_suite_token until the next push).

:func:`run_doctor_all` (``doctor --all``) runs those checks for every instance folder,
then asks WeCom for every authorized corp's app token (``gettoken`` with the stored
permanent code, §5.4): the one call every login and API call in that corp starts with,
so a corp whose code stopped working is found before its staff are.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from qywx_cli.core.config import AuthInstance, instance_dirs, validate_paths
from qywx_cli.core.errors import ConfigError, QywxError, StoreError, WeComAPIError
from qywx_cli.core.retry import check_not_empty
from qywx_cli.core.sealing import SecretKeyError
from qywx_cli.core.settings import Settings
from qywx_cli.core.simulate import CallbackSimulator, EventSpec, make_client, send
from qywx_cli.core.store import (
    SCHEMA_VERSION,
    Store,
    display_target,
    local_file,
    open_store,
)
from qywx_cli.core.wecom import WeComClient

__all__ = [
    "STALE_TICKET_SECONDS",
    "Check",
    "CorpCheck",
    "DoctorAll",
    "InstanceReport",
    "run_doctor",
    "run_doctor_all",
]

STALE_TICKET_SECONDS = 30 * 60
_SECRET_CODES = frozenset({"env-unset", "env-reference", "placeholder"})


@dataclass(frozen=True)
class Check:
    """One check. A skipped check (what it needs failed first) is neither passed nor failed:
    counting it as failed would double-count the one real problem."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    skipped: bool = False
    #: passed, with something an operator should act on (shown as a warning)
    warning: bool = False

    @property
    def status(self) -> str:
        if self.skipped:
            return "skipped"
        if not self.ok:
            return "failed"
        return "warning" if self.warning else "ok"

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "status": self.status}


def _config_checks(settings: Settings, ref: str) -> tuple[AuthInstance | None, list[Check]]:
    folder = Path(ref) if ("/" in ref or os.sep in ref) else settings.auths_dir / ref
    if not folder.is_dir():
        return None, [
            Check(
                "config",
                False,
                f"no instance folder at {folder}",
                f"create it with `qywx init {folder.name} --suite-id …` or pass --auths DIR",
            )
        ]
    auths_dir = folder.parent
    report = validate_paths([auths_dir])
    mine = [d for d in report.errors if d.instance == folder.name]
    secret = [d for d in mine if d.code in _SECRET_CODES]
    other = [d for d in mine if d.code not in _SECRET_CODES]
    checks = [
        Check(
            "config",
            not other,
            "valid"
            if not other
            else f"{other[0].file}: {other[0].message}"
            + (f" (+{len(other) - 1} more)" if len(other) > 1 else ""),
            "" if not other else f"run `qywx validate {auths_dir}` and fix what it lists",
        ),
        Check(
            "secrets",
            not secret,
            "suiteSecret, token and encodingAESKey resolve" if not secret else secret[0].message,
            ""
            if not secret
            else "set the environment variable(s) named, or put the values "
            "from the WeCom console in the business file",
        ),
    ]
    inst = next((i for i in report.instances if i.name == folder.name), None)
    if inst is not None and not inst.is_active:
        checks.append(Check("active", False, "isActive is false", "set isActive to true"))
    return inst, checks


def run_doctor(
    settings: Settings,
    instance_ref: str,
    *,
    url: str | None = None,
    now: Callable[[], float] = time.time,
) -> list[Check]:
    """Run every check that can run; later checks are skipped when what they need failed."""
    inst, checks = _config_checks(settings, instance_ref)
    if inst is None:
        return checks

    target = settings.db_path
    db = local_file(target)  # None for a database server
    shown = display_target(target)
    store: Store | None = None
    if db is not None and not db.exists():
        checks.append(
            Check(
                "database",
                False,
                f"no database at {shown}",
                "start `qywx serve` (it creates the database) or pass --db PATH",
            )
        )
    else:
        try:
            if db is not None:
                check_not_empty(db)
            store = open_store(target, now=now, keys=settings.secret_keys)
        except QywxError as exc:
            # The message already says what to do; only a newer schema needs a newer qywx.
            fix = (
                "upgrade qywx to the version that wrote this database"
                if "newer than this qywx" in exc.message
                else "see the detail: point --db at the qywx database (or check the URL, "
                "the server and the password), or fix what it names"
            )
            checks.append(Check("database", False, exc.message, fix))
        else:
            health = store.healthcheck()  # commits one write: reading is not enough
            writable = bool(health.get("writable")) and (
                db is None or os.access(db.parent, os.W_OK)
            )
            ok = bool(health.get("ok")) and writable and store.schema_version == SCHEMA_VERSION
            why = f" ({health['error']})" if not writable and health.get("error") else ""
            checks.append(
                Check(
                    "database",
                    ok,
                    f"{shown} ({store.backend}): schema v{store.schema_version}, "
                    + ("writable" if writable else f"NOT writable{why}"),
                    ""
                    if ok
                    else (
                        "free disk space, remount read-write, or make the file and its "
                        "folder writable by the qywx user; until then every callback gets 503"
                        if db is not None
                        else "the database is read-only or unreachable: check the server; "
                        "until then every callback gets 503"
                    ),
                )
            )
    if store is not None:
        with store:
            reading = partial(_reading, shown)
            checks.extend(reading("secrets_at_rest", lambda: [_secrets_at_rest(store)]))
            checks.extend(
                reading("suite_ticket", lambda: _ticket_and_token(settings, inst, store, now))
            )
            checks.extend(reading("licences", lambda: [_licence_check(store, now())]))
            checks.extend(reading("installations", lambda: _lost_installations(store)))
            checks.extend(reading("app_status", lambda: _app_status_checks(inst, store)))
    if url:
        checks.extend(_endpoint_checks(settings, inst, url))
    return checks


_UNREADABLE = (StoreError, TypeError, ValueError, OverflowError)
"""What reading a database that opened can still meet: a table dropped or damaged
(StoreError), or a row written outside qywx, whose values no qywx wrote (SQLite takes
any type in any column)."""


def _reading(shown: str, name: str, run: Callable[[], list[Check]]) -> list[Check]:
    """The checks ``run`` makes, or one failed check ``name`` when reading the database
    fails: the rest of the report still runs, rather than the command ending on one
    error line (or "internal error")."""
    try:
        return run()
    except _UNREADABLE as exc:
        why = exc.message if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"
        return [
            Check(
                name,
                False,
                f"cannot read it from {shown}: {why[:200]}",
                "the database was changed outside qywx or is damaged: restore it from a "
                "backup, or delete the row it names",
            )
        ]


def _app_status_checks(inst: AuthInstance, store: Store) -> list[Check]:
    try:
        status = _app_status(inst, store)
    except SecretKeyError:  # reported by the secrets_at_rest check
        return []
    return [status] if status is not None else []


def _secrets_at_rest(store: Store) -> Check:
    """Are permanent codes and tokens encrypted, and with a key that is set? No key is
    a warning (qywx works as before); secrets sealed with a key not set fail."""
    from qywx_cli.core.sealing import assess_at_rest

    verdict = assess_at_rest(store.secret_keys, store.secrets_at_rest())
    return Check(
        "secrets_at_rest",
        verdict.status != "failed",
        verdict.detail,
        verdict.fix,
        warning=verdict.status == "warning",
    )


def _app_status(inst: AuthInstance, store: Store) -> Check | None:
    """Corps that installed the app but cannot use it yet: the provider has not published
    it (customized_publish_status 0/1, doc 96448) — a warning, since logins there fail.
    None (no check) while no corp has authorized the template."""
    from qywx_cli.core.provider import NOT_ONLINE_HINT, is_online

    corps = store.list_corp_auths(inst.suite_id, state="active")
    if not corps:
        return None
    waiting = [a for a in corps if is_online(a.publish_status) is False]
    unknown = sum(1 for a in corps if a.publish_status is None)
    if waiting:
        names = ", ".join(f"{a.corp_id} ({a.corp_name or '?'})" for a in waiting)
        return Check(
            "app_status",
            True,
            f"{len(waiting)} corp(s) {NOT_ONLINE_HINT}: {names}",
            "publish it, then `qywx corp refresh CORP` reads the status again",
            warning=True,
        )
    online = len(corps) - unknown
    return Check(
        "app_status",
        True,
        f"{len(corps)} authorized corp(s): {online} online, {unknown} not read yet",
    )


def _ticket_and_token(
    settings: Settings, inst: AuthInstance, store: Store, now: Callable[[], float]
) -> list[Check]:
    ticket = store.latest_suite_ticket(inst.suite_id)
    if ticket is None:
        return [
            Check(
                "suite_ticket",
                False,
                f"no suite_ticket received for suite {inst.suite_id}",
                "check the template's callback URL in the WeCom provider console points at "
                "this server's /notify, then use 'refresh ticket' there",
            ),
            Check("suite_token", False, "skipped: needs a suite_ticket", "", skipped=True),
        ]
    age = now() - ticket.received_at
    fresh = age <= STALE_TICKET_SECONDS
    checks = [
        Check(
            "suite_ticket",
            fresh,
            f"latest received {age / 60:.0f} min ago",
            ""
            if fresh
            else "WeCom pushes one every 10 minutes: callbacks are not arriving; check "
            "the callback URL, DNS/TLS and that `qywx serve` is reachable, then refresh the ticket",
        )
    ]
    try:
        with WeComClient(store, base_url=settings.api_base, now=now, retries=1) as client:
            client.suite_token(inst.suite_id, inst.suite_secret, fresh=True)
    except QywxError as exc:
        checks.append(
            Check(
                "suite_token",
                False,
                exc.message,
                "check suiteId/suiteSecret against the provider console, the server's "
                "IP whitelist, and that the ticket is current (errcode 40085)",
            )
        )
    else:
        checks.append(Check("suite_token", True, f"obtained just now from {settings.api_base}"))
    return checks


def _lost_installations(store: Store) -> list[Check]:
    """Installations whose AuthCode was spent with no permanent code stored (a crash
    right after WeCom answered): listed only when there are some, each needs the
    operator to reset the Secret (RECOVERY_40078)."""
    from qywx_cli.core.service import RECOVERY_40078

    lost = [
        r
        for r in store.list_callbacks(status="failed", limit=10_000)
        if RECOVERY_40078 in (r.last_error or "")
    ]
    if not lost:
        return []
    ids = ", ".join(str(r.id) for r in lost[:10])
    return [
        Check(
            "installations",
            False,
            f"{len(lost)} installation(s) lost their AuthCode with no permanent code "
            f"stored (records {ids})",
            "reset the app's Secret in the provider console (代开发应用 → 重置Secret): "
            "WeCom sends reset_permanent_code with a fresh AuthCode and qywx stores it",
        )
    ]


def _licence_check(store: Store, now: float) -> Check:
    """Members WeCom reported unlicensed (a failure: WeCom refuses the app's calls for
    them), and licences ending within 30 days (a reminder, still ok; doc 97194)."""
    from qywx_cli.core.licensing import licence_report

    report = licence_report(store, now=now)
    if report.ok:
        return Check(
            "licences",
            True,
            f"no unlicensed members reported, none expiring within {report.days} days",
        )
    parts = []
    if report.unlicensed:
        names = ", ".join(f"{m.user_id}@{m.corp_id}" for m in report.unlicensed[:5])
        parts.append(f"{len(report.unlicensed)} member(s) used the app unlicensed ({names})")
    if report.expiring:
        names = ", ".join(f"{x.user_id}@{x.corp_id}" for x in report.expiring[:5])
        parts.append(
            f"{len(report.expiring)} licence(s) expire within {report.days} days ({names})"
        )
    # Unlicensed members are failing now; an expiry within the window is a reminder.
    return Check(
        "licences",
        not report.unlicensed,
        "; ".join(parts),
        "activate or renew their accounts: `qywx license activate --corp-id C --code CODE "
        "--user-id U` with a code bought in the provider console",
    )


def _endpoint_checks(settings: Settings, inst: AuthInstance, url: str) -> list[Check]:
    try:
        sim = CallbackSimulator.for_instance(inst, url)
    except QywxError as exc:
        return [Check("endpoint", False, exc.message, "pass a full http(s) URL")]
    receive_id = settings.provider_corp_id or inst.corp_id or inst.suite_id
    probe = EventSpec(
        receive_id=inst.suite_id,
        info_type="suite_ticket",
        overrides={"TimeStamp": "1", "SuiteTicket": "qywx-doctor-probe"},
    )
    checks = []
    with make_client() as client:
        for name, request, fix in (
            (
                "handshake",
                sim.handshake(receive_id),
                "the URL must answer GET with the decrypted echostr only (no quotes/newline); "
                "check token/encodingAESKey match the console and the route is /notify/"
                f"{inst.name}",
            ),
            (
                "callback",
                sim.callback(probe),
                "the URL must answer a signed POST with exactly 'success' within 1 s",
            ),
        ):
            exchange = send(client, request)
            detail = exchange.reason
            if exchange.reply is None:  # nothing answered: the token is not the question
                fix = (
                    f"nothing answered at {sim.url}: start `qywx serve` (or your endpoint) "
                    "and check the URL, port, proxy and firewall"
                )
            elif not exchange.ok and exchange.reply.preview not in detail:
                detail = f"{detail}: {exchange.reply.preview!r}"  # e.g. the -40001 reason
            checks.append(Check(name, exchange.ok, detail, "" if exchange.ok else fix))
    return checks


# -- every instance, every corp (doctor --all) -------------------------------------------

GETTOKEN_FIXES: dict[int, str] = {
    -1: "WeCom was busy (系统繁忙): run doctor again in a minute",
    40001: "WeCom refused the stored permanent code as this corp's secret (reset or "
    "superseded): reset the app's Secret in the provider console (代开发应用 → 重置Secret); "
    "WeCom then sends reset_permanent_code and qywx stores the new code",
    40013: "WeCom does not know this corp id: compare it with `qywx corp show CORP` (after "
    "the ID upgrade WeCom may expect the other form: `qywx ids convert corpid`)",
    40084: "the permanent code is not valid: reset the app's Secret in the provider console "
    "(代开发应用 → 重置Secret) so WeCom sends a new one",
    60020: "WeCom refused this server's IP: add it to the app's trusted IPs (企业可信IP) in "
    "the provider console",
}
"""What to do about a ``gettoken`` errcode; anything else points at WeCom's errcode page."""


def gettoken_fix(errcode: int | None) -> str:
    """The one-line fix doctor --all shows for a failed corp gettoken."""
    if errcode is None:
        return "WeCom could not be reached: check the network, proxy and QYWX_API_BASE"
    return GETTOKEN_FIXES.get(
        errcode,
        f"see WeCom's error code page: https://developer.work.weixin.qq.com/devtool/query?e={errcode}",
    )


@dataclass(frozen=True)
class CorpCheck:
    """``gettoken`` for one corp's authorization of one suite; never the code or the token."""

    corp_id: str
    corp_name: str | None
    suite_id: str
    #: the instances here serving that suite (none: the suite is not configured here)
    instances: tuple[str, ...]
    ok: bool
    detail: str
    fix: str = ""
    skipped: bool = False
    #: WeCom's errcode when gettoken was refused (None: ok, skipped or unreachable)
    errcode: int | None = None

    @property
    def status(self) -> str:
        if self.skipped:
            return "skipped"
        return "ok" if self.ok else "failed"

    def as_dict(self) -> dict[str, object]:
        doc = asdict(self)
        doc["instances"] = list(self.instances)
        doc["status"] = self.status
        return doc


@dataclass(frozen=True)
class InstanceReport:
    """One instance folder's checks, as :func:`run_doctor` returns them."""

    instance: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, object]:
        return {
            "instance": self.instance,
            "ok": self.ok,
            "checks": [c.as_dict() for c in self.checks],
        }


@dataclass(frozen=True)
class DoctorAll:
    """``doctor --all``: each instance's checks, then one gettoken per authorized corp."""

    instances: tuple[InstanceReport, ...]
    corps: tuple[CorpCheck, ...]
    #: why no corp was checked, when none was (no database, no corp yet)
    corps_note: str = ""

    @property
    def ok(self) -> bool:
        """A skipped check is not a failure: only ``failed`` makes the verdict false."""
        return all(r.ok for r in self.instances) and all(c.status != "failed" for c in self.corps)

    def statuses(self) -> list[str]:
        """Every check's status, instances' and corps', for the summary line."""
        return [c.status for r in self.instances for c in r.checks] + [c.status for c in self.corps]

    def counts(self) -> dict[str, int]:
        statuses = self.statuses()
        return {name: statuses.count(name) for name in ("ok", "warning", "failed", "skipped")}

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "summary": self.counts(),
            "instances": [r.as_dict() for r in self.instances],
            "corps": [c.as_dict() for c in self.corps],
            "corps_note": self.corps_note,
        }


def run_doctor_all(settings: Settings, *, now: Callable[[], float] = time.time) -> DoctorAll:
    """:func:`run_doctor` for every instance folder, then gettoken for every corp.

    A ConfigError when there is no instance folder at all: there is nothing to check,
    and an empty report would read as a pass.
    """
    auths = settings.auths_dir
    folders = instance_dirs(auths) if auths.is_dir() else []
    if not folders:
        raise ConfigError(
            f"no instance folders in {auths}: create one with `qywx init NAME --suite-id …` "
            "or pass --auths DIR",
            code="no-instances",
        )
    reports = tuple(
        InstanceReport(folder.name, tuple(run_doctor(settings, str(folder), now=now)))
        for folder in folders
    )
    instances = list(validate_paths([auths]).instances)
    corps, why = _corp_checks(settings, instances, now)
    return DoctorAll(reports, tuple(corps), why)


def _refusal(exc: WeComAPIError) -> str:
    """``gettoken refused: errcode 40001 (invalid credential)``: WeCom's errmsg without
    the hint and the link it appends (the errcode and the fix say more, in less room)."""
    errmsg = exc.errmsg.split(", hint:")[0].split(" hint:")[0].strip()
    return f"gettoken refused: errcode {exc.errcode}" + (f" ({errmsg})" if errmsg else "")


def _corp_checks(
    settings: Settings, instances: Sequence[AuthInstance], now: Callable[[], float]
) -> tuple[list[CorpCheck], str]:
    """gettoken, fresh, for every authorization the store holds (every suite)."""
    from qywx_cli.core.retry import open_existing_store

    try:
        store = open_existing_store(settings)
    except QywxError:
        # The instances' database check already says what is wrong with it.
        return [], "no corp checked: the database cannot be read (see the database check)"
    checks: list[CorpCheck] = []
    with store, WeComClient(store, base_url=settings.api_base, now=now, retries=1) as client:
        try:
            auths = store.list_corp_auths()
        except SecretKeyError as exc:  # the permanent codes are sealed with a key not set
            return [], f"no corp checked: {exc.message}"
        except _UNREADABLE as exc:  # see _reading
            why = exc.message if isinstance(exc, StoreError) else type(exc).__name__
            return [], f"no corp checked: cannot read the authorizations: {why[:200]}"
        for auth in auths:
            serving = tuple(sorted(i.name for i in instances if i.suite_id == auth.suite_id))
            check = partial(CorpCheck, auth.corp_id, auth.corp_name, auth.suite_id, serving)
            if not auth.is_active:
                checks.append(
                    check(
                        ok=True,
                        skipped=True,
                        detail=f"skipped: authorization {auth.state}, no permanent code held",
                    )
                )
                continue
            if not auth.permanent_code:
                checks.append(
                    check(
                        ok=False,
                        detail="no permanent code held: its AuthCode was never exchanged",
                        fix=GETTOKEN_FIXES[40084],
                    )
                )
                continue
            try:
                got = client.obtain_corp_token(auth.corp_id, auth.permanent_code, fresh=True)
            except WeComAPIError as exc:
                checks.append(
                    check(
                        ok=False,
                        detail=_refusal(exc),
                        fix=gettoken_fix(exc.errcode),
                        errcode=exc.errcode,
                    )
                )
            except QywxError as exc:
                checks.append(
                    check(
                        ok=False,
                        detail=exc.message,
                        fix=gettoken_fix(None),
                    )
                )
            else:
                left = max(0, int(got.expires_at - now()))
                checks.append(
                    check(
                        ok=True,
                        detail=f"gettoken ok: a corp token valid {left} s, cached",
                    )
                )
    return checks, "" if checks else "no corp has authorized a suite yet"
