"""Static files under /ui, with headers that keep the page to itself.

CSP allows only this origin's scripts, styles and connections: no inline code, no framing, no
other hosts. URLs inside the page are relative, so it works behind a proxy or ingress prefix.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATIC = (Path(__file__).parent / "static").resolve()
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}
CSP = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])  # fmt: skip
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",  # revalidated each time: an upgraded gateway never serves yesterday's page
}


async def _redirect(_: web.Request) -> web.StreamResponse:
    # Relative, so /prefix/ui becomes /prefix/ui/ behind a proxy that strips nothing.
    raise web.HTTPPermanentRedirect("ui/", headers=HEADERS)


async def _file(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("path") or "index.html"
    if "\x00" in name or name.endswith("/"):  # a NUL the filesystem refuses; a file is not a folder
        raise web.HTTPNotFound()
    path = (STATIC / name).resolve()
    if not path.is_relative_to(STATIC) or not path.is_file() or path.suffix not in CONTENT_TYPES:
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={**HEADERS, "Content-Type": CONTENT_TYPES[path.suffix]})


def console_routes() -> list[tuple[str, str, Handler]]:
    return [
        ("GET", "/ui", _redirect),
        ("GET", "/ui/", _file),
        ("GET", "/ui/{path:.+}", _file),
    ]
