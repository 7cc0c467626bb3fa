"""A private PostgreSQL server for the PostgreSQL store tests: the machine's own server binaries
(Debian's `postgresql` package: `make test` installs it with scripts/postgres-test-env.sh when
`initdb` is missing), a cluster made by `initdb` in a temporary directory and started by `pg_ctl`
on a free port of 127.0.0.1, TCP only, without durability (fsync off: the cluster is thrown away
at the end).

PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` system user
when there is one (the Debian package makes it), else to `botsched-pg`, made here with useradd.
The tests connect with a password (scram-sha-256) as `botsched_test`, which owns the database
`botsched_test`; each store gets a schema of its own (`fresh_url`), so no test sees another's
rows.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.processes import free_port

INSTALL_HINT = "run `bash scripts/postgres-test-env.sh install` (Debian's postgresql package)"
START_TIMEOUT = 60
SERVICE_USERS = ("postgres", "botsched-pg")  # as root: the first that exists, else the last
ADMIN = "botsched_admin"
USER = "botsched_test"
DATABASE = "botsched_test"
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
}


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries (or psycopg) are not installed."""


@dataclass
class PostgresEnv:
    """A running private server, the role the tests use, and how to reach it."""

    host: str
    port: int
    password: str = field(repr=False)
    admin_password: str = field(repr=False)
    base: Path
    bin_dir: Path
    run_as: str | None
    started_in: float
    log: Path | None = None  # the server's log file (pg_ctl -l)
    _admin: Any = field(default=None, repr=False)

    def url(self, *, password: str | None = None, database: str = DATABASE, **options: str) -> str:
        """The tests' role's URL; `options` become query parameters (application_name=...)."""
        secret = quote(self.password if password is None else password, safe="")
        query = "&".join(f"{key}={quote(value, safe='')}" for key, value in options.items())
        url = f"postgresql://{USER}:{secret}@{self.host}:{self.port}/{database}"
        return f"{url}?{query}" if query else url

    def fresh_database(self, **options: str) -> str:
        """A new, empty database that the tests' role owns (and so its `public` schema, on
        PostgreSQL 15); its URL."""
        name = "d_" + uuid.uuid4().hex[:16]
        with self.admin_connection("postgres") as admin:
            admin.execute(f"CREATE DATABASE {name} OWNER {USER}")
        return self.url(database=name, **options)

    def restart(self, down: float = 0.0) -> float:
        """`pg_ctl restart -m fast`: every connection is dropped (the clients see the server
        go away), the data is kept, the port stays. With `down`, stop, stay down that many
        seconds (every call fails meanwhile), then start. The seconds it took."""
        started = time.monotonic()
        log = ["-l", str(self.log)] if self.log else []
        wait = ["-w", "-t", str(START_TIMEOUT)]
        if down <= 0:
            self._pg_ctl("restart", "-m", "fast", *wait, *log)
        else:
            self._pg_ctl("stop", "-m", "fast", *wait)
            time.sleep(down)
            self._pg_ctl("start", *wait, *log)
        return time.monotonic() - started

    def fresh_schema(self) -> str:
        """A new, empty schema that the tests' role owns."""
        schema = "t_" + uuid.uuid4().hex[:16]
        self.execute(f"CREATE SCHEMA {schema} AUTHORIZATION {USER}")
        return schema

    def fresh_url(self, **options: str) -> str:
        """A URL whose connections work in a fresh schema (search_path), so a store opened on it
        starts empty."""
        return self.url(options=f"-c search_path={self.fresh_schema()}", **options)

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run `sql` as the server's superuser, in the tests' database; its rows, if any. A
        connection the server dropped (a restart) is made again."""
        import psycopg

        for attempt in range(2):
            if self._admin is None or self._admin.closed or self._admin.broken:
                self._admin = self.admin_connection(DATABASE)
            try:
                cursor = self._admin.execute(sql, params or None)
            except psycopg.OperationalError:
                if attempt or not self._admin.broken:
                    raise
                continue
            return list(cursor.fetchall()) if cursor.description else []
        raise AssertionError("unreachable")

    def admin_connection(self, database: str) -> Any:
        """A new psycopg connection (autocommit) as the server's superuser."""
        import psycopg

        return psycopg.connect(
            host=self.host, port=self.port, dbname=database, user=ADMIN,
            password=self.admin_password, autocommit=True, application_name="botsched-tests",
        )  # fmt: skip

    def stop(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._pg_ctl("stop", "-m", "immediate", "-w", "-t", "30")
        shutil.rmtree(self.base, ignore_errors=True)

    def _pg_ctl(self, *args: str) -> None:
        command = [str(self.bin_dir / "pg_ctl"), "-D", str(self.base / "data"), *args]
        _run(command, self.run_as, timeout=START_TIMEOUT + 10)


def bin_dir() -> Path:
    """Where initdb, pg_ctl and postgres are: $POSTGRES_BIN, PATH, or Debian's newest
    /usr/lib/postgresql/<version>/bin."""
    configured = os.environ.get("POSTGRES_BIN")
    candidates = [Path(configured)] if configured else []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted((Path(p) for p in versions), key=_version, reverse=True)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise PostgresUnavailable(f"the PostgreSQL server is not installed; {INSTALL_HINT}")


def _version(path: Path) -> float:
    try:
        return float(path.parent.name)
    except ValueError:
        return 0.0


def service_user() -> str | None:
    """The user the server runs as: None (this one) unless this is root."""
    if os.geteuid() != 0:
        return None
    for name in SERVICE_USERS:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    name = SERVICE_USERS[-1]
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True, capture_output=True,
    )  # fmt: skip
    return name


