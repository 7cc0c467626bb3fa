"""The harness's side of the HTTP API: submit in parallel bursts, watch progress, read jobs back.

Every call goes to a random live server and is retried on another one when the server is down
(it may have just been killed) or answers 5xx; submits carry an Idempotency-Key, so a retried
POST whose first try did reach the store returns the same job instead of a second one.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from tests.stress.analysis import FINAL, JobView, epoch
from tests.stress.procs import Proc

JOBS = "/api/scheduler/jobs"
RETRY_SECONDS = 60.0
RETRY_PAUSE = 0.1
PAGE = 200
BURST_GAP = 0.05  # at most this many seconds between bursts
OVERRUN_LIMIT = 1  # maxRuntimeSeconds of an overrunning job
OVERRUN_BOT = "4"  # how long its bot would run

Progress = Callable[[int, int], None]


class ApiError(RuntimeError):
    """A request that kept failing, or a 4xx: the harness or its setup is wrong."""


class Api:
    def __init__(
        self, servers: Callable[[], Sequence[Proc]], keys: dict[str, str], rng: random.Random
    ) -> None:
        self.servers = servers
        self.keys = keys  # tenant -> API key
        self.rng = rng
        self.http = httpx.AsyncClient(timeout=30.0)

    async def close(self) -> None:
        await self.http.aclose()

    async def call(
        self, method: str, path: str, tenant: str, accept: tuple[int, ...] = (), **kwargs: Any
    ) -> dict[str, Any]:
        """The JSON body of a 2xx (or of a status in `accept`), retried on other servers."""
        headers = {"X-API-Key": self.keys[tenant], **kwargs.pop("headers", {})}
        deadline = time.monotonic() + RETRY_SECONDS
        last = "no server"
        while time.monotonic() < deadline:
            url = self.rng.choice(list(self.servers())).url + path
            try:
                response = await self.http.request(method, url, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__} from {url}"
            else:
                if response.status_code < 400 or response.status_code in accept:
                    body: dict[str, Any] = response.json()
                    return body
                last = f"HTTP {response.status_code} from {url}: {response.text[:300]}"
                if response.status_code < 500:
                    break
            await asyncio.sleep(RETRY_PAUSE)
        raise ApiError(f"{method} {path} failed: {last}")

    async def submit(self, index: int, tenant: str, seed: int, overrun: bool = False) -> str:
        """One job; an `overrun` one has a bot that runs past its maxRuntimeSeconds."""
        spec: dict[str, Any] = {
            "meetingUrl": f"https://meet.example.com/stress-{seed}-{index}",
            "botName": f"Stress {index}",
            "priority": self.rng.randint(0, 10),
        }
        if overrun:
            spec.update(maxRuntimeSeconds=OVERRUN_LIMIT, config={"stress_seconds": OVERRUN_BOT})
        key = {"Idempotency-Key": f"stress-{seed}-{index}"}
        body = await self.call("POST", JOBS, tenant, json=spec, headers=key)
        job_id: str = body["job"]["id"]
        return job_id

    async def submit_all(
        self,
        total: int,
        burst: int,
        seed: int,
        overruns: frozenset[int] = frozenset(),
        gap: float = BURST_GAP,
    ) -> dict[str, str]:
        """`total` jobs in bursts of `burst` parallel POSTs, at most `gap` seconds apart,
        tenants round-robin, the indexes in `overruns` overrunning; returns job id -> tenant."""
        tenants = list(self.keys)
        owner: dict[str, str] = {}
        for first in range(0, total, burst):
            indexes = range(first, min(first + burst, total))
            picked = [tenants[index % len(tenants)] for index in indexes]
            pairs = zip(indexes, picked, strict=True)
            ids = await asyncio.gather(
                *(self.submit(i, tenant, seed, i in overruns) for i, tenant in pairs)
            )
            owner.update(zip(ids, picked, strict=True))
            await asyncio.sleep(gap * self.rng.random())
        return owner

    async def cancel(self, job_id: str, tenant: str) -> None:
        """DELETE the job; one that is already final (409) is fine."""
        await self.call("DELETE", f"{JOBS}/{job_id}", tenant, accept=(409,))

    async def final_count(self) -> int:
        """How many jobs are final, summed over the tenants' stats."""
        total = 0
        for tenant in self.keys:
            stats = await self.call("GET", "/api/scheduler/stats", tenant)
            total += sum(stats[f"{state}Jobs"] for state in FINAL)
        return total

    async def wait_final(
        self, expected: int, seconds: float, progress: Progress | None, every: float = 0.5
    ) -> bool:
        """Until `expected` jobs are final (True) or `seconds` passed (False)."""
        deadline = time.monotonic() + seconds
        while True:
            done = await self.final_count()
            if progress is not None:
                progress(done, expected)
            if done >= expected:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(every)

    async def views(self, owner: dict[str, str]) -> dict[str, JobView]:
        """Every submitted job as the API shows it now; a job it does not list is `missing`."""
        seen: dict[str, JobView] = {}
        for tenant in self.keys:
            for job in await self.list_tenant(tenant):
                completed = epoch(job.get("completedAt"))
                status, reason = job["status"], job.get("reason")
                seen[job["id"]] = JobView(job["id"], tenant, status, completed, reason)
        for job_id, tenant in owner.items():
            seen.setdefault(job_id, JobView(job_id, tenant, "missing", None))
        return seen

    async def list_tenant(self, tenant: str) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": PAGE, **({"cursor": cursor} if cursor else {})}
            page = await self.call("GET", JOBS, tenant, params=params)
            jobs.extend(page["jobs"])
            cursor = page.get("nextCursor")
            if not cursor:
                return jobs
