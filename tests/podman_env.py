"""A private Podman for the real-container tests: its own configuration, storage, test image and
Docker-compatible API service, all in one temporary directory (see DESIGN.md, "Real parts in
tests"). The machine's own podman configuration, storage and locks are not touched.

The machines the tests run on use cgroup v1 and lack CAP_SYS_RESOURCE, hence runc, cgroupfs, the
vfs storage driver and explicit ulimits no higher than the host's. `scripts/podman-test-env.sh
install` installs podman, runc and busybox-static.
"""

from __future__ import annotations

import io
import os
import resource
import shutil
import struct
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.processes import terminate

INSTALL_HINT = "run `bash scripts/podman-test-env.sh install`"
BOT_IMAGE = "localhost/botsched-test-bot:latest"
# The test bot: a stand-in that reads its config the way the real bot does (stdin, BOT_CONFIG, env)
# and obeys test_exit_code, test_sleep and test_oom from the job's config.
BOT_SCRIPT = b"""#!/bin/sh
config=$(cat)
echo "stdin: $config"
echo "env: MEETING_URL=$MEETING_URL JOB_ID=$JOB_ID BOT_NAME=$BOT_NAME"
echo "BOT_CONFIG_BOT_UUID=$(echo "$BOT_CONFIG" | sed -n 's/.*"bot_uuid": *"\\([^"]*\\)".*/\\1/p')"
pick() { echo "$config" | sed -n "s/.*\\"$1\\": *\\([0-9.]*\\).*/\\1/p"; }
code=$(pick test_exit_code); secs=$(pick test_sleep); oom=$(pick test_oom)
trap 'echo got TERM; exit 143' TERM
if [ -n "$oom" ]; then dd if=/dev/zero of=/dev/null bs=256M count=1 || exit $?; fi
if [ -n "$secs" ]; then echo sleeping; sleep "$secs" & wait $!; fi
echo "done"
exit ${code:-0}
"""
TEST_IMAGE = "localhost/botsched-test:latest"
API_VERSION = "v1.41"
BUSYBOX = Path("/bin/busybox")
START_TIMEOUT = 20.0
# Where podman looks for runc, besides PATH (/usr/sbin is not on a normal user's PATH).
RUNC_PATHS = ("/usr/sbin/runc", "/usr/bin/runc", "/usr/local/bin/runc", "/usr/local/sbin/runc")
ULIMIT_CAP = 4096


class PodmanUnavailable(RuntimeError):
    """Podman, runc or a static busybox is not installed on this machine."""


@dataclass
class PodmanEnv:
    """A running `podman system service` and what a client needs to use it."""

    socket: Path
    docker_host: str
    env: dict[str, str]
    image: str
    bot_image: str
    root: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def api(self) -> str:
        """The versioned API prefix, for paths such as f"{env.api}/containers/json"."""
        return f"/{API_VERSION}"

    def client(self, timeout: float = 30.0) -> httpx.Client:
        """A plain httpx client on the service's socket (the caller closes it)."""
        transport = httpx.HTTPTransport(uds=str(self.socket))
        return httpx.Client(transport=transport, base_url="http://podman", timeout=timeout)

    def podman(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the podman CLI against this environment's storage; raises if it fails."""
        return _podman(self.env, *args, timeout=timeout)

    def stop(self) -> None:
        """Remove every container, then stop the service."""
        try:
            self.podman("rm", "--all", "--force", "--time", "0", timeout=120)
        finally:
            terminate(self.process)


def start_podman(tmp: Path) -> PodmanEnv:
    """Configure a private podman in `tmp`, import the test image and start the API service.

    Raises PodmanUnavailable when podman, runc or a static /bin/busybox is missing, and
    RuntimeError when the service does not come up.
    """
    check_installed()
    tmp.mkdir(parents=True, exist_ok=True)
    env = podman_environment(tmp)
    import_test_image(env, tmp / "image.tar")
    import_test_image(env, tmp / "bot.tar", BOT_IMAGE, extra={"bot": BOT_SCRIPT}, cmd="/bot")

    sock = tmp / "podman.sock"
    if len(os.fsencode(sock)) >= 108:  # sun_path, terminator included
        raise RuntimeError(f"socket path too long for a unix socket: {sock}")
    log_path = tmp / "service.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{sock}"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C aimed at pytest reaches the fixture's teardown, which
            # removes the containers, before the service goes away.
            start_new_session=True,
        )
    pod = PodmanEnv(
        socket=sock,
        docker_host=f"unix://{sock}",
        env=env,
        image=TEST_IMAGE,
        bot_image=BOT_IMAGE,
        root=tmp,
        process=process,
    )
    try:
        _wait_for_ping(pod, log_path)
    except BaseException:
        terminate(process)
        raise
    return pod


