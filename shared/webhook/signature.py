"""The webhook signature: `X-Bridge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.

The key is the UTF-8 bytes of the tenant's `webhook_secret`. The time inside the signed text lets a receiver
refuse an old delivery replayed later; the same `id` in the body lets it drop a repeat of one it already took.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Bridge-Signature"


def sign(secret: str, body: bytes, at: int) -> str:
    """The header value for `body` sent at unix time `at`."""
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def verify(secret: str, body: bytes, header: str, *, now: int, tolerance_s: int = 300) -> bool:
    """What a receiver checks: a v1 signature of this body with this key, made within `tolerance_s` of `now`."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        at = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - at) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, at), f"t={at},v1={fields.get('v1', '')}")
