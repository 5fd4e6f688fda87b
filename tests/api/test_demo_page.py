"""The demo page and its files, and the demo tenant that exists only on a bridge bound to loopback."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from bridge.app import create_app
from shared.settings import Settings
from tests.isolation.world import in_process


async def test_the_page_and_its_client_module_are_served(make_settings: Callable[..., Settings]) -> None:
    """GET / is the demo page with the stable hooks; the client, its types, the worklet, script and style follow."""
    async with in_process(create_app(make_settings())) as client:
        page = await client.get("/")
        files = {path: await client.get(path) for path in
                 ("/interview-client.js", "/interview-client.d.ts", "/pcm-worklet.js", "/demo.js", "/demo.css")}  # fmt: skip
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for hook in ('id="record"', 'id="transcript"', 'id="level"', 'lang="en"', 'name="viewport"'):
        assert hook in page.text
    assert all(response.status_code == 200 for response in files.values())
    assert files["/interview-client.js"].headers["content-type"].startswith("text/javascript")
    assert "export class InterviewClient" in files["/interview-client.js"].text
    assert "export class InterviewClient" in files["/interview-client.d.ts"].text
    assert "registerProcessor('pcm-capture'" in files["/pcm-worklet.js"].text


async def test_a_loopback_bridge_gives_the_page_a_demo_tenant(make_settings: Callable[..., Settings]) -> None:
    """Bound to 127.0.0.1, the page offers the demo tenant and its key starts a session (the same key each time),
    but not to a request whose Host names another site."""
    async with in_process(create_app(make_settings(host="127.0.0.1"))) as client:
        client.base_url = httpx.URL("http://127.0.0.1:8080")  # the page as the browser on this machine opens it
        assert 'data-demo-tenant="on"' in (await client.get("/")).text
        first = await client.post("/demo/tenant")
        second = await client.post("/demo/tenant")
        key = first.json()["api_key"]
        created = await client.post("/sessions", json={}, headers={"Authorization": f"Bearer {key}"})
        rebound = await client.post("/demo/tenant", headers={"Host": "attacker.example:8080"})
    assert first.status_code == 201 and second.json()["api_key"] == key
    assert created.status_code == 201
    assert rebound.status_code == 404  # a page on another name that resolves here (DNS rebinding) gets nothing


@pytest.mark.parametrize(("host", "caller"), [("0.0.0.0", "127.0.0.1"), ("127.0.0.1", "203.0.113.9")])
async def test_no_demo_tenant_beyond_loopback(make_settings: Callable[..., Settings], host: str, caller: str) -> None:
    """A bridge listening beyond loopback, or a caller from elsewhere, gets a 404 and no tenant is made."""
    app = create_app(make_settings(host=host))
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app, client=(caller, 5000))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge.test") as client:
            refused = await client.post("/demo/tenant")
            page = await client.get("/")
        tenants = await app.state.services.store.tenants_named("demo")
    assert refused.status_code == 404 and refused.json()["error"] == "not_found"
    assert tenants == []
    if host != "127.0.0.1":
        assert 'data-demo-tenant="off"' in page.text
