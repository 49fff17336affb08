"""Alembic environment: migrate the schema named by DB_SCHEMA.

The schema is created when missing, and Alembic's version table lives in it,
so several hubs (or test runs) can share one database.
"""

from alembic import context
from sqlalchemy import text

from shared.db import create_engine_for
from shared.settings import load_settings

settings = load_settings()
engine = create_engine_for(settings.database_url, settings.db_schema, pool_size=1)

with engine.connect() as connection:
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{settings.db_schema}"'))
    connection.commit()

    context.configure(
        connection=connection,
        version_table_schema=settings.db_schema,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()

engine.dispose()
