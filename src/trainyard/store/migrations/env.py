"""Alembic environment: runs on the connection that trainyard.store.migrate passes in.

There is no offline (SQL script) mode and no URL in a config file: the store decides where the
database is, and migrations always run against it.
"""

from alembic import context

from trainyard.store.models import VERSION_TABLE, Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "trainyard migrations run through trainyard.store.migrate, which passes a connection "
        "in config.attributes['connection']"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    # Prefixed like our tables, so Optuna's storage (its own `trials`, `alembic_version`)
    # can share the database.
    version_table=VERSION_TABLE,
)

with context.begin_transaction():
    context.run_migrations()
