"""Alembic environment: always run programmatically by `hitserver.database.upgrade`, which hands
over an open connection inside a transaction (no alembic.ini, no URL here)."""

from __future__ import annotations

from alembic import context

from hitserver.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with hitserver.database.upgrade(), not the alembic CLI")

context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
