"""/ui: the profile inspector and the usage panel. The page and its assets are served from
the package and hold no user data; the page's scripts read and write through the JSON API
with the key the user enters (``Authorization: Bearer``), so the page is exactly as protected
as the API. While no key exists on a loopback bind the API serves the dev account, and so does
the page."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response
from jinja2 import Template

import proxy
from proxy.errors import NotFound

router = APIRouter(tags=["ui"], include_in_schema=False)

UI_DIR = Path(__file__).resolve().parents[1] / "ui"
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "usage.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
#: The page loads nothing from anywhere but the proxy, and runs no inline script.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@router.get("/ui", response_class=HTMLResponse)
def page() -> HTMLResponse:
    template = Template((UI_DIR / "index.html").read_text(), autoescape=True)
    html = template.render(version=proxy.__version__, key_hint="sk-… (kept in this tab only)")
    return HTMLResponse(html, headers=SECURITY_HEADERS)


@router.get("/ui/static/{name}")
def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no such asset: {name}", code="unknown_url")
    headers = SECURITY_HEADERS | {"Cache-Control": "public, max-age=3600"}
    return Response((UI_DIR / "static" / name).read_bytes(), media_type=media_type, headers=headers)
