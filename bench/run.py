"""`make bench`: one table of what the scheduler costs against its floor, measured side by side
in one run. No assertions: the figures depend on the machine and on what else runs on it (the
header says both); compare the ratios, each a median of interleaved runs.

    .venv/bin/python bench/run.py [--rounds 5] [--seconds 3]

Needs wrk (scripts/bench-env.sh installs Debian's), Azurite, the Google Cloud CLI's Firestore
emulator and the PostgreSQL server (as `make test` does); a row whose tool is missing says so
instead of a figure. `--only postgres` runs the PostgreSQL rows alone (bench/postgres.py).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import cold, http_bench, latency, ontime, postgres, stores, webhooks
from bench.table import Row, Sample, at_least, at_most, ratio_of, render

QUEUE_SMALL, QUEUE_BIG = 100, 4_000
DUE_BIG = 10_000
DRAIN_JOBS = 200
PARTS = ("http", "queue", "cold", "stores", "postgres", "start", "webhooks", "ontime")
COLD_TARGETS: list[tuple[str, str | None, str]] = [
    ("core.api", None, "cold `import core.api`"),
    (
        "function_app",
        "azure.functions",
        "cold import of `function_app` (host's azure.functions loaded)",
    ),
    ("main", "functions_framework", "cold import of `main` (host's functions_framework loaded)"),
    ("handlers.aws", None, "cold import of `handlers.aws`"),
    ("handlers.cloudflare", None, "cold import of `handlers.cloudflare`"),
    ("handlers.local", None, "cold import of `handlers.local`"),
    ("function_app", None, "cold import of `function_app` with azure.functions itself"),
    ("main", None, "cold import of `main` with functions_framework itself"),
]


def http_rows(rounds: int, seconds: float) -> list[Row]:
    rates, rss = http_bench.throughput(rounds, seconds)
    floor = rates["floor"]
    req = "POST /api/scheduler/jobs (req/s, wrk -t1 -c32)"
    rows = [
        Row(
            f"{req}, memory store",
            floor.text(),
            rates["memory"].text(),
            ratio_of(rates["memory"], floor),
            *at_least(0.6),
        ),
        Row(
            f"{req}, SQLite store",
            floor.text(),
            rates["sqlite"].text(),
            ratio_of(rates["sqlite"], floor),
            *at_least(0.3),
        ),
        Row(
            f"{req}, memory store, API key and rate limiter on",
            floor.text(),
            rates["memory+auth"].text(),
            ratio_of(rates["memory+auth"], floor),
        ),
    ]
    for name in ("memory", "sqlite"):
        text = f"{rss['floor']:.1f} MiB", f"{rss[name]:.1f} MiB"
        rows.append(Row(f"RSS of an idle server, {name} store", *text, rss[name] / rss["floor"]))
    return rows


def queue_rows(rounds: int) -> list[Row]:
    rows = []
    for store in ("memory", "sqlite"):
        small, big = http_bench.queue_latency(store, QUEUE_SMALL, QUEUE_BIG, rounds)
        name = f"submit p50 latency (ms, wrk -c1), {QUEUE_SMALL} → {QUEUE_BIG:,} queued, {store}"
        rows.append(
            Row(name, small.text(digits=2), big.text(digits=2), ratio_of(big, small), *at_most(1.3))
        )
    return rows


def cold_rows(rounds: int) -> list[Row]:
    floor, ours = cold.imports([(module, preload) for module, preload, _ in COLD_TARGETS], rounds)
    rows = []
    for module, preload, name in COLD_TARGETS:
        sample = ours[f"{module}|{preload}"]
        goal = at_most(1.3) if "itself" not in name else ("", None)
        rows.append(
            Row(
                name + " (ms)",
                floor.text(digits=1),
                sample.text(digits=1),
                ratio_of(sample, floor),
                *goal,
            )
        )
    first_floor, first_ours = cold.first_answers(rounds)
    name = "cold start to the first 201: fresh process, imports, app, one submit (ms)"
    rows.append(
        Row(
            name,
            first_floor.text(digits=1),
            first_ours.text(digits=1),
            ratio_of(first_ours, first_floor),
        )
    )
    return rows


def due_row(name: str, small: Sample, big: Sample, goal: bool = True) -> Row:
    label = f"{name} (µs; {stores.SMALL_QUEUE} → {DUE_BIG:,} queued)"
    check = at_most(1.3) if goal else ("", None)
    return Row(label, small.text(), big.text(), ratio_of(big, small), *check)


def store_rows(tmp: Path) -> list[Row]:
    small, big = asyncio.run(stores.sqlite_due(tmp / "sqlite", DUE_BIG))
    rows = [due_row("`due(10)`, SQLite", small, big)]
    rows += guarded("Azurite", lambda: azurite_rows(tmp / "azurite"))
    rows += guarded("Firestore emulator", lambda: firestore_rows(tmp / "firestore"))
    return rows


def firestore_rows(tmp: Path) -> list[Row]:
    found = asyncio.run(stores.firestore(tmp, DUE_BIG))
    return [
        due_row("`due(10)`, Firestore emulator", found["small"], found["big"]),
        due_row(
            "  the SDK's ordered, limited query of `due`, the emulator itself",
            found["query_small"],
            found["query_big"],
            goal=False,
        ),
    ]


def azurite_rows(tmp: Path) -> list[Row]:
    found = asyncio.run(stores.azurite(tmp, DUE_BIG, DRAIN_JOBS, rounds=3))
    drain = (
        f"drain on Azurite: jobs dispatched/s ÷ the SDK's conditional updates/s ({DRAIN_JOBS} jobs)"
    )
    return [
        due_row("`due(10)`, Azurite", found["small"], found["big"]),
        due_row(
            "  the SDK's query of the first 10 index rows, Azurite itself",
            found["query_small"],
            found["query_big"],
            goal=False,
        ),
        Row(
            drain,
            found["raw"].text(),
            found["drained"].text(),
            ratio_of(found["drained"], found["raw"]),
            *at_least(0.5),
        ),
        Row(
            "  the same, the jobs submitted by another process (each job's row read once)",
            found["raw"].text(),
            found["drained_cold"].text(),
            ratio_of(found["drained_cold"], found["raw"]),
        ),
    ]


def guarded(what: str, rows: Callable[[], list[Row]]) -> list[Row]:
    """The rows, or one row saying why `what` could not run here."""
    try:
        return rows()
    except Exception as exc:  # the emulator is missing or did not start: say so, go on
        return [Row(f"{what}: not measured ({type(exc).__name__}: {str(exc)[:120]})", "", "", None)]


def start_rows(tmp: Path) -> list[Row]:
    rows = []
    for store in ("memory", "sqlite"):
        delays = latency.submit_to_start(store, tmp / f"start-{store}")
        p50, p95 = delays.median, delays.percentile(0.95)
        rows.append(
            Row(
                f"submit → backend start with a free slot, {store} (ms: p50 / p95)",
                "",
                f"{p50:.1f} / {p95:.1f}",
                p50,
                "p50 < 50 ms",
                lambda value: value < 50,
                ratio_text=f"{p50:.1f} ms",
            )
        )
    return rows


def header() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    today = datetime.date.today().isoformat()
    python = platform.python_version()
    return f"{today} · {os.cpu_count()} cores ({model}) · Python {python} · load average {load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved runs per figure")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of a wrk run")
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"the parts to run, comma-separated (default all: {','.join(PARTS)})",
    )
    args = parser.parse_args()
    wanted = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = [part for part in wanted if part not in PARTS]
    if unknown:
        parser.error(f"--only: unknown part {unknown[0]!r}; choose from {', '.join(PARTS)}")
    before = header()  # the load of everything else: the benchmark loads both cores itself
    print(before, file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        parts: dict[str, Callable[[], list[Row]]] = {
            "http": lambda: http_rows(args.rounds, args.seconds),
            "queue": lambda: queue_rows(max(3, args.rounds // 2)),
            "cold": lambda: cold_rows(args.rounds + 2),
            "stores": lambda: store_rows(Path(tmp)),
            "postgres": lambda: guarded(
                "PostgreSQL", lambda: postgres.rows(args.rounds, args.seconds)
            ),
            "start": lambda: start_rows(Path(tmp)),
            "webhooks": lambda: webhooks.rows(args.rounds),
            "ontime": ontime.rows,  # simulated time: the same figures on any machine
        }
        rows = [row for part in PARTS if part in wanted for row in parts[part]()]
    print(f"\n{before} before the run\n")
    print(render(rows))


if __name__ == "__main__":
    main()
