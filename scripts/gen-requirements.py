"""Write requirements.txt, for the serverless deploys, from pyproject.toml.

`gcloud functions deploy` and `func azure functionapp publish` both install requirements.txt at
the source root: the base dependencies, then the `gcp` and `azure` extras (each platform installs
the other's SDKs too, but imports only its own, lazily), the `postgres` extra (psycopg: the
postgres store on Cloud SQL or Azure Database for PostgreSQL, loaded only when it is the store),
and functions-framework, which every Cloud Function needs (added only when no extra lists it), in
pyproject's order, each project once.

Each line gets an upper bound: the next major version after the one the tests run on (CEILINGS),
so a deploy never installs a release with breaking changes nobody has tested. A requirement with
no bound of its own and no ceiling here is an error: choose one when adding a dependency.

    python scripts/gen-requirements.py           # write requirements.txt
    python scripts/gen-requirements.py --check   # exit 1 if requirements.txt is out of date

A test runs `--check`, so the committed file cannot drift from pyproject.toml.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("gcp", "azure", "postgres")
# Every Cloud Function needs the framework: added when no extra lists it.
FRAMEWORK = "functions-framework>=3.10"
HEADER = (
    "# Generated from pyproject.toml by scripts/gen-requirements.py: do not edit by hand.\n"
    "# The dependencies and the {extras} extras, for Google Cloud Functions and Azure Functions.\n"
)


# project -> the first version a deploy must not install (the next major after the tested one)
CEILINGS = {
    "starlette": "2",
    "pydantic": "3",
    "httpx": "1",
    "uvicorn": "1",
    "swagger-ui-bundle-v2": "6",
    "standardwebhooks": "2",
    "functions-framework": "4",
    "google-cloud-firestore": "3",
    "google-cloud-run": "1",
    "azure-functions": "2",
    "azure-mgmt-appcontainers": "6",
    "azure-data-tables": "13",
    "aiohttp": "4",
    "azure-identity": "2",
    "psycopg": "4",
    "psycopg-pool": "4",
}


class MissingExtra(Exception):
    """pyproject.toml has no extra of that name."""


class MissingCeiling(Exception):
    """A requirement has no upper bound and CEILINGS has none for it."""


def name_of(requirement: str) -> str:
    """The normalized project name of a requirement (PEP 503), e.g. `Foo_Bar[x]>=1` -> foo-bar."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def bounded(requirement: str, ceilings: dict[str, str] = CEILINGS) -> str:
    """`requirement` with `,<ceiling` added to its version specifier (before any marker), unless
    it has an upper bound or pins one version already."""
    spec, semicolon, marker = requirement.partition(";")
    spec = spec.strip()
    if re.search(r"<|==|~=", spec):
        return requirement.strip()
    ceiling = ceilings.get(name_of(spec))
    if ceiling is None:
        raise MissingCeiling(
            f"{spec}: no upper bound; add one to CEILINGS in scripts/gen-requirements.py "
            "(the next major version after the one the tests run on)"
        )
    separator = "," if re.search(r"[<>=!]", spec) else ""
    return f"{spec}{separator}<{ceiling}" + (f" ;{marker}" if semicolon else "")


def requirements(pyproject: dict[str, object], extras: tuple[str, ...] = EXTRAS) -> list[str]:
    """Base dependencies, then each extra's, then functions-framework unless listed; each
    project once (its first mention wins), each with an upper bound."""
    project = pyproject.get("project")
    if not isinstance(project, dict):
        raise ValueError("pyproject.toml has no [project] table")
    optional = project.get("optional-dependencies", {})
    found: list[str] = list(project.get("dependencies", []))
    for extra in extras:
        if extra not in optional:
            raise MissingExtra(
                f"pyproject.toml has no {extra!r} extra ([project.optional-dependencies])"
            )
        found.extend(optional[extra])
    found.append(FRAMEWORK)
    seen: set[str] = set()
    unique = []
    for requirement in found:
        name = name_of(requirement)
        if name not in seen:
            seen.add(name)
            unique.append(bounded(requirement))
    return unique


def render(pyproject_path: Path, extras: tuple[str, ...] = EXTRAS) -> str:
    with pyproject_path.open("rb") as file:
        pyproject = tomllib.load(file)
    lines = requirements(pyproject, extras)
    return HEADER.format(extras=", ".join(f"`{e}`" for e in extras)) + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--output", type=Path, default=ROOT / "requirements.txt")
    parser.add_argument("--check", action="store_true", help="fail if the output is out of date")
    args = parser.parse_args(argv)
    try:
        text = render(args.pyproject)
    except (MissingExtra, MissingCeiling) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        current = args.output.read_text() if args.output.exists() else None
        if current != text:
            print(
                f"{args.output} is out of date with {args.pyproject}: "
                "run `python scripts/gen-requirements.py`",
                file=sys.stderr,
            )
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
