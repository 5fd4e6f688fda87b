"""Turn an `Authorization: Bearer` credential into a Principal.

Tenant keys are looked up by hash and cached briefly (the per-chunk path must not hit the store for them);
session and viewer tokens are verified by signature alone.
"""

from __future__ import annotations

import hmac
import time
from typing import Protocol

from shared.credentials import (
    Principal,
    PrincipalKind,
    SessionTokens,
    hash_api_key,
    looks_like_jwt,
)
from shared.errors import Unauthorized
from shared.store.base import Store
from shared.supabase_jwt import SupabaseUser


class UserTokenVerifier(Protocol):
    """Verifies a Supabase Auth user JWT and names its tenant (shared/supabase_jwt.py)."""

    async def verify(self, token: str) -> SupabaseUser: ...


class Authenticator:
    CACHE_SECONDS = 30.0

    def __init__(
        self,
        store: Store,
        tokens: SessionTokens,
        *,
        service_key: str | None = None,
        user_tokens: UserTokenVerifier | None = None,
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.service_key = service_key
        self.user_tokens = user_tokens
        self._tenant_cache: dict[str, tuple[float, str]] = {}

    async def from_header(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthorized("send your credential as `Authorization: Bearer <key or token>`")
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise Unauthorized("the Authorization header must be `Bearer <key or token>`")
        return await self.principal(credential.strip())

    async def principal(self, credential: str) -> Principal:
        if self.service_key and hmac.compare_digest(credential.encode(), self.service_key.encode()):
            return Principal(PrincipalKind.SERVICE, None)
        if looks_like_jwt(credential):
            claims = self.tokens.verify(credential)
            if claims is not None:
                kind = PrincipalKind.SESSION if claims.scope == "session" else PrincipalKind.VIEWER
                return Principal(kind, claims.tenant_id, session_id=claims.session_id)
            if self.user_tokens is not None:
                user = await self.user_tokens.verify(credential)
                return Principal(PrincipalKind.USER, user.tenant_id, user_id=user.user_id)
            raise Unauthorized("this token was not issued by this bridge")
        tenant_id = await self._tenant_for_key(credential)
        if tenant_id is None:
            raise Unauthorized("unknown API key")
        return Principal(PrincipalKind.TENANT, tenant_id)

    async def _tenant_for_key(self, api_key: str) -> str | None:
        digest = hash_api_key(api_key)
        now = time.monotonic()
        cached = self._tenant_cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        tenant = await self.store.tenant_by_key_hash(digest)
        if tenant is None:
            return None
        if len(self._tenant_cache) > 10_000:
            self._tenant_cache.clear()
        self._tenant_cache[digest] = (now + self.CACHE_SECONDS, tenant.id)
        return tenant.id
