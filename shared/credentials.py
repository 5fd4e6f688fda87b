"""Credentials: tenant API keys (stored hashed) and signed session/viewer tokens (JWTs).

Session and viewer tokens are HS256 JWTs with role `authenticated` and claims `tenant_id`, `session_id`,
`scope`, so that a Supabase project sharing the secret (`SUPABASE_JWT_SECRET`) accepts them for Realtime too.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

import jwt

from shared.errors import Unauthorized

API_KEY_PREFIX = "ibk_"
MAX_VERIFIED_TOKENS = 20_000
TokenScope = Literal["session", "viewer"]


class PrincipalKind(StrEnum):
    TENANT = "tenant"
    SESSION = "session"
    VIEWER = "viewer"
    USER = "user"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant always comes from here, never from a request body."""

    kind: PrincipalKind
    tenant_id: str | None
    session_id: str | None = None
    user_id: str | None = None

    @property
    def can_write(self) -> bool:
        return self.kind in (PrincipalKind.TENANT, PrincipalKind.SESSION, PrincipalKind.USER)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def new_webhook_secret() -> str:
    """The key that signs a tenant's webhooks; the bridge keeps it to sign, so it is stored as is."""
    return "whsec_" + secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    """SHA-256 is enough here: keys are 256 random bits, so there is nothing to brute-force."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and not token.startswith(API_KEY_PREFIX)


@dataclass(frozen=True, slots=True)
class SessionTokenClaims:
    tenant_id: str
    session_id: str
    scope: TokenScope
    expires_at: datetime


class SessionTokens:
    """Issues and verifies tokens scoped to one session."""

    AUDIENCE = "authenticated"

    def __init__(self, secret: str, ttl_seconds: int) -> None:
        if len(secret) < 32:
            raise ValueError("the session token secret must be at least 32 characters")
        self._secret = secret
        self._ttl = ttl_seconds
        self._verified: dict[str, SessionTokenClaims] = {}  # a token's signature is checked once, its expiry always

    def issue(self, tenant_id: str, session_id: str, scope: TokenScope, now: datetime) -> str:
        expires = now + timedelta(seconds=self._ttl)
        claims = {
            "sub": f"{scope}:{session_id}",
            "role": "authenticated",
            "aud": self.AUDIENCE,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "tenant_id": tenant_id,
            "session_id": session_id,
            "scope": scope,
            "app_metadata": {"tenant_id": tenant_id},
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: str) -> SessionTokenClaims | None:
        """The claims of a valid token of ours; None when the token is not one of ours at all.

        Raises `Unauthorized` for our tokens that are expired or tampered with. Every chunk carries its session
        token: a token seen before is not decoded and verified again, only checked for expiry.
        """
        known = self._verified.get(token)
        if known is not None:
            if known.expires_at.timestamp() <= time.time():
                del self._verified[token]
                raise Unauthorized("the token has expired; ask for a new session token")
            return known
        claims = self._decode(token)
        if claims is not None:
            if len(self._verified) >= MAX_VERIFIED_TOKENS:
                self._verified.clear()
            self._verified[token] = claims
        return claims

    def _decode(self, token: str) -> SessionTokenClaims | None:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=self.AUDIENCE,
                options={"require": ["exp", "session_id", "tenant_id", "scope"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the token has expired; ask for a new session token") from exc
        except jwt.InvalidSignatureError:
            return None
        except jwt.InvalidTokenError as exc:
            if "session_id" in str(exc) or "scope" in str(exc) or "tenant_id" in str(exc):
                return None
            raise Unauthorized(f"the token is not valid: {exc}") from exc
        scope = claims["scope"]
        if scope not in ("session", "viewer"):
            raise Unauthorized("the token has an unknown scope")
        return SessionTokenClaims(
            tenant_id=str(claims["tenant_id"]),
            session_id=str(claims["session_id"]),
            scope=scope,
            expires_at=datetime.fromtimestamp(int(claims["exp"])).astimezone(),
        )
