"""Webhooks on session end: signed transcript POSTed from the outbox, retried, never redirected, never private."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from freezegun import freeze_time

from shared.errors import InvalidRequest
from shared.models import Session, SessionStatus, Tenant, utcnow
from shared.store.sqlite import SQLiteStore
from shared.webhook.sender import WebhookSender
from shared.webhook.signature import sign, verify
from shared.webhook.target import check_webhook_url, refusal
from tests.helpers import FIXTURES, bearer, load_pcm, new_session, new_tenant, post_chunk, services, wav_chunks
from tests.webhook_receiver import WebhookReceiver

SERVICE_KEY = "service-key-for-tests-0123456789abcdef"
SECRET = "whsec_test-secret"
SPEECH = wav_chunks(load_pcm(FIXTURES / "live" / "two_sentences.flac"))


async def tenant_with_webhook(client: Any, url: str) -> str:
    tenant_id, key = await new_tenant(client)
    assert await services(client).store.set_tenant_webhook(tenant_id, url, SECRET)
    return key


async def received(receiver: WebhookReceiver, count: int) -> list[Any]:
    return await asyncio.to_thread(receiver.wait_for, count)


async def test_ending_a_session_posts_its_signed_transcript(app_client: Callable[..., Any]) -> None:
    """`end` sends the whole transcript once, signed with the tenant's secret, with an id to drop repeats by."""
    with WebhookReceiver() as receiver:
        async with app_client(reaper_interval=0) as client:
            key = await tenant_with_webhook(client, receiver.url)
            session_id, token = await new_session(client, key)
            for seq, data in enumerate(SPEECH):
                await post_chunk(client, token, session_id, "candidate", seq, data)
            assert (await client.post(f"/sessions/{session_id}/end", headers=bearer(token))).status_code == 200
            [request] = await received(receiver, 1)
            transcript = (await client.get(f"/sessions/{session_id}/transcript", headers=bearer(key))).json()
    assert request.path == "/hooks/bridge"
    assert verify(SECRET, request.body, request.headers["x-bridge-signature"], now=int(time.time()))
    assert not verify("whsec_another", request.body, request.headers["x-bridge-signature"], now=int(time.time()))
    body = json.loads(request.body)
    assert body["event"] == "session.ended" and body["id"]
    assert body["session"]["id"] == session_id and body["session"]["status"] == "ended"
    assert body["entries"] == transcript["entries"] and body["entries"]
    assert len(receiver.received) == 1


async def test_a_failed_delivery_is_retried_from_the_outbox_by_a_later_pass(app_client: Callable[..., Any]) -> None:
    """The receiver answers 500 first: a reaper pass once the retry is due delivers the same id again."""
    with WebhookReceiver(answers=[500]) as receiver:
        async with app_client(reaper_interval=0) as client:
            key = await tenant_with_webhook(client, receiver.url)
            session_id, token = await new_session(client, key)
            await client.post(f"/sessions/{session_id}/end", headers=bearer(token))
            await received(receiver, 1)
            early = await client.post("/functions/v1/session-reaper", headers=bearer(SERVICE_KEY))
            with freeze_time(utcnow() + timedelta(minutes=5), tick=True):
                later = await client.post("/functions/v1/session-reaper", headers=bearer(SERVICE_KEY))
            first, second = await received(receiver, 2)
    assert early.json()["webhooks_sent"] == 0  # not due yet
    assert later.json()["webhooks_sent"] == 1
    assert json.loads(first.body)["id"] == json.loads(second.body)["id"]
    assert len(receiver.received) == 2


async def test_a_redirect_is_not_followed(app_client: Callable[..., Any]) -> None:
    """A 302 from the receiver counts as a failed attempt; the address it names never gets a request."""
    with WebhookReceiver() as elsewhere, WebhookReceiver(answers=[302], location=elsewhere.url) as receiver:
        async with app_client(reaper_interval=0) as client:
            key = await tenant_with_webhook(client, receiver.url)
            session_id, token = await new_session(client, key)
            await client.post(f"/sessions/{session_id}/end", headers=bearer(token))
            await received(receiver, 1)
            await asyncio.sleep(0.3)
    assert elsewhere.received == []


