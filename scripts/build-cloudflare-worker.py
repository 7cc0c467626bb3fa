"""Assemble the Cloudflare Python Worker's modules in infra/cloudflare/scheduler/build/.

The Worker bundles only what is under build/ (wrangler's module root, the folder of `main`):
the entry shim `worker.py` and the `.py` files of core/ and handlers/, copied from the repository.
Nothing else of the repository (tests, bench, a virtualenv) can reach the upload.

Idempotent: an unchanged file is left alone, a changed one is replaced atomically, and a file that
no longer exists in the sources is removed, so build/ always mirrors the sources. wrangler runs this
before every deploy, dev and dry run (`[build] command` in the Worker's wrangler.toml); so do
`make cloudflare-build` and the tests.

usage: python scripts/build-cloudflare-worker.py [--check]
  --check   build nothing; exit 1 (and name the files) when build/ differs from the sources
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "infra" / "cloudflare" / "scheduler"
BUILD = WORKER / "build"
ENTRY = "worker.py"
PACKAGES = ("core", "handlers")


def sources() -> dict[str, Path]:
    """Every module the Worker bundles: its path under build/ -> its source file."""
    found = {ENTRY: WORKER / ENTRY}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[path.relative_to(ROOT).as_posix()] = path
    return found


def built_files(build: Path) -> Iterator[str]:
    for path in build.rglob("*"):
        if path.is_file() or path.is_symlink():
            yield path.relative_to(build).as_posix()


def differences(build: Path, wanted: dict[str, Path]) -> tuple[list[str], list[str]]:
    """(files to write, files to remove) for build/ to mirror `wanted`."""
    stale = sorted(set(built_files(build)) - set(wanted)) if build.exists() else []
    changed = [
        name
        for name, source in wanted.items()
        if not (build / name).is_file() or (build / name).read_bytes() != source.read_bytes()
    ]
    return changed, stale


def write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def remove_empty_dirs(build: Path) -> None:
    for directory in sorted(build.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()


def build(target: Path = BUILD) -> tuple[list[str], list[str]]:
    """Bring `target` in line with the sources; returns (written, removed)."""
    wanted = sources()
    changed, stale = differences(target, wanted)
    for name in changed:
        write_atomically(target / name, wanted[name].read_bytes())
    for name in stale:
        (target / name).unlink(missing_ok=True)
    if target.exists():
        remove_empty_dirs(target)
    return changed, stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report differences")
    args = parser.parse_args(argv)
    if args.check:
        changed, stale = differences(BUILD, sources())
        for name in [*changed, *stale]:
            print(f"out of date: {name}")
        return 1 if changed or stale else 0
    changed, stale = build()
    shown = BUILD.relative_to(ROOT)
    print(f"{shown}: {len(sources())} modules ({len(changed)} written, {len(stale)} removed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
