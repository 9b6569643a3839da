"""What a ``DATABASE_URL`` says, checked without connecting and without ever
repeating its password.

A URL holds a credential, so neither an error nor a log line shows it: they
show :attr:`DatabaseUrl.target` (``host:port/database``) instead. Parsing is
libpq's own (through psycopg), so anything accepted here is what the server
connection will use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["DEFAULT_PORT", "DatabaseNotReady", "DatabaseUrl", "InvalidDatabaseUrl", "SCHEMES"]

#: The URL schemes libpq accepts ("postgresql://" and "postgres://", libpq-connect.html).
SCHEMES = ("postgresql", "postgres")

#: libpq's port when the URL names none.
DEFAULT_PORT = 5432


class DatabaseNotReady(RuntimeError):
    """The database of ``DATABASE_URL`` can't be used: unreachable, refusing
    the login, or its schema behind. The message names ``DATABASE_URL`` and
    the host, never the password. (Defined here, beside the URL, so callers
    can catch it without loading the driver.)"""


class InvalidDatabaseUrl(ValueError):
    """``DATABASE_URL`` is not a PostgreSQL URL we can use; the message never
    contains the password."""


@dataclass(frozen=True)
class DatabaseUrl:
    """A checked ``postgresql://`` URL. Its repr and str hide the password."""

    #: The whole URL, password included: hand it to the driver, never to a log.
    secret: str = field(repr=False)
    host: str
    port: int
    database: str

    @property
    def target(self) -> str:
        """``host:port/database``: how errors and logs name the server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}/{self.database}"

    def __str__(self) -> str:
        return f"postgresql://{self.target}"

    @classmethod
    def parse(cls, url: str) -> DatabaseUrl:
        """Check ``url``; raise :class:`InvalidDatabaseUrl` saying what is wrong
        (naming the host when one can be read, never the password)."""
        # Imported here: settings (which every web process loads) stay free of
        # the driver's import cost unless a database is configured.
        from psycopg import conninfo

        scheme = url.partition("://")[0] if "://" in url else ""
        if scheme not in SCHEMES:
            raise InvalidDatabaseUrl(
                "expected postgresql://user:password@host:port/database"
                + (f", not a {scheme}:// URL" if scheme else ""))
        host = _host_of(url)
        where = f" (host {host})" if host else ""
        try:
            options = conninfo.conninfo_to_dict(url)
        except Exception:  # libpq's message may quote the password: it is not passed on
            raise InvalidDatabaseUrl(
                "libpq cannot parse it; check its port and percent-encoding (a password with"
                f" @, : or / needs them encoded as %40, %3A, %2F){where}") from None
        host = str(options.get("host") or options.get("hostaddr") or "")
        if not host:
            raise InvalidDatabaseUrl("names no host: expected postgresql://user:password@"
                                     "host:port/database")
        if "," in host:
            raise InvalidDatabaseUrl(f"names several hosts ({host}); give one")
        if host.startswith("/"):
            raise InvalidDatabaseUrl(f"names a unix socket ({host}); give a TCP host")
        port_text = str(options.get("port") or DEFAULT_PORT)
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise InvalidDatabaseUrl(f"port must be 1-65535 (host {host})")
        database = str(options.get("dbname") or options.get("user") or "")
        if not database:
            raise InvalidDatabaseUrl(f"names no database (host {host})")
        return cls(secret=url, host=host, port=int(port_text), database=database)


def _host_of(url: str) -> str:
    """The host part of the URL for error messages, or "" when it can't be read."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""
