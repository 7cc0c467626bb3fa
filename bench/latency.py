"""Submit → backend start: how long after a POST of a job due now its bot's start is asked for,
with a free slot. The server (uvicorn, in a thread of this process) runs the scheduler on a
backend that records when `start` is called; the client posts from the main thread."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from pathlib import Path

import uvicorn

from bench.backend import RecordingBackend
from bench.servers import free_port
from bench.table import Sample
from core.api import create_app
from core.config import Settings
from core.runtime import Runtime, build_store
from core.scheduler import Scheduler

BODY = json.dumps({"meetingUrl": "https://meet.example.com/bench"}).encode()  # never shared


async def _serve(
    settings: Settings, backend: RecordingBackend, server_box: list[uvicorn.Server]
) -> None:
    store = build_store(settings)
    await store.open()
    runtime = Runtime(settings, Scheduler(store, backend, settings))
    app = create_app(settings, runtime, drain_every=settings.polling_interval)
    config = uvicorn.Config(app, port=settings.port, log_level="warning", access_log=False)
    server_box.append(uvicorn.Server(config))
    await server_box[0].serve()


def submit_to_start(store: str, data_dir: Path, submits: int = 200) -> Sample:
    """ms from sending each POST to its job's start, one job after another."""
    settings = Settings(
        store=store, data_dir=data_dir, port=free_port(), max_concurrent_jobs=submits + 1
    )
    backend, box = RecordingBackend(), list[uvicorn.Server]()
    thread = threading.Thread(target=asyncio.run, args=(_serve(settings, backend, box),))
    thread.start()
    while not box or not box[0].started:
        time.sleep(0.02)
    connection = http.client.HTTPConnection("127.0.0.1", settings.port)
    delays = Sample()
    try:
        for _ in range(submits):
            sent = time.perf_counter()
            connection.request(
                "POST", "/api/scheduler/jobs", BODY, {"Content-Type": "application/json"}
            )
            answer = connection.getresponse()
            job_id = json.loads(answer.read())["job"]["id"]
            delays.add(1000 * (backend.wait_started(job_id) - sent))
    finally:
        connection.close()
        box[0].should_exit = True
        thread.join()
    return delays
