"""Schema migrations, run from code: the package ships no alembic.ini.

`open_store` calls `upgrade_to_head`, so any process that opens a store brings it to the current
schema. The upgrade holds a lock for its whole duration (SQLite: BEGIN IMMEDIATE; PostgreSQL: an
advisory lock), so processes opening a fresh store at the same moment migrate it once, one after
the other.

To write a new migration from a source checkout::

    with engine.connect() as connection:
        command.revision(alembic_config(connection), message="...", autogenerate=True)
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from trainyard.errors import TrainyardError
from trainyard.store.models import VERSION_TABLE

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
"""Found next to this file, so migrations also run from an installed wheel."""

POSTGRESQL_MIGRATION_LOCK = 0x7472_6179  # "tray": any constant; advisory locks are per database


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for our migrations; env.py runs them on `connection`."""
    config = Config()
    # Config values go through configparser interpolation, where "%" is special.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest revision shipped with this package."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade_to_head(engine: Engine) -> None:
    """Apply every migration the database lacks.

    A current database is only read: opening a store then takes no write lock and scans
    nothing, however many processes open it.
    """
    if current_revision(engine) == head_revision():
        return
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            _upgrade_sqlite(connection)
        else:
            _upgrade_postgresql(connection)


def _upgrade_postgresql(connection: Connection) -> None:
    """Upgrade in one transaction that first takes an advisory lock, held until it commits.

    Without it, processes opening a fresh database at once each ran the migrations in their
    own transaction: all but one failed ("relation ... does not exist", duplicate tables) or
    waited on each other's uncommitted tables. Alembic reads the version after the lock is
    granted, so the processes that waited find the schema current and change nothing.
    """
    with connection.begin():
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRESQL_MIGRATION_LOCK}
        )
        command.upgrade(alembic_config(connection), "head")


def _upgrade_sqlite(connection: Connection) -> None:
    """Upgrade in one locked transaction with foreign keys off.

    Batch migrations rebuild a table by copying and dropping it; with foreign keys on, the drop
    would cascade deletes into the child tables. Keys are checked before committing instead.
    The PRAGMA has no effect inside a transaction, so it is set before BEGIN.
    """
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    try:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        command.upgrade(alembic_config(connection), "head")
        violations = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
        if violations:
            raise TrainyardError(
                f"migrating {connection.engine.url} would break {len(violations)} foreign "
                f"key(s), first {tuple(violations[0])}; the database was left unchanged"
            )
        connection.commit()
    except BaseException:
        connection.rollback()
        raise
    finally:
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()


def current_revision(engine: Engine) -> str | None:
    """The applied revision, or None for a database never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()
