"""Where a submit's time goes: cProfile over N submits through the app in this process (no
server, no network), top functions by their own time.

    .venv/bin/python bench/profile_submit.py [--store memory|sqlite] [--submits 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.asgi_driver import SUBMIT_PATH, request, submit_body
from core.api import create_app
from core.config import Settings


async def profile(store: str, submits: int, data_dir: Path) -> cProfile.Profile:
    app = create_app(Settings(store=store, data_dir=data_dir))
    # a calendar, as `make bench` submits: each joinAt an hour after the one before
    bodies = [submit_body(24 * 365 + hour) for hour in range(100 + submits)]
    async with app.router.lifespan_context(app):
        for body in bodies[:100]:  # warm: the store opened, the validators built
            await request(app, "POST", SUBMIT_PATH, body)
        profiler = cProfile.Profile()
        profiler.enable()
        for body in bodies[100:]:
            status, answer = await request(app, "POST", SUBMIT_PATH, body)
            assert status == 201, answer
        profiler.disable()
    return profiler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", default="memory", choices=["memory", "sqlite"])
    parser.add_argument("--submits", type=int, default=1000)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        profiler = asyncio.run(profile(args.store, args.submits, Path(tmp)))
    pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
