"""wrk (Debian's, installed by `make bench`) against a server: throughput and latency."""

from __future__ import annotations

import http.client
import itertools
import json
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench.asgi_driver import SUBMIT_PATH, submit_body

# wrk's Lua: POST the submit body, each with its own joinAt an hour after the one before (a
# calendar of meetings, a year ahead and on from where the last run's calendar ended: nothing
# starts, no window is ever full however many runs one server takes); count answers;
# stop a thread after `limit` answers (0: run for the duration); print the figures as one JSON
# line at the end.
SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{headers}
local template = [==[{body}]==]
local first = {first}
local sent = 0
function request()
  sent = sent + 1
  local join_at = os.date("!%Y-%m-%dT%H:%M:%SZ", first + sent * 3600)
  local body = (string.gsub(template, "JOIN_AT", join_at))
  return wrk.format(nil, nil, nil, body)
end
local answered = 0
function response(status, headers, body)
  answered = answered + 1
  if {limit} > 0 and answered >= {limit} then wrk.thread:stop() end
end
function done(summary, latency, requests)
  io.write(string.format(
    'RESULT {{"requests": %d, "seconds": %f, "bad": %d, "p50_us": %f, "p95_us": %f}}\\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(95)))
end
"""


CALENDAR_START = int(time.time()) + 365 * 24 * 3600
RUN_HOURS = 200_000  # hours of calendar a run may use (~23 years), more than any run submits
_runs = itertools.count()


@dataclass
class Result:
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


def wrk(
    url: str,
    *,
    seconds: float,
    connections: int,
    limit: int = 0,
    headers: dict[str, str] | None = None,
) -> Result:
    """One wrk run (one thread) of submits; fails when any answer was not a 2xx."""
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in (headers or {}).items())
    template = json.dumps({**json.loads(submit_body()), "joinAt": "JOIN_AT"})
    first = CALENDAR_START + next(_runs) * RUN_HOURS * 3600
    script = SCRIPT.format(body=template, headers=lines, limit=limit, first=first)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    try:
        duration = f"-d{max(1, round(seconds))}s"  # wrk takes whole seconds
        command = ["wrk", "-t1", f"-c{connections}", duration, "-s", file.name]
        out = subprocess.run(
            [*command, url + SUBMIT_PATH], capture_output=True, text=True, check=True
        ).stdout
    finally:
        Path(file.name).unlink()
    found = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if not found:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    result = json.loads(found[-1].removeprefix("RESULT "))
    if result["bad"] or not result["requests"]:
        raise RuntimeError(f"wrk against {url}: {result['bad']} failed of {result['requests']}")
    return Result(
        requests=result["requests"],
        seconds=result["seconds"],
        p50_ms=result["p50_us"] / 1000,
        p95_ms=result["p95_us"] / 1000,
    )


def throughput(url: str, seconds: float = 3.0, headers: dict[str, str] | None = None) -> float:
    """Requests per second with 32 connections (wrk -t1 -c32)."""
    return wrk(url, seconds=seconds, connections=32, headers=headers).per_second


def fill(url: str, jobs: int, headers: dict[str, str] | None = None) -> None:
    """Submit `jobs` jobs, one after another on one connection."""
    parsed = urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname or "", parsed.port)
    body, headers = submit_body(), {"Content-Type": "application/json", **(headers or {})}
    try:
        for _ in range(jobs):
            connection.request("POST", SUBMIT_PATH, body, headers)
            answer = connection.getresponse()
            answer.read()
            if answer.status != 201:
                raise RuntimeError(f"fill: {answer.status} from {url}")
    finally:
        connection.close()


LATENCY_REQUESTS = 300


def latency_p50(url: str, requests: int = LATENCY_REQUESTS) -> float:
    """The median latency (ms) of `requests` submits one after another (wrk -c1)."""
    return wrk(url, seconds=1.0, connections=1, limit=requests).p50_ms
