"""What can keep the local PostgreSQL from starting, by what the caller must do."""

from __future__ import annotations

__all__ = ["PortTaken", "PostgresNotInstalled", "PostgresNotReady"]


class PostgresNotReady(RuntimeError):
    """The local server did not start, or is not in a state to start."""


class PostgresNotInstalled(PostgresNotReady):
    """PostgreSQL's server binaries (or the account to run them) are missing:
    install them."""


class PortTaken(PostgresNotReady):
    """Something that is not this home's server listens on the port: stop it,
    or pick another port."""
