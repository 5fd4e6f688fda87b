"""Verifying Supabase Auth user tokens (the `access_token` of a signed-in supabase-js user).

A project signs user tokens either with its legacy shared JWT secret (HS256) or with an asymmetric signing key
(ES256 or RS256) whose public half is published at `{SUPABASE_URL}/auth/v1/.well-known/jwks.json`. The
verifier accepts exactly those: an HS256 token only when a secret is configured, an ES256/RS256 token only
against the JWKS, never `alg: none` and never an HMAC token checked with a public key. The tenant comes from
`app_metadata.tenant_id`, which only the project's service role can set (unlike `user_metadata`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from shared.errors import ConfigurationError, ServiceUnavailable, Unauthorized

ASYMMETRIC_ALGORITHMS = ("ES256", "RS256")


@dataclass
class SupabaseUser:
    """A verified user: the JWT's `sub`, its tenant, its role claim and every claim as sent."""

    user_id: str
    tenant_id: str
    role: str
    claims: dict[str, Any]


def jwks_url_for(supabase_url: str) -> str:
    """Where a Supabase project publishes its public signing keys."""
    return supabase_url.rstrip("/") + "/auth/v1/.well-known/jwks.json"


class SupabaseJwtVerifier:
    """Checks signature, expiry and audience of a Supabase user JWT and reads its tenant."""

    def __init__(
        self,
        *,
        jwt_secret: str | None = None,
        jwks_url: str | None = None,
        audience: str = "authenticated",
        http_client: httpx.AsyncClient | None = None,
        jwks_ttl_seconds: float = 600.0,
        jwks_min_refetch_seconds: float = 30.0,
        leeway_seconds: float = 0.0,
    ) -> None:
        if not jwt_secret and not jwks_url:
            raise ConfigurationError(
                "Supabase user tokens need SUPABASE_JWT_SECRET (HS256) or SUPABASE_URL (its JWKS) to be verified"
            )
        self.jwt_secret = jwt_secret
        self.jwks_url = jwks_url
        self.audience = audience
        self.jwks_ttl_seconds = jwks_ttl_seconds
        self.jwks_min_refetch_seconds = jwks_min_refetch_seconds
        self.leeway_seconds = leeway_seconds
        self._http = http_client
        self._owns_http = http_client is None
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._keys_fetched_at: float | None = None
        self._fetch_lock = asyncio.Lock()

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def verify(self, token: str) -> SupabaseUser:
        """The user the token speaks for; `Unauthorized` (with the reason) for anything not to be trusted."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the bearer token is not a JWT ({exc})") from exc
        algorithm = header.get("alg")
        key: Any
        if algorithm == "HS256":
            if not self.jwt_secret:
                raise Unauthorized("HS256 tokens are not accepted here: this project verifies with its JWKS")
            key = self.jwt_secret
        elif algorithm in ASYMMETRIC_ALGORITHMS:
            if not self.jwks_url:
                raise Unauthorized(f"{algorithm} tokens need the project's JWKS; only a JWT secret is configured")
            key = await self._public_key(header.get("kid"), str(algorithm))
        else:
            raise Unauthorized(f"token algorithm {algorithm!r} is not accepted (HS256, ES256 or RS256 only)")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[str(algorithm)],
                audience=self.audience,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the token has expired; sign in again or refresh the session") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(
                f"the token lacks a required claim ({exc}); Supabase user tokens carry exp, sub, aud"
            ) from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthorized(f"the token is not for this service ({exc}); expected aud {self.audience!r}") from exc
        except jwt.InvalidSignatureError as exc:
            raise Unauthorized("the token's signature does not verify: tampered, or signed by another project") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"the token is invalid: {exc}") from exc
        app_metadata = claims.get("app_metadata")
        tenant_id = app_metadata.get("tenant_id") if isinstance(app_metadata, dict) else None
        if not isinstance(tenant_id, str) or not tenant_id:
            raise Unauthorized(
                "the token carries no app_metadata.tenant_id; set it for the user with the service role"
                " (auth.admin.updateUserById(id, {app_metadata: {tenant_id}}))"
            )
        return SupabaseUser(
            user_id=str(claims["sub"]), tenant_id=tenant_id, role=str(claims.get("role", "")), claims=claims
        )

    async def _public_key(self, kid: Any, algorithm: str) -> Any:
        """The JWKS key for `kid`: from the cache while fresh; refetched when stale, or when the kid is unknown
        (key rotation) but at most once per `jwks_min_refetch_seconds`, so junk kids cannot flood the project."""
        found = self._find(kid, algorithm) if self._age() < self.jwks_ttl_seconds else None
        if found is None:
            async with self._fetch_lock:  # one fetch for a crowd of requests
                age = self._age()
                found = self._find(kid, algorithm) if age < self.jwks_ttl_seconds else None
                if found is None and (age >= self.jwks_ttl_seconds or age >= self.jwks_min_refetch_seconds):
                    await self._fetch()
                    found = self._find(kid, algorithm)
        if found is None:
            raise Unauthorized(f"no key {kid!r} for {algorithm} in the project's JWKS: signed by another project?")
        return found.key

    def _age(self) -> float:
        if self._keys_fetched_at is None:
            return float("inf")
        return time.monotonic() - self._keys_fetched_at

    def _find(self, kid: Any, algorithm: str) -> jwt.PyJWK | None:
        if kid is not None:
            key = self._keys.get(str(kid))
        else:  # no kid: only an unambiguous single key of the right algorithm will do
            matching = [k for k in self._keys.values() if k.algorithm_name == algorithm]
            key = matching[0] if len(matching) == 1 else None
        if key is None or key.algorithm_name != algorithm:
            return None
        return key

    async def _fetch(self) -> None:
        assert self.jwks_url is not None
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10.0)
        try:
            response = await self._http.get(self.jwks_url)
            response.raise_for_status()
            keys = jwt.PyJWKSet.from_dict(response.json()).keys
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            raise ServiceUnavailable(
                f"cannot load the Supabase signing keys from {self.jwks_url}: {exc}", retry_after=5
            ) from exc
        self._keys = {key.key_id: key for key in keys}
        self._keys_fetched_at = time.monotonic()
