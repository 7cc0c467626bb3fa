"""How the kubernetes backend finds its API server and authenticates: in-cluster service account
(token re-read as it rotates) and kubeconfig (YAML or JSON; token, client certificate, CA,
insecure-skip-tls-verify). Requests go to the contract fake (tests/k8s_fake.py), which checks the
Authorization header; one test makes a real mutual-TLS handshake on 127.0.0.1.

tls/test-only.crt is a self-signed certificate (CA and leaf, for localhost/127.0.0.1) with its key
test-only.key, made for these tests only; tls/other.key belongs to no certificate.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import pytest

from core.backends.kube_auth import (
    Cluster,
    StaticToken,
    TokenFile,
    from_kubeconfig,
    load_cluster,
)
from core.backends.kubernetes import KubeOptions, KubernetesBackend
from core.config import Settings
from core.errors import BackendError, ConfigError, ExecutionLost
from core.models import ExecutionRef
from tests.k8s_fake import KubeFake
from tests.kubernetes.conftest import NAMESPACE, make_job

TLS = Path(__file__).parent / "tls"
CERT, KEY, OTHER_KEY = TLS / "test-only.crt", TLS / "test-only.key", TLS / "other.key"


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, user: dict[str, Any], cluster: dict[str, Any]) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "work",
        "contexts": [
            {"name": "home", "context": {"cluster": "other", "user": "nobody"}},
            {"name": "work", "context": {"cluster": "main", "user": "me", "namespace": "bots"}},
        ],
        "clusters": [
            {"name": "other", "cluster": {"server": "https://other.test"}},
            {"name": "main", "cluster": cluster},
        ],
        "users": [{"name": "nobody", "user": {}}, {"name": "me", "user": user}],
    }
    path.write_text(json.dumps(config, indent=2))
    return path


def to_yaml(path: Path) -> Path:
    yaml = pytest.importorskip("yaml")
    path.write_text(yaml.safe_dump(json.loads(path.read_text())))
    assert not path.read_text().lstrip().startswith("{")
    return path


def backend_on(fake: KubeFake, settings: Settings, cluster: Cluster) -> KubernetesBackend:
    return KubernetesBackend(settings, cluster, KubeOptions(), transport=fake.transport)


# -- in-cluster ------------------------------------------------------------------------------


@pytest.fixture
def service_account(tmp_path: Path) -> Path:
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("token-one\n")
    (sa / "ca.crt").write_bytes(CERT.read_bytes())
    (sa / "namespace").write_text(NAMESPACE)
    return sa


def rotate(token_file: Path, token: str) -> None:
    """As the kubelet does: a new file swapped in atomically."""
    new = token_file.with_name(".token.new")
    new.write_text(token)
    os.replace(new, token_file)


async def test_in_cluster_auth_follows_token_rotation(
    fake: KubeFake, settings: Settings, service_account: Path
) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    cluster = load_cluster(env, service_account)
    assert cluster.server == "https://10.96.0.1:443" and cluster.namespace == NAMESPACE
    assert isinstance(cluster.verify, ssl.SSLContext)
    assert cluster.verify.get_ca_certs()[0]["subject"] == ((("commonName", "botsched-test"),),)
    assert "token-one" not in repr(cluster)

    backend = backend_on(fake, settings, cluster)
    assert backend.namespace == NAMESPACE  # from the namespace file
    fake.tokens = {"token-one"}
    ref = await backend.start(make_job())

    rotate(service_account / "token", "token-two")
    fake.tokens = {"token-two"}
    assert (await backend.status(ref)).phase == "pending"
    assert fake.auth_headers == ["Bearer token-one", "Bearer token-two"]
    await backend.close()


async def test_a_401_rereads_a_token_rotated_in_place(
    fake: KubeFake, settings: Settings, service_account: Path
) -> None:
    """Same inode, size and mtime (nothing to notice): the 401 makes it re-read and retry."""
    token_file = service_account / "token"
    tokens = TokenFile(token_file, max_age=3600)
    backend = backend_on(
        fake, settings, Cluster(server="https://k.test", token=tokens, namespace=NAMESPACE)
    )
    ref = await backend.start(make_job())

    stat = token_file.stat()
    with token_file.open("r+") as file:
        file.write("token-two\n")  # as long as "token-one\n"
    os.utime(token_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    fake.tokens = {"token-two"}

    assert (await backend.status(ref)).phase == "pending"
    assert fake.auth_headers == ["Bearer token-one", "Bearer token-one", "Bearer token-two"]
    await backend.close()


def test_a_token_file_is_reread_when_it_ages(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("one")
    now = [0.0]
    tokens = TokenFile(token_file, max_age=60, clock=lambda: now[0])
    assert tokens.get() == "one"

    stat = token_file.stat()
    token_file.write_text("two")
    os.utime(token_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    now[0] = 59.0
    assert tokens.get() == "one"
    now[0] = 60.0
    assert tokens.get() == "two"

    token_file.unlink()
    with pytest.raises(BackendError, match="cannot read the token file"):
        tokens.get(refresh=True)


def test_in_cluster_ipv6_and_without_ca(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t")
    cluster = load_cluster({"KUBERNETES_SERVICE_HOST": "fd00::1"}, tmp_path)
    assert cluster.server == "https://[fd00::1]:443"
    assert cluster.verify is True and cluster.namespace is None


def test_no_cluster_anywhere_is_a_config_error(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": "10.0.0.1"}  # but no token
    with pytest.raises(ConfigError, match="found no cluster"):
        load_cluster(env, tmp_path / "no-serviceaccount")


# -- kubeconfig ------------------------------------------------------------------------------


async def test_kubeconfig_yaml_with_a_token(
    fake: KubeFake, settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.crt").write_bytes(CERT.read_bytes())
    cluster_entry = {"server": "https://kube.test:6443/", "certificate-authority": "certs/ca.crt"}
    path = write_kubeconfig(tmp_path / "config", {"token": "kc-token"}, cluster_entry)
    env = {"KUBECONFIG": os.pathsep.join([str(tmp_path / "missing"), str(to_yaml(path))])}

    cluster = load_cluster(env, tmp_path / "no-serviceaccount")
    assert (cluster.server, cluster.namespace) == ("https://kube.test:6443", "bots")
    assert isinstance(cluster.verify, ssl.SSLContext) and cluster.verify.get_ca_certs()
    assert "context work" in cluster.source and "kc-token" not in repr(cluster)

    fake.tokens = {"kc-token"}
    backend = backend_on(fake, settings, cluster)
    await backend.start(make_job())
    assert fake.auth_headers == ["Bearer kc-token"]
    await backend.close()


def test_kubeconfig_in_home_with_a_token_file(tmp_path: Path) -> None:
    kube = tmp_path / ".kube"
    kube.mkdir()
    (kube / "token").write_text("from-file\n")
    write_kubeconfig(kube / "config", {"tokenFile": "token"}, {"server": "https://k.test"})
    cluster = load_cluster({"HOME": str(tmp_path)}, tmp_path / "no-serviceaccount")
    assert isinstance(cluster.token, TokenFile) and cluster.token.get() == "from-file"


def test_kubeconfig_json_with_client_certificate_data(tmp_path: Path) -> None:
    user = {"client-certificate-data": b64(CERT), "client-key-data": b64(KEY)}
    cluster_entry = {"server": "https://127.0.0.1:6443", "certificate-authority-data": b64(CERT)}
    cluster = from_kubeconfig(write_kubeconfig(tmp_path / "config", user, cluster_entry))

    assert cluster.token is None and cluster.namespace == "bots"
    context = cluster.verify
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "botsched-test"),),)]
    assert list(tmp_path.iterdir()) == [tmp_path / "config"]  # no key file left behind
    client = cluster.client(5.0)
    assert "authorization" not in client.headers


def test_a_client_key_that_does_not_match_is_a_config_error(tmp_path: Path) -> None:
    user = {"client-certificate": str(CERT), "client-key": str(OTHER_KEY)}
    path = write_kubeconfig(tmp_path / "config", user, {"server": "https://k.test"})
    with pytest.raises(ConfigError, match="unusable client certificate"):
        from_kubeconfig(path)
    only_cert = write_kubeconfig(
        tmp_path / "c2", {"client-certificate": str(CERT)}, {"server": "x"}
    )
    with pytest.raises(ConfigError, match="needs both"):
        from_kubeconfig(only_cert)


def test_insecure_skip_tls_verify(tmp_path: Path) -> None:
    cluster_entry = {"server": "https://k.test", "insecure-skip-tls-verify": True}
    user = {"token": "secret-token"}
    cluster = from_kubeconfig(write_kubeconfig(tmp_path / "config", user, cluster_entry))
    assert isinstance(cluster.verify, ssl.SSLContext)
    assert cluster.verify.verify_mode == ssl.CERT_NONE and not cluster.verify.check_hostname
    assert isinstance(cluster.token, StaticToken) and "secret" not in repr(cluster.token)


@pytest.mark.parametrize(
    ("user", "cluster_entry", "message"),
    [
        ({"exec": {"command": "aws"}}, {"server": "https://k.test"}, "'exec'"),
        ({"auth-provider": {"name": "gcp"}}, {"server": "https://k.test"}, "'auth-provider'"),
        ({}, {}, "has no server"),
        ({}, {"server": "x", "certificate-authority-data": "%%%"}, "not base64"),
        ({}, {"server": "x", "certificate-authority": "missing.crt"}, "CA certificate"),
    ],
)
def test_unusable_kubeconfigs(
    tmp_path: Path, user: dict[str, Any], cluster_entry: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        from_kubeconfig(write_kubeconfig(tmp_path / "config", user, cluster_entry))


def test_yaml_without_pyyaml_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = to_yaml(write_kubeconfig(tmp_path / "config", {}, {"server": "https://k.test"}))
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"bot-scheduler\[kubernetes\]"):
        from_kubeconfig(path)


def test_a_missing_context_is_named(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", {}, {"server": "https://k.test"})
    with pytest.raises(ConfigError, match="no context named 'nope'"):
        from_kubeconfig(path, context="nope")


# -- a real mutual-TLS handshake -------------------------------------------------------------


async def test_client_certificate_and_ca_in_a_real_handshake(
    tmp_path: Path, settings: Settings
) -> None:
    """The kubeconfig's CA verifies the server and its client certificate is presented: the
    server requires one signed by that same CA."""
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(CERT))
    server_tls.load_cert_chain(CERT, KEY)
    server_tls.verify_mode = ssl.CERT_REQUIRED
    peers: list[Any] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        peers.append(writer.get_extra_info("peercert"))
        body = json.dumps({"kind": "Status", "reason": "NotFound", "code": 404}).encode()
        head = "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    user = {"client-certificate-data": b64(CERT), "client-key-data": b64(KEY)}
    cluster_entry = {"server": f"https://127.0.0.1:{port}", "certificate-authority-data": b64(CERT)}
    cluster = from_kubeconfig(write_kubeconfig(tmp_path / "config", user, cluster_entry))
    backend = KubernetesBackend(settings, cluster, KubeOptions())
    try:
        with pytest.raises(ExecutionLost):
            await backend.status(ExecutionRef(backend="kubernetes", id="botsched-x"))
    finally:
        await backend.close()
        server.close()
        await server.wait_closed()
    assert peers and dict(peers[0]["subject"][0])["commonName"] == "botsched-test"


# -- from settings ---------------------------------------------------------------------------


def test_from_settings_finds_the_kubeconfig(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_kubeconfig(tmp_path / "config", {"token": "t0k"}, {"server": "https://k.test"})
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(path))
    backend = KubernetesBackend.from_settings(settings)
    assert backend.cluster.server == "https://k.test" and backend.namespace == "bots"
    assert backend.options == KubeOptions()  # Settings without K8S_* values: the defaults


def test_options_read_the_k8s_settings() -> None:
    settings = Settings.from_env(
        {
            "K8S_NAMESPACE": "bot-jobs",
            "K8S_TTL_SECONDS_AFTER_FINISHED": "120",
            "K8S_SERVICE_ACCOUNT": "bot",
        }
    )
    assert KubeOptions.from_settings(settings) == KubeOptions("bot-jobs", 120, "bot")
    assert KubeOptions.from_settings(Settings.from_env({})) == KubeOptions()
