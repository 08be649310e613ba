"""``qywx db …``: what the database holds (info), its schema (upgrade), and moving a
deployment from one database to another (copy), on SQLite and PostgreSQL alike.

URLs are printed without their password, whatever was typed.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from qywx_cli.cli._errors import EXIT_OK
from qywx_cli.cli._output import Format, emit_json, note, table
from qywx_cli.cli._state import globals_of


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def db_info(
    ctx: typer.Context, fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text
) -> int:
    """Backend, schema version, rows per table and size of the database (--db)."""
    from qywx_cli.core.store.maintenance import db_info as info_of

    info = info_of(globals_of(ctx).settings().db_path)
    if fmt is Format.json:
        emit_json(
            {
                "backend": info.backend,
                "url": info.url,
                "schema_version": info.schema_version,
                "latest_schema_version": info.latest_schema_version,
                "counts": info.counts,
                "size_bytes": info.size_bytes,
                "secrets": None
                if info.secrets is None
                else {"plaintext": info.secrets.plaintext, "by_key": info.secrets.by_key},
            }
        )
        return EXIT_OK
    print(f"{info.backend} database {info.url}")
    print(
        f"schema v{info.schema_version} (this qywx: v{info.latest_schema_version}), "
        f"{_size(info.size_bytes)}"
    )
    if info.secrets is not None:
        print(f"secrets at rest: {_secrets_line(info.secrets.plaintext, info.secrets.by_key)}")
    if info.schema_version < info.latest_schema_version:
        note(
            f"schema v{info.schema_version} is older than this qywx's: `qywx db upgrade` "
            f"migrates it to v{info.latest_schema_version} (as any other command that opens it "
            "does); rows are counted once it is current"
        )
        return EXIT_OK
    table(None, ["table", "rows"], [[t, n] for t, n in info.counts.items()])
    return EXIT_OK


def _secrets_line(plaintext: int, by_key: dict[str, int]) -> str:
    parts = [f"{n} encrypted (key id {kid})" for kid, n in by_key.items()]
    if plaintext or not parts:
        parts.insert(0, f"{plaintext} plaintext")
    return ", ".join(parts)


def db_gen_key(fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text) -> int:
    """Print a new secret key (32 random bytes, base64url) for QYWX_SECRET_KEY.

    export QYWX_SECRET_KEY=$(qywx db gen-key), keep a copy where backups are not, then
    run `qywx db rotate-key` to encrypt what the database already holds.
    """
    from qywx_cli.core.sealing import SecretKey, generate_key

    key = generate_key()
    if fmt is Format.json:
        emit_json({"key": key, "key_id": SecretKey.parse(key).kid})
    else:
        print(key)
    return EXIT_OK


def db_rotate_key(
    ctx: typer.Context,
    old_key_env: Annotated[
        str | None,
        typer.Option(
            "--old-key-env",
            metavar="VAR",
            help="The environment variable holding the previous key "
            "(default: QYWX_OLD_SECRET_KEY, when set).",
        ),
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text,
) -> int:
    """Encrypt every permanent code and cached token with QYWX_SECRET_KEY, in one transaction.

    The first run after setting a key encrypts the rows written without one; with the
    previous key given it re-encrypts the rows of that key. Safe to run again.
    """
    from qywx_cli.core.store import display_target
    from qywx_cli.core.store.maintenance import rotate_key

    settings = globals_of(ctx).settings()
    done = rotate_key(settings.db_path, settings.secret_keys, old_key_env=old_key_env)
    if fmt is Format.json:
        emit_json(
            {
                "url": display_target(settings.db_path),
                "key_id": done.key_id,
                "encrypted": done.sealed,
                "reencrypted": done.rekeyed,
                "unchanged": done.unchanged,
                "old_copies_left": done.old_copies_left,
            }
        )
    else:
        print(
            f"{display_target(settings.db_path)}: key id {done.key_id}: {done.sealed} "
            f"plaintext secret(s) encrypted, {done.rekeyed} re-encrypted from an older key, "
            f"{done.unchanged} already current"
        )
    if done.old_copies_left:
        note(
            "qywx: warning: another process was reading the database, so SQLite kept the "
            "replaced values in the file and its -wal until its next checkpoint; run "
            "`qywx db rotate-key` again once nothing else has it open (qywx serve stopped) "
            "to clear them"
        )
    return EXIT_OK


def db_upgrade(
    ctx: typer.Context, fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text
) -> int:
    """Migrate the database (--db) to this qywx's schema; a newer schema is refused."""
    from qywx_cli.core.store import display_target
    from qywx_cli.core.store.maintenance import upgrade

    target = globals_of(ctx).settings().db_path
    before, after = upgrade(target)
    if fmt is Format.json:
        emit_json({"url": display_target(target), "from": before, "to": after})
    elif before == after:
        print(f"{display_target(target)}: schema v{after}, already current")
    else:
        print(f"{display_target(target)}: schema v{before} → v{after}")
    return EXIT_OK


def db_copy(
    source: Annotated[
        str, typer.Option("--from", help="The database to copy: a SQLite file or a URL.")
    ],
    destination: Annotated[
        str, typer.Option("--to", help="Where to: a postgresql:// URL (or a SQLite file).")
    ],
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text,
) -> int:
    """Copy every row to another database: idempotent, resumable, counts verified.

    Stop the servers writing to --from before the last run.
    """
    from qywx_cli.core.store.maintenance import copy_store

    if fmt is Format.json or not sys.stderr.isatty():
        report = copy_store(source, destination)
    else:
        from rich.progress import Progress

        from qywx_cli.cli._output import console

        with Progress(console=console(stderr=True), transient=True) as bar:
            tasks: dict[str, object] = {}

            def progress(name: str, done: int, total: int) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=max(total, 1))
                bar.update(tasks[name], completed=done)  # type: ignore[arg-type]

            report = copy_store(source, destination, progress=progress)
    if fmt is Format.json:
        emit_json(
            {
                "from": report.source,
                "to": report.destination,
                "copied": report.copied,
                "counts": report.counts,
                "verified": True,
            }
        )
        return EXIT_OK
    print(f"copied {report.source} → {report.destination}; row counts verified")
    table(
        None,
        ["table", "rows", "new this run"],
        [[t, report.counts[t], report.copied[t]] for t in report.counts],
    )
    return EXIT_OK


def register(app: typer.Typer) -> None:
    db = typer.Typer(
        name="db",
        help="The database: info, upgrade (migrations), copy (e.g. SQLite → PostgreSQL), "
        "gen-key and rotate-key (secrets at rest).",
        no_args_is_help=True,
    )
    db.command("info")(db_info)
    db.command("upgrade")(db_upgrade)
    db.command("copy")(db_copy)
    db.command("gen-key")(db_gen_key)
    db.command("rotate-key")(db_rotate_key)
    app.add_typer(db, name="db")