@pytest.mark.parametrize(
    "url",
    [
        "https://10.1.2.3/hook",  # RFC 1918
        "https://192.168.0.10/hook",
        "https://169.254.169.254/latest/meta-data",  # link-local: cloud metadata
        "https://[fd00::1]/hook",  # ULA
        "https://[fe80::1]/hook",
        "https://100.64.0.1/hook",  # shared address space
    ],
)
async def test_private_and_link_local_targets_are_refused_unless_allowed(url: str) -> None:
    """Addresses that are not global are refused before any request, unless WEBHOOK_ALLOW_PRIVATE=on."""
    reason = await refusal(url, allow_private=False)
    assert reason is not None and "private or link-local" in reason
    assert await refusal(url, allow_private=True) is None


async def test_public_and_loopback_targets_pass() -> None:
    """A public https address and loopback over http or https may receive webhooks."""
    for url in ("https://93.184.216.34/hook", "http://127.0.0.1:9/hook", "https://[::1]/hook", "http://localhost/x"):
        assert await refusal(url, allow_private=False) is None, url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/in", "must use https"),
        ("ftp://hooks.example.com/in", "must be an https URL"),
        ("https://user:pw@hooks.example.com/in", "user name or password"),
        ("not a url", "must be an https URL"),
    ],
)
def test_a_webhook_url_is_checked_when_it_is_set(url: str, why: str) -> None:
    """Plain http beyond loopback, other schemes and credentials in the URL are refused with the reason."""
    with pytest.raises(InvalidRequest, match=why):
        check_webhook_url(url)


def test_a_signature_is_refused_when_old_or_tampered() -> None:
    """A receiver's check fails for another body, another key, or a delivery signed too long ago."""
    body = b'{"event":"session.ended"}'
    header = sign(SECRET, body, 1_000_000)
    assert verify(SECRET, body, header, now=1_000_100)
    assert not verify(SECRET, body + b" ", header, now=1_000_100)
    assert not verify("whsec_other", body, header, now=1_000_100)
    assert not verify(SECRET, body, header, now=1_000_000 + 3600)
    assert not verify(SECRET, body, "v1=deadbeef", now=1_000_100)


def test_the_readme_verification_snippet_accepts_a_real_signature_and_nothing_else() -> None:
    """The receiver's check printed in the README agrees with what the bridge signs."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "def verify(" in block)
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)  # the README's own code, as a tenant would paste it
    body = b'{"event":"session.ended","id":"d1"}'
    header = sign(SECRET, body, int(time.time()))
    assert namespace["verify"](SECRET, body, header)
    assert not namespace["verify"](SECRET, body + b"x", header)
    assert not namespace["verify"](SECRET, body, sign(SECRET, body, int(time.time()) - 3600))


async def test_the_sender_refuses_a_private_target_without_sending_and_keeps_the_reason(tmp_path: Path) -> None:
    """A webhook pointing at a private address (set before the rule, or re-pointed) gets no request at all; the
    outbox keeps the delivery, failed for that reason, for a later attempt."""
    requests: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: requests.append(request) or httpx.Response(200))
    store = SQLiteStore(tmp_path / "bridge.sqlite3")
    await store.start()
    sender = WebhookSender(store, client=httpx.AsyncClient(transport=transport))
    try:
        tenant = Tenant(id="t-private", name="private", created_at=utcnow())
        await store.create_tenant(tenant, api_key_hash="unused")
        await store.set_tenant_webhook(tenant.id, "https://10.1.2.3/hook", SECRET)
        session = Session.new(tenant.id)
        await store.create_session(session)
        now = utcnow()
        await store.close_session(session.id, SessionStatus.ENDED, now)
        assert await sender.deliver_due(now, session_id=session.id, due_by=now + timedelta(hours=1)) == 0
        [row] = store.conn.execute("SELECT attempts, last_error, delivered_at FROM webhook_deliveries").fetchall()
    finally:
        await sender.aclose()
        await store.close()
    assert requests == []
    assert row["attempts"] == 1 and "private or link-local" in row["last_error"] and row["delivered_at"] is None
