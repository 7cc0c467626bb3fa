"""The HTTP measurements: submit throughput against the floor, submit latency as the queue
grows, and each idle server's memory. Every server is its own uvicorn process (servers.py)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench import load, servers
from bench.table import Sample

BENCH_KEY = "bench-key-0123456789"
# ours exposed: an API key and the rate limiter on (a rate no run reaches)
AUTH_ENV = {"SCHEDULER_API_KEYS": f"{BENCH_KEY}:bench", "SCHEDULER_RATE_LIMIT_PER_SECOND": "1e9"}


@dataclass
class Contender:
    name: str
    app: str
    env: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] | None = None


def contenders(tmp: Path) -> list[Contender]:
    return [
        Contender("floor", servers.FLOOR_APP),
        Contender("memory", servers.OUR_APP, servers.scheduler_env("memory", tmp / "memory")),
        Contender("sqlite", servers.OUR_APP, servers.scheduler_env("sqlite", tmp / "sqlite")),
        Contender(
            "memory+auth",
            servers.OUR_APP,
            servers.scheduler_env("memory", tmp / "auth", **AUTH_ENV),
            {"X-API-Key": BENCH_KEY},
        ),
    ]


def throughput(rounds: int, seconds: float) -> tuple[dict[str, Sample], dict[str, float]]:
    """req/s of each contender, run after run in turn (floor, ours, floor, ours, ...), and the
    RSS in MiB of each idle server after its first submit."""
    with tempfile.TemporaryDirectory() as tmp:
        return measure(contenders(Path(tmp)), rounds, seconds)


def measure(
    entries: list[Contender], rounds: int, seconds: float
) -> tuple[dict[str, Sample], dict[str, float]]:
    """What `throughput` measures, for these contenders (bench/postgres.py adds its own)."""
    started = [servers.start(entry.name, entry.app, entry.env) for entry in entries]
    try:
        rss = {}
        for entry, server in zip(entries, started, strict=True):
            load.fill(server.url, 1, entry.headers)
            rss[entry.name] = server.rss_mib()
            load.throughput(server.url, 1.0, entry.headers)  # warm up
        rates = {entry.name: Sample() for entry in entries}
        for _ in range(rounds):
            for entry, server in zip(entries, started, strict=True):
                rates[entry.name].add(load.throughput(server.url, seconds, entry.headers))
        return rates, rss
    finally:
        for server in started:
            server.stop()


def queue_latency(store: str, small: int, big: int, rounds: int) -> tuple[Sample, Sample]:
    """p50 ms of single submits (wrk -c1) with `small` then `big` jobs queued, on a fresh server
    each round."""
    at_small, at_big = Sample(), Sample()
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            env = servers.scheduler_env(store, Path(tmp))
            server = servers.start(f"{store}-latency", servers.OUR_APP, env)
            try:
                load.fill(server.url, small)
                at_small.add(load.latency_p50(server.url, load.LATENCY_REQUESTS))
                load.fill(server.url, big - small - load.LATENCY_REQUESTS)
                at_big.add(load.latency_p50(server.url, load.LATENCY_REQUESTS))
            finally:
                server.stop()
    return at_small, at_big