def check_installed() -> None:
    """Raise PodmanUnavailable, naming the install script, when something the tests need is
    missing."""
    missing = []
    if shutil.which("podman") is None:
        missing.append("podman")
    if shutil.which("runc") is None and not any(Path(p).is_file() for p in RUNC_PATHS):
        missing.append("runc")
    if not BUSYBOX.is_file():
        missing.append(f"busybox-static ({BUSYBOX})")
    elif not _is_static_elf(BUSYBOX):
        missing.append(f"busybox-static ({BUSYBOX} is dynamically linked)")
    if missing:
        raise PodmanUnavailable(
            f"real-container tests need {', '.join(missing)}: {INSTALL_HINT} "
            "(uses apt-get; needs root or sudo)"
        )


def podman_environment(tmp: Path) -> dict[str, str]:
    """Write containers.conf and storage.conf into `tmp`; return the environment that points
    podman at them."""
    tmp = tmp.resolve()
    dirs = {name: tmp / name for name in ("root", "run", "libpod", "tmp", "xdg")}
    for path in dirs.values():
        path.mkdir(mode=0o700, exist_ok=True)
    nofile = _ulimit(resource.RLIMIT_NOFILE)
    nproc = _ulimit(resource.RLIMIT_NPROC)
    containers_conf = tmp / "containers.conf"
    containers_conf.write_text(
        "[containers]\n"
        # Raising (or keeping) NPROC above what the host allows fails with EPERM without
        # CAP_SYS_RESOURCE, so the containers get limits no higher than the host's.
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        'log_driver = "k8s-file"\n'
        'netns = "host"\n'
        "\n"
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        # Per-boot state and locks of its own: with the default /run/libpod and shared-memory
        # locks, starting this podman could free the locks of the machine's own containers.
        f'tmp_dir = "{dirs["libpod"]}"\n'
        'lock_type = "file"\n'
    )
    storage_conf = tmp / "storage.conf"
    storage = ["[storage]", 'driver = "vfs"']
    storage += [f'runroot = "{dirs["run"]}"', f'graphroot = "{dirs["root"]}"']
    storage_conf.write_text("\n".join(storage) + "\n")
    env = dict(os.environ)
    env.pop("DOCKER_HOST", None)
    env.pop("CONTAINER_HOST", None)
    env.update(
        CONTAINERS_CONF=str(containers_conf),
        CONTAINERS_STORAGE_CONF=str(storage_conf),
        XDG_RUNTIME_DIR=str(dirs["xdg"]),
        TMPDIR=str(dirs["tmp"]),
    )
    return env


def import_test_image(
    env: dict[str, str],
    tar_path: Path,
    image: str = TEST_IMAGE,
    extra: dict[str, bytes] | None = None,
    cmd: str = "/bin/sh",
) -> None:
    """Build the busybox root filesystem (plus `extra` executables) as a tar and `podman import`
    it as `image`, running `cmd` by default."""
    tar_path.write_bytes(busybox_rootfs_tar(extra or {}))
    _podman(
        env,
        "import",
        "--quiet",
        "--change",
        "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        "--change",
        f'CMD ["{cmd}"]',
        str(tar_path),
        image,
        timeout=120,
    )


