"""The demo page at `/` and the browser client it uses, served as plain files (no build step).

On a bridge bound to loopback the page offers a one-click demo tenant: `POST /demo/tenant` makes one per process
and hands its key to callers on loopback. Bound to any other address there is no demo tenant (404) and the page
asks for a tenant key instead.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from litestar import Request, Response, get, post
from litestar.status_codes import HTTP_201_CREATED

from shared.credentials import hash_api_key, new_api_key
from shared.errors import NotFound
from shared.models import Tenant, utcnow
from shared.webhook.target import is_loopback

WEB = Path(__file__).parent / "web"
SUPABASE_JS = Path(__file__).resolve().parents[1] / "node_modules/@supabase/supabase-js/dist/umd/supabase.js"
SUPABASE_JS_CDN = "https://cdn.jsdelivr.net/npm/@supabase/supabase-js@2.100.0/dist/umd/supabase.js"
FILES = {
    "/interview-client.js": ("interview-client.js", "text/javascript"),
    "/interview-client.d.ts": ("interview-client.d.ts", "application/typescript"),
    "/pcm-worklet.js": ("pcm-worklet.js", "text/javascript"),
    "/demo.js": ("demo.js", "text/javascript"),
    "/demo.css": ("demo.css", "text/css"),
}
AnyRequest = Request[Any, Any, Any]


@dataclass
class DemoTenant:
    """The demo tenant of this process: made on the first click, its key kept in memory only."""

    api_key: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@cache
def _file(name: str) -> bytes:
    return (WEB / name).read_bytes()


@cache
def _supabase_js() -> bytes:
    return SUPABASE_JS.read_bytes()


def supabase_js_url() -> str:
    """supabase-js from this checkout's node_modules when `npm ci` ran, else the same version from a CDN."""
    return "/vendor/supabase.js" if SUPABASE_JS.exists() else SUPABASE_JS_CDN


def demo_available(request: AnyRequest) -> bool:
    return is_loopback(request.app.state.services.settings.host)


@get("/", include_in_schema=False)
async def demo_page(request: AnyRequest) -> Response[bytes]:
    page = _file("index.html").decode()
    page = page.replace("{supabase_js}", supabase_js_url())
    page = page.replace("{demo_tenant}", "on" if demo_available(request) else "off")
    return Response(page.encode(), media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})


@get(list(FILES), include_in_schema=False)
async def web_file(request: AnyRequest) -> Response[bytes]:
    name, media_type = FILES[request.url.path]
    return Response(_file(name), media_type=media_type, headers={"Cache-Control": "no-cache"})


@get("/vendor/supabase.js", include_in_schema=False)
async def supabase_js() -> Response[bytes]:
    if not SUPABASE_JS.exists():
        raise NotFound("supabase-js is not installed here (npm ci); the page loads it from a CDN")
    return Response(_supabase_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=3600"})


@post("/demo/tenant", status_code=HTTP_201_CREATED, include_in_schema=False)
async def demo_tenant(request: AnyRequest) -> dict[str, str]:
    """The demo tenant's key, for a page on a loopback-bound bridge opened from this machine only."""
    host = urlsplit("//" + request.headers.get("host", "")).hostname  # a rebound DNS name is not loopback
    if (
        not demo_available(request)
        or not is_loopback(request.client.host if request.client else None)
        or not is_loopback(host)
    ):
        raise NotFound("there is no demo tenant on a bridge that listens beyond loopback; use a tenant key")
    state: DemoTenant = request.app.state.demo_tenant
    async with state.lock:
        if state.api_key is None:
            api_key = new_api_key()
            tenant = Tenant(id=str(uuid.uuid4()), name="demo", created_at=utcnow())
            await request.app.state.services.store.create_tenant(tenant, hash_api_key(api_key))
            state.api_key = api_key
    return {"api_key": state.api_key}


DEMO_ROUTES = [demo_page, web_file, supabase_js, demo_tenant]
