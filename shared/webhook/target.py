"""Where a tenant's webhook may point: a public https URL, or this machine (loopback, http allowed).

The bridge makes the request, so a URL is a way to make it call anything it can reach: cloud metadata at
169.254.169.254, the database on the private network. URLs are checked when they are set (scheme and host) and
again before every attempt, on the addresses the name resolves to then (a name may be re-pointed meanwhile).
Addresses that are not global (RFC 1918, ULA, link-local, CGNAT, reserved) are refused unless
WEBHOOK_ALLOW_PRIVATE=on; loopback is always allowed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpx

from shared.errors import InvalidRequest

LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback(host: str | None) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1 (brackets allowed): this machine only. The webhook rules and the demo
    tenant share it."""
    host = (host or "").strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_webhook_url(url: str) -> str:
    """The URL as given when a tenant may use it; InvalidRequest saying why when not."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise InvalidRequest(f"webhook URL {url!r} is not a URL: {exc}") from exc
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise InvalidRequest(f"webhook URL {url!r} must be an https URL")
    if parsed.scheme == "http" and not is_loopback(parsed.host):
        raise InvalidRequest(f"webhook URL {url!r} must use https (plain http is allowed on loopback only)")
    if parsed.userinfo:
        raise InvalidRequest("webhook URL must not carry a user name or password; sign requests with the secret")
    return url


def _refused(address: str, allow_private: bool) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return False
    return not ip.is_global and not allow_private


async def refusal(url: str, *, allow_private: bool) -> str | None:
    """Why the bridge will not POST to `url` now (None when it may): the URL rules, then every address its host
    resolves to."""
    try:
        check_webhook_url(url)
    except InvalidRequest as exc:
        return exc.detail
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parsed.host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot resolve {parsed.host}: {exc}"
    for info in infos:
        address = str(info[4][0])
        if _refused(address, allow_private):
            return f"{parsed.host} resolves to {address}, a private or link-local address (WEBHOOK_ALLOW_PRIVATE=on)"
    return None