def busybox_rootfs_tar(extra: dict[str, bytes]) -> bytes:
    """A root filesystem of the static /bin/busybox with a symlink per applet in /bin, and
    /sbin, /usr/bin, /usr/sbin pointing at /bin."""
    listed = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    applets = sorted({name for name in listed if name and "/" not in name} - {"busybox"})

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, kind: bytes, mode: int, target: str = "", data: bytes = b"") -> None:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = mode
            info.uname = info.gname = "root"
            info.linkname = target
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for name, mode in (("bin", 0o755), ("etc", 0o755), ("root", 0o700), ("usr", 0o755)):
            add(name, tarfile.DIRTYPE, mode)
        add("tmp", tarfile.DIRTYPE, 0o1777)
        add("bin/busybox", tarfile.REGTYPE, 0o755, data=BUSYBOX.read_bytes())
        for applet in applets:
            add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, target="busybox")
        add("sbin", tarfile.SYMTYPE, 0o777, target="bin")
        add("usr/bin", tarfile.SYMTYPE, 0o777, target="../bin")
        add("usr/sbin", tarfile.SYMTYPE, 0o777, target="../bin")
        add("etc/passwd", tarfile.REGTYPE, 0o644, data=b"root:x:0:0:root:/root:/bin/sh\n")
        add("etc/group", tarfile.REGTYPE, 0o644, data=b"root:x:0:\n")
        for name, data in extra.items():
            add(name, tarfile.REGTYPE, 0o755, data=data)
    return buf.getvalue()


def _ulimit(which: int) -> int:
    """min(ULIMIT_CAP, the host's soft and hard limits), ignoring unlimited ones."""
    soft, hard = resource.getrlimit(which)
    return min([ULIMIT_CAP] + [v for v in (soft, hard) if v != resource.RLIM_INFINITY])


def _is_static_elf(path: Path) -> bool:
    """Whether an ELF executable has no program interpreter (dynamic loader)."""
    with path.open("rb") as f:
        ident = f.read(16)
        if len(ident) < 16 or ident[:4] != b"\x7fELF":
            return False
        is64 = ident[4] == 2
        order = "<" if ident[5] == 1 else ">"
        header = f.read(48 if is64 else 36)
        if is64:
            phoff, phentsize, phnum = (
                struct.unpack_from(order + "Q", header, 16)[0],
                *struct.unpack_from(order + "HH", header, 38),
            )
        else:
            phoff, phentsize, phnum = (
                struct.unpack_from(order + "I", header, 12)[0],
                *struct.unpack_from(order + "HH", header, 26),
            )
        pt_interp = 3
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            (p_type,) = struct.unpack(order + "I", f.read(4))
            if p_type == pt_interp:
                return False
    return True


def _podman(
    env: dict[str, str], *args: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"podman {' '.join(args)} failed ({result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}"
        )
    return result


def _wait_for_ping(pod: PodmanEnv, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer"
    with pod.client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if pod.process.poll() is not None:
                raise RuntimeError(
                    f"podman system service exited ({pod.process.returncode}): "
                    f"{log_path.read_text(errors='replace').strip()}"
                )
            if pod.socket.exists():
                try:
                    response = client.get(f"{pod.api}/_ping")
                    if response.status_code == 200 and response.text == "OK":
                        return
                    last = f"{response.status_code} {response.text[:200]!r}"
                except httpx.TransportError as exc:
                    last = repr(exc)
            time.sleep(0.05)
    raise RuntimeError(
        f"podman system service did not answer {pod.api}/_ping within {START_TIMEOUT:.0f}s "
        f"({last}); log: {log_path.read_text(errors='replace').strip()}"
    )
