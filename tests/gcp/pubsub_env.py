"""The Pub/Sub emulator from the Google Cloud CLI (`gcloud beta emulators pubsub start`, a Java
server) on a free port, its REST API, and an Eventarc stand-in.

In Google Cloud, Cloud Scheduler publishes to a topic; the Eventarc trigger that
`gcloud functions deploy --trigger-topic` creates holds a push subscription on it and turns each
push into the CloudEvent HTTP request the function receives. The emulator has no Eventarc: the
`EventarcRelay` here is the push endpoint and does that conversion (binary content mode, the push
body unchanged as the event's data), then answers the push with the function's status, so a
failed tick is redelivered as it would be.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.gcp.ff_env import PROJECT, pubsub_cloudevent, stop_group
from tests.processes import free_port

START_TIMEOUT = 60.0
INSTALL_HINT = (
    "install the Google Cloud CLI with its beta and Pub/Sub emulator components "
    "(`gcloud components install beta pubsub-emulator`, or the Debian package "
    "google-cloud-cli-pubsub-emulator) and Java"
)


class EmulatorUnavailable(RuntimeError):
    """gcloud, its Pub/Sub emulator or Java is not installed."""


@dataclass
class PubSubEmulator:
    host: str  # host:port, what PUBSUB_EMULATOR_HOST would hold
    project: str
    process: subprocess.Popen[bytes] = field(repr=False)
    log: Path
    http: httpx.Client = field(repr=False)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.http.request(method, f"/v1/projects/{self.project}/{path}", json=body)
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    def create_topic(self, topic: str) -> None:
        self._call("PUT", f"topics/{topic}")

    def create_push_subscription(self, name: str, topic: str, endpoint: str) -> None:
        topic_path = f"projects/{self.project}/topics/{topic}"
        self._call(
            "PUT",
            f"subscriptions/{name}",
            {
                "topic": topic_path,
                "pushConfig": {"pushEndpoint": endpoint},
                "ackDeadlineSeconds": 10,
            },
        )

    def publish(self, topic: str, data: bytes) -> str:
        body = {"messages": [{"data": base64.b64encode(data).decode()}]}
        message_id: str = self._call("POST", f"topics/{topic}:publish", body)["messageIds"][0]
        return message_id

    def stop(self) -> None:
        self.http.close()
        stop_group(self.process)


def start_pubsub(tmp: Path, project: str = PROJECT, attempts: int = 3) -> PubSubEmulator:
    gcloud = os.environ.get("GCLOUD") or shutil.which("gcloud")
    if not gcloud:
        raise EmulatorUnavailable(f"gcloud is not installed; {INSTALL_HINT}")
    if shutil.which("java") is None:
        raise EmulatorUnavailable(f"java is not installed; {INSTALL_HINT}")
    tmp.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "CLOUDSDK_CONFIG": str(tmp / "gcloud-config"),  # leave the user's gcloud config alone
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
    }
    error = "the Pub/Sub emulator did not start"
    for attempt in range(attempts):  # another process may take the free port first
        host = f"127.0.0.1:{free_port()}"
        log = tmp / f"pubsub-{attempt}.log"
        argv = [gcloud, "beta", "emulators", "pubsub", "start", f"--host-port={host}"]
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*argv, f"--project={project}"], cwd=tmp, env=env, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        http = httpx.Client(base_url=f"http://{host}", timeout=10)
        emulator = PubSubEmulator(host, project, process, log, http)
        deadline = time.monotonic() + START_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if http.get("/").status_code == 200:
                    return emulator
            time.sleep(0.1)
        emulator.stop()
        tail = log.read_text(errors="replace")[-2000:]
        if process.returncode not in (0, None) and (
            "component" in tail.lower() or "invalid choice" in tail.lower()
        ):
            raise EmulatorUnavailable(f"{tail.strip()}; {INSTALL_HINT}")
        error = f"the Pub/Sub emulator did not start on {host}: {tail}"
    raise RuntimeError(error)


@dataclass
class Delivery:
    message_id: str
    status: int


class EventarcRelay:
    """A push endpoint that forwards each Pub/Sub push to `target` as Eventarc's CloudEvent."""

    def __init__(self, target: str, project: str, topic: str) -> None:
        self.target = target
        self.source = f"//pubsub.googleapis.com/projects/{project}/topics/{topic}"
        self.deliveries: list[Delivery] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                envelope = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                headers, body = pubsub_cloudevent(envelope, relay.source)
                try:
                    status = httpx.post(relay.target, headers=headers, json=body, timeout=30)
                    code = status.status_code
                except httpx.TransportError:
                    code = 502
                relay.deliveries.append(Delivery(envelope["message"]["messageId"], code))
                self.send_response(code if code < 300 else 500)  # non-2xx: Pub/Sub redelivers
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/push"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
