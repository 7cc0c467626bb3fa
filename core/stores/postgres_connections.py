"""The PostgreSQL store's connections: psycopg 3 (async), imported on first use only, a pool of
autocommit connections, and errors that never show the password of DATABASE_URL.

`DATABASE_URL` is a libpq connection string (`postgresql://user:password@host:5432/db?...`, or
`key=value` pairs), handed to libpq as it is: its TLS options (`sslmode`, `sslrootcert`, ...) and
any other parameter work as libpq documents them. Two are added only when the URL does not set
them: `connect_timeout` (CONNECT_TIMEOUT_SECONDS) and `application_name` (`botsched`).

A connection that cannot be made at start-up (a wrong password, a host that does not answer) is
a one-line ConfigError naming the server with its password masked. Once open, the pool checks a
connection before lending it and replaces the ones that broke, so a dropped connection costs at
most the call that was on it: that call raises psycopg's OperationalError (the server restarted,
the network dropped), which the scheduler treats as any failed store call, one to try again.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from core.errors import ConfigError

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

CONNECT_TIMEOUT_SECONDS = 10  # a host that does not answer fails the start within this
POOL_WAIT_SECONDS = 10.0  # how long a call waits for a free (or new) connection
APPLICATION_NAME = "botsched"
INSTALL_HINT = "install it with: pip install 'bot-scheduler[postgres]'"
_PASSWORD_PAIR = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_PASSWORD_PARAMETER = re.compile(r"((?:^|&)password=)([^&]*)", re.IGNORECASE)
# a URI's user info, from `scheme://` to its last `@` before any `?` (libpq stops at a `/`, but
# a password written with one is still a password to hide)
_USER_INFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^?]*)@")


def redact(url: str) -> str:
    """The URL (or key=value string) with its password replaced by `***`, wherever it is:
    in the user info or in a `password` parameter."""
    if "://" not in url:
        return _PASSWORD_PAIR.sub(r"\1***", url)
    match = _USER_INFO.match(url)
    if match and ":" in match.group(2):
        user = match.group(2).partition(":")[0]
        url = f"{match.group(1)}{user}:***@{url[match.end() :]}"
    base, mark, query = url.partition("?")
    return base + mark + _PASSWORD_PARAMETER.sub(r"\1***", query)


def clean_message(error: BaseException, url: str) -> str:
    """The error's message on one line, without the URL's password anywhere in it."""
    text = " ".join(str(error).split()) or type(error).__name__
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


def _secrets(url: str) -> list[str]:
    """Every spelling of the password the URL holds (as written, and decoded), longest first."""
    if "://" not in url:
        found = [match.group(2).strip("'") for match in _PASSWORD_PAIR.finditer(url)]
    else:
        match = _USER_INFO.match(url)
        found = [match.group(2).partition(":")[2]] if match else []
        query = url.partition("?")[2]
        found += [pair.group(2) for pair in _PASSWORD_PARAMETER.finditer(query)]
    found += [unquote(secret) for secret in found]
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def driver() -> tuple[ModuleType, ModuleType]:
    """psycopg and psycopg_pool, imported now (never at the import of a store module)."""
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        raise ConfigError(
            f"the postgres store needs psycopg, which is missing; {INSTALL_HINT}"
        ) from None
    return psycopg, psycopg_pool


def connect_options(url: str) -> dict[str, Any]:
    """What each connection adds to the URL: autocommit, and the defaults it does not set."""
    psycopg, _ = driver()
    try:
        given = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        message = clean_message(exc, url)
        raise ConfigError(f"DATABASE_URL is not a libpq connection string: {message}") from None
    options: dict[str, Any] = {"autocommit": True}
    if "connect_timeout" not in given:
        options["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    if "application_name" not in given:
        options["application_name"] = APPLICATION_NAME
    return options


def connection_error(error: BaseException, url: str) -> ConfigError:
    return ConfigError(
        f"cannot connect to PostgreSQL at {redact(url)}: {clean_message(error, url)}; "
        "check DATABASE_URL"
    )


@asynccontextmanager
async def connection(url: str) -> AsyncIterator[AsyncConnection[Any]]:
    """One connection for the block (start-up checks, migrations); ConfigError when it cannot
    be made."""
    psycopg, _ = driver()
    options = connect_options(url)
    try:
        conn = await psycopg.AsyncConnection.connect(url, **options)
    except psycopg.Error as exc:
        raise connection_error(exc, url) from None
    try:
        yield conn
    finally:
        await conn.close()


async def open_pool(url: str, size: int) -> AsyncConnectionPool[Any]:
    """A pool of up to `size` autocommit connections, one of them made before this returns
    (ConfigError when it cannot be)."""
    psycopg, psycopg_pool = driver()
    pool: AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
        url,
        kwargs=connect_options(url),
        min_size=1,
        max_size=size,
        open=False,
        check=psycopg_pool.AsyncConnectionPool.check_connection,
        timeout=POOL_WAIT_SECONDS,
        name="botsched",
    )
    try:
        await pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS + POOL_WAIT_SECONDS)
    except psycopg.Error as exc:
        await pool.close()
        raise connection_error(exc, url) from None
    return pool
