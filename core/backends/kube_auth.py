"""Where the Kubernetes API server is and how the scheduler proves who it is.

Two sources, tried in this order by `load_cluster`:

- in-cluster: `KUBERNETES_SERVICE_HOST` / `KUBERNETES_SERVICE_PORT` and the pod's service account
  under /var/run/secrets/kubernetes.io/serviceaccount (`token`, `ca.crt`, `namespace`). The token
  is a projected one that the kubelet rotates (about hourly), so `TokenFile` re-reads it when the
  file changes, at least every minute, and once more when the server answers 401.
- kubeconfig: `KUBECONFIG` (the first existing file of a `:`-separated list) or ~/.kube/config,
  at its current-context: the cluster's `server`, `certificate-authority(-data)` and
  `insecure-skip-tls-verify`; the user's `token` / `tokenFile` and
  `client-certificate(-data)` + `client-key(-data)`, loaded into an ssl context. `exec` plugins
  and `auth-provider` are not supported (they run cloud CLIs): a ConfigError says so.

A kubeconfig written as JSON (`kubectl config view --raw -o json`) is read with the standard
library; YAML needs PyYAML (the `kubernetes` extra), imported only then.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import json
import os
import ssl
import tempfile
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from core.errors import BackendError, ConfigError

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_MAX_AGE = 60.0
EXTRA_HINT = "pip install 'bot-scheduler[kubernetes]'"


class TokenSource(Protocol):
    def get(self, refresh: bool = False) -> str: ...


class StaticToken:
    def __init__(self, token: str) -> None:
        self._token = token

    def get(self, refresh: bool = False) -> str:
        return self._token

    def __repr__(self) -> str:
        return "StaticToken(<hidden>)"


class TokenFile:
    """A bearer token kept in a file, re-read when the file changes (the kubelet swaps a symlink
    to rotate it), when it is older than `max_age` seconds, or when asked to refresh."""

    def __init__(
        self,
        path: Path,
        max_age: float = TOKEN_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.max_age = max_age
        self.clock = clock
        self._token: str | None = None
        self._seen: tuple[int, int, int] | None = None
        self._read_at = 0.0

    def get(self, refresh: bool = False) -> str:
        seen = _signature(self.path)
        stale = self.clock() - self._read_at >= self.max_age
        if self._token is None or refresh or stale or seen != self._seen:
            try:
                self._token = self.path.read_text().strip()
            except OSError as exc:
                raise BackendError(
                    f"cannot read the token file {self.path}: {exc.strerror}"
                ) from exc
            self._seen, self._read_at = seen, self.clock()
        return self._token

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r})"


class BearerAuth(httpx.Auth):
    """`Authorization: Bearer <token>`; after a 401 the token is re-read and, if it changed (it
    was rotated meanwhile), the request is sent once more."""

    def __init__(self, token: TokenSource) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._token.get()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            fresh = self._token.get(refresh=True)
            if fresh != token:
                request.headers["Authorization"] = f"Bearer {fresh}"
                yield request


@dataclass(frozen=True)
class Cluster:
    """An API server, how to trust it and how to authenticate to it."""

    server: str
    verify: ssl.SSLContext | bool = True
    token: TokenSource | None = field(default=None, repr=False)
    namespace: str | None = None
    source: str = "explicit settings"

    def client(
        self, timeout: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.server,
            verify=self.verify,
            auth=BearerAuth(self.token) if self.token else None,
            timeout=timeout,
            transport=transport,
            headers={"Accept": "application/json"},
        )


def load_cluster(
    env: Mapping[str, str] | None = None, service_account_dir: Path = SERVICE_ACCOUNT_DIR
) -> Cluster:
    """In-cluster when running in a pod with a service account token, else the kubeconfig."""
    env = os.environ if env is None else env
    if env.get("KUBERNETES_SERVICE_HOST") and (service_account_dir / "token").is_file():
        return in_cluster(env, service_account_dir)
    path = kubeconfig_path(env)
    if path is None:
        raise ConfigError(
            "PLATFORM=kubernetes found no cluster: not in a pod (KUBERNETES_SERVICE_HOST and a "
            "service account token) and no kubeconfig (KUBECONFIG or ~/.kube/config)"
        )
    return from_kubeconfig(path)


def in_cluster(env: Mapping[str, str], service_account_dir: Path) -> Cluster:
    host = env["KUBERNETES_SERVICE_HOST"]
    port = env.get("KUBERNETES_SERVICE_PORT") or "443"
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    ca = service_account_dir / "ca.crt"
    verify = _context(cafile=str(ca), where=str(ca)) if ca.is_file() else True
    namespace_file = service_account_dir / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.is_file() else None
    return Cluster(
        server=f"https://{host}:{port}",
        verify=verify,
        token=TokenFile(service_account_dir / "token"),
        namespace=namespace or None,
        source="the in-cluster service account",
    )


def kubeconfig_path(env: Mapping[str, str]) -> Path | None:
    if env.get("KUBECONFIG"):
        paths = [Path(p).expanduser() for p in env["KUBECONFIG"].split(os.pathsep) if p]
    else:
        home = Path(env["HOME"]) if env.get("HOME") else Path.home()
        paths = [home / ".kube" / "config"]
    return next((path for path in paths if path.is_file()), None)


def from_kubeconfig(path: Path, context: str | None = None) -> Cluster:
    config = _parse(path)
    name = context or config.get("current-context")
    if not name:
        raise ConfigError(f"kubeconfig {path} has no current-context")
    ctx = _named(config, "contexts", name, path)
    cluster = _named(config, "clusters", ctx.get("cluster"), path)
    user = _named(config, "users", ctx.get("user"), path) if ctx.get("user") else {}
    for unsupported in ("exec", "auth-provider"):
        if user.get(unsupported):
            raise ConfigError(
                f"kubeconfig {path}: user {ctx.get('user')!r} authenticates with "
                f"{unsupported!r}, which this backend does not run; use a token or a client "
                "certificate (e.g. a service account token from `kubectl create token`)"
            )
    server = cluster.get("server")
    if not server:
        raise ConfigError(f"kubeconfig {path}: cluster {ctx.get('cluster')!r} has no server")
    return Cluster(
        server=str(server).rstrip("/"),
        verify=_tls(cluster, user, path),
        token=_token(user, path.parent),
        namespace=ctx.get("namespace") or None,
        source=f"kubeconfig {path} (context {name})",
    )


def _parse(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read kubeconfig {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except ValueError:
        data = _yaml(text, path)
    if not isinstance(data, dict):
        raise ConfigError(f"kubeconfig {path} is not a mapping")
    return data


def _yaml(text: str, path: Path) -> Any:
    try:
        yaml = importlib.import_module("yaml")  # optional: only YAML kubeconfigs need it
    except ImportError:
        raise ConfigError(
            f"kubeconfig {path} is YAML, which needs PyYAML: {EXTRA_HINT} "
            "(or write it as JSON: kubectl config view --raw -o json)"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"kubeconfig {path} is not valid YAML: {exc}") from None


def _named(config: dict[str, Any], section: str, name: Any, path: Path) -> dict[str, Any]:
    kind = section.removesuffix("s")
    for entry in config.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(kind)
            return value if isinstance(value, dict) else {}
    raise ConfigError(f"kubeconfig {path} has no {kind} named {name!r}")


def _token(user: dict[str, Any], base: Path) -> TokenSource | None:
    if user.get("token"):
        return StaticToken(str(user["token"]))
    if user.get("tokenFile"):
        return TokenFile(base / str(user["tokenFile"]))
    return None


def _tls(cluster: dict[str, Any], user: dict[str, Any], path: Path) -> ssl.SSLContext:
    base = path.parent
    if _flag(cluster.get("insecure-skip-tls-verify")):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif cluster.get("certificate-authority-data"):
        pem = _decode(cluster["certificate-authority-data"], "certificate-authority-data", path)
        context = _context(cadata=pem.decode("ascii", "replace"), where=str(path))
    elif cluster.get("certificate-authority"):
        ca = base / str(cluster["certificate-authority"])
        context = _context(cafile=str(ca), where=str(ca))
    else:
        context = ssl.create_default_context()
    cert = _pem(user, "client-certificate", path)
    key = _pem(user, "client-key", path)
    if cert and key:
        _load_client_cert(context, cert, key, path)
    elif cert or key:
        raise ConfigError(f"kubeconfig {path}: a client certificate needs both cert and key")
    return context


def _context(*, where: str, cafile: str | None = None, cadata: str | None = None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=cafile, cadata=cadata)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the cluster's CA certificate from {where}: {exc}") from exc


def _pem(user: dict[str, Any], name: str, path: Path) -> bytes | None:
    if user.get(f"{name}-data"):
        return _decode(user[f"{name}-data"], f"{name}-data", path)
    if user.get(name):
        try:
            return (path.parent / str(user[name])).read_bytes()
        except OSError as exc:
            raise ConfigError(f"kubeconfig {path}: cannot read {name}: {exc.strerror}") from exc
    return None


def _load_client_cert(context: ssl.SSLContext, cert: bytes, key: bytes, path: Path) -> None:
    """ssl loads a certificate chain only from files: a private temporary directory, removed
    as soon as the context holds them."""
    with tempfile.TemporaryDirectory(prefix="botsched-kube-") as tmp:
        cert_file, key_file = Path(tmp, "client.crt"), Path(tmp, "client.key")
        for file, data in ((cert_file, cert), (key_file, key)):
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        try:
            context.load_cert_chain(cert_file, key_file)
        except ssl.SSLError as exc:
            raise ConfigError(f"kubeconfig {path}: unusable client certificate/key: {exc}") from exc


def _decode(value: Any, name: str, path: Path) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"kubeconfig {path}: {name} is not base64") from None


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)