def _run(command: list[str], run_as: str | None, timeout: float) -> None:
    """Run a server command as `run_as` (runuser, from root) or as this user; RuntimeError with
    its output when it fails."""
    full = ["runuser", "-u", run_as, "--", *command] if run_as else command
    done = subprocess.run(
        full, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd="/"
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-2000:]
        raise RuntimeError(f"{' '.join(command[:2])} failed ({done.returncode}): {output}")


def _make_base(run_as: str | None) -> Path:
    """A private directory the server's user owns (outside pytest's root-only tmp tree)."""
    base = Path(tempfile.mkdtemp(prefix="botsched-pg-"))
    if run_as:
        user = pwd.getpwnam(run_as)
        os.chown(base, user.pw_uid, user.pw_gid)
    return base


def _initdb(bins: Path, base: Path, run_as: str | None, admin_password: str) -> None:
    pwfile = base / "pwfile"
    pwfile.write_text(admin_password + "\n")
    if run_as:
        user = pwd.getpwnam(run_as)
        os.chown(pwfile, user.pw_uid, user.pw_gid)
    pwfile.chmod(0o600)
    command = [
        str(bins / "initdb"), "-D", str(base / "data"), "-U", ADMIN, f"--pwfile={pwfile}",
        "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "--encoding=UTF8",
        "--locale=C", "--no-sync",
    ]  # fmt: skip
    _run(command, run_as, timeout=120)
    pwfile.unlink()


def _configure(base: Path, port: int, settings: dict[str, str]) -> None:
    lines = [f"port = {port}", *(f"{name} = {value}" for name, value in settings.items())]
    with (base / "data" / "postgresql.conf").open("a") as conf:
        conf.write("\n" + "\n".join(lines) + "\n")


def start_postgres(attempts: int = 3, settings: dict[str, str] | None = None) -> PostgresEnv:
    """initdb, start on a free loopback port and make the tests' role and database; `settings`
    (postgresql.conf lines) override SETTINGS. Raises PostgresUnavailable when the server or
    psycopg is not installed, RuntimeError (with the server's log) when it does not come up."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise PostgresUnavailable("psycopg is missing: pip install -e '.[postgres]'") from None
    bins = bin_dir()
    run_as = service_user()
    base = _make_base(run_as)
    admin_password = secrets.token_hex(16)
    started = time.monotonic()
    try:
        _initdb(bins, base, run_as, admin_password)
        env = _start(bins, base, run_as, admin_password, attempts, {**SETTINGS, **(settings or {})})
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    env.started_in = time.monotonic() - started
    with env.admin_connection("postgres") as admin:  # the password is hex: safe to inline
        admin.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{env.password}'")
        admin.execute(f"CREATE DATABASE {DATABASE} OWNER {USER}")
    return env


def _start(
    bins: Path,
    base: Path,
    run_as: str | None,
    admin_password: str,
    attempts: int,
    settings: dict[str, str],
) -> PostgresEnv:
    error = "PostgreSQL did not start"
    for attempt in range(attempts):  # another process may take the free port first
        port = free_port()
        _configure(base, port, settings)
        log = base / f"server-{attempt}.log"
        if run_as:
            log.touch()
            user = pwd.getpwnam(run_as)
            os.chown(log, user.pw_uid, user.pw_gid)
        env = PostgresEnv(
            "127.0.0.1", port, secrets.token_hex(16), admin_password, base, bins, run_as, 0.0
        )
        env.log = log
        try:
            env._pg_ctl("-l", str(log), "-w", "-t", str(START_TIMEOUT), "start")
            return env
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            error = f"{exc}; log: {log.read_text(errors='replace')[-2000:]}"
            with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
                env._pg_ctl("stop", "-m", "immediate", "-w")
    raise RuntimeError(error)
