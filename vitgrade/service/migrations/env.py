"""Alembic's environment: the URL comes from the caller (db.migrate), the metadata from db.py."""

from alembic import context
from sqlalchemy import create_engine

from vitgrade.service.db import Base

url = context.config.get_main_option("sqlalchemy.url") or ""
if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    with create_engine(url).connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
