"""PostgreSQL for the architectures whose framework keeps its state in a
database (Airflow, Prefect, Dagster): the option's value, the database each
pytest-xdist worker gets, and the driver each framework talks through."""
from __future__ import annotations

import os

from pytest_mlpbench.architectures.base import Unavailable


def parse_db(text: str) -> str | None:
    """An option value: None for 'sqlite', else a postgresql:// URL."""
    if text == "sqlite":
        return None
    scheme, sep, rest = text.partition("://")
    if scheme.split("+")[0] != "postgresql" or not sep or not rest or " " in text:
        raise ValueError("expected 'sqlite' or postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
    return text


def with_driver(url: str, driver: str) -> str:
    """``url`` as a SQLAlchemy URL for ``driver`` (``postgresql+DRIVER://``)."""
    return f"postgresql+{driver}://" + url.split("://", 1)[1]


def redact(url: str) -> str:
    """A database URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


def worker_database(url: str, worker: str) -> str:
    """The URL of the database ``<database>_<worker>`` on the server of ``url``, created if missing."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"{base.database}_{worker}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}).scalar():
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def session_database(url: str, arch: str, framework: str) -> str:
    """``url``, or under pytest-xdist the worker's own database on its server (two workers'
    frameworks must not share one); :class:`Unavailable` with the reason if none can be made."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    try:
        return worker_database(url, worker)
    except Exception as exc:  # the driver's errors: no server, no CREATEDB privilege...
        raise Unavailable(f"{arch}: under pytest-xdist each worker's {framework} needs a database of its own, "
                          f"and {redact(url)} could not give one: {type(exc).__name__}: {exc}") from None
