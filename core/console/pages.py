"""The console's page and files, read from the package on the first request and kept.

Each file is served under a name carrying its content hash (`app.3f2a9c1b04de.js`), cached for a
year as immutable; the page names them, is revalidated on every load (`no-cache`, ETag) and so
always points at the files of the running version. Every answer carries a Content-Security-Policy
that allows scripts, styles and requests from this origin only: no inline script, no remote
origin.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

STATIC = Path(__file__).resolve().parent / "static"
PAGE = "console.html"
# in the order the page loads them: each script adds to the one before
FILES = {
    "console.css": "text/css; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "chart.js": "text/javascript; charset=utf-8",
    "views.js": "text/javascript; charset=utf-8",
    "job.js": "text/javascript; charset=utf-8",
    "main.js": "text/javascript; charset=utf-8",
}
HTML = "text/html; charset=utf-8"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
MISSING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Bot Scheduler console</title></head>
<body><p>The console's files are not part of this build. The API is described at
<a href="docs">/docs</a>.</p></body></html>
"""


@dataclass(frozen=True)
class File:
    content: bytes
    media_type: str

    @cached_property
    def etag(self) -> str:
        return f'"{digest(self.content)}"'


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:12]


def hashed_name(name: str, content: bytes) -> str:
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.{digest(content)}{dot}{suffix}"


@cache
def contents() -> dict[str, bytes]:
    """The page and each file by name: from the package's `static/` folder, or from the module
    `bundled_static` the Cloudflare Worker's build writes (it bundles Python modules only);
    empty when neither has them all."""
    names = [PAGE, *FILES]
    if all((STATIC / name).is_file() for name in names):
        return {name: (STATIC / name).read_bytes() for name in names}
    try:
        from core.console import bundled_static  # type: ignore[attr-defined, unused-ignore]
    except ImportError:
        return {}
    bundled: dict[str, str] = bundled_static.FILES
    if not all(name in bundled for name in names):
        return {}
    return {name: bundled[name].encode() for name in names}


@cache
def hashed_names() -> dict[str, str]:
    """Each file's name -> the name the page gives it (with its hash); empty without files."""
    found = contents()
    return {name: hashed_name(name, found[name]) for name in FILES if name in found}


@cache
def files() -> dict[str, File]:
    """The console's files by their hashed names."""
    found = contents()
    return {hashed: File(found[name], FILES[name]) for name, hashed in hashed_names().items()}


@cache
def page() -> File:
    """The page, naming each file by its hashed name."""
    names = hashed_names()
    if not names:
        return File(MISSING.encode(), HTML)
    text = contents()[PAGE].decode("utf-8")
    for name, hashed in names.items():
        text = text.replace(f'"console/assets/{name}"', f'"console/assets/{hashed}"')
    return File(text.encode(), HTML)


def headers(file: File, cache_control: str) -> dict[str, str]:
    return {
        "Cache-Control": cache_control,
        "ETag": file.etag,
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


def answer(request: Request, file: File, cache_control: str) -> Response:
    """The file, or 304 when the browser holds this version already."""
    sent = headers(file, cache_control)
    held = request.headers.get("if-none-match", "")
    if file.etag in {tag.strip() for tag in held.split(",")}:
        return Response(status_code=304, headers=sent)
    return Response(file.content, media_type=file.media_type, headers=sent)


async def serve(request: Request) -> Response:
    """GET /console (the page) and /console/assets/{name} (a file, by its hashed name)."""
    name = request.path_params.get("name")
    if name is None:
        return answer(request, page(), REVALIDATE)
    file = files().get(name)
    if file is None:
        raise HTTPException(404, f"no console file {name!r}")
    return answer(request, file, IMMUTABLE)
