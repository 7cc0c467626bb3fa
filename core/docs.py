"""The docs page: Swagger UI served from the `swagger-ui-bundle-v2` package (its JS and CSS come
from this app under /docs/assets/, never from a CDN), with the operations also listed in plain
HTML for a browser without JavaScript, and that list alone where the package is not installed
(the Cloudflare Worker ships without it). The package, and the OpenAPI document's module, are
imported on the first request for them only."""

from __future__ import annotations

import html
import importlib
from functools import cache
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
METHODS = ("get", "post", "put", "patch", "delete")

# relative URLs: the page works wherever the app is mounted
SWAGGER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/assets/favicon-32x32.png" sizes="32x32">
<style>body{{margin:0}} noscript{{display:block;{inset}}}</style>
</head><body>
<noscript>{operations}</noscript>
<div id="swagger-ui"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{
  url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout",
  persistAuthorization: false, tryItOutEnabled: false, displayRequestDuration: true
}});
</script>
</body></html>
"""

PLAIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{{inset}}}</style></head>
<body>{operations}</body></html>
"""
INSET = "font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem"


@cache
def _bundle() -> Any | None:
    try:
        bundle = importlib.import_module("swagger_ui_bundle")
    except ImportError:
        return None
    return bundle.swagger_ui_path


def has_swagger_ui() -> bool:
    return _bundle() is not None


@cache
def asset(name: str) -> tuple[bytes, str] | None:
    """One of Swagger UI's files and its media type; None when unknown or not installed."""
    root = _bundle()
    if root is None or name not in ASSETS:
        return None
    return (root / name).read_bytes(), ASSETS[name]


def openapi_document(max_batch: int | None = None) -> dict[str, Any]:
    """core.openapi's document, that module imported on first use."""
    from core.openapi import DEFAULT_MAX_BATCH
    from core.openapi import openapi_document as build

    return build(DEFAULT_MAX_BATCH if max_batch is None else max_batch)


@cache
def docs_page() -> str:
    doc = openapi_document()
    title = html.escape(doc["info"]["title"])
    template = SWAGGER_PAGE if has_swagger_ui() else PLAIN_PAGE
    return template.format(title=title, operations=operations_html(doc), inset=INSET)


def operations_html(doc: dict[str, Any]) -> str:
    """The operations as plain HTML: what a reader without JavaScript sees."""
    info = doc["info"]
    parts = [
        f"<h1>{html.escape(info['title'])}</h1>",
        f"<p>{html.escape(info.get('description', ''))}</p>",
        '<p>The OpenAPI document: <a href="openapi.json">openapi.json</a>.</p>',
        "<ul>",
    ]
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                summary = html.escape(item[method].get("summary", ""))
                parts.append(
                    f"<li><b>{method.upper()}</b> <code>{html.escape(path)}</code> {summary}</li>"
                )
    parts.append("</ul>")
    return "\n".join(parts)


def docs_routes(max_batch: int) -> list[Route]:
    """The OpenAPI document at /openapi.json and /doc (the original's path), the docs page at
    /docs and /ui (the original's), and Swagger UI's files."""

    async def document(request: Request) -> Response:
        return JSONResponse(openapi_document(max_batch))

    async def page(request: Request) -> Response:
        return HTMLResponse(docs_page())

    async def asset_file(request: Request) -> Response:
        found = asset(request.path_params["name"])
        if found is None:
            raise HTTPException(404, f"no docs asset {request.path_params['name']!r}")
        content, media_type = found
        headers = {"Cache-Control": "public, max-age=86400"}
        return Response(content, media_type=media_type, headers=headers)

    return [
        Route("/openapi.json", document),
        Route("/doc", document),
        Route("/docs", page),
        Route("/ui", page),
        Route("/docs/assets/{name}", asset_file),
    ]
