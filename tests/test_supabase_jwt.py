"""Supabase user tokens: HS256 with the project secret, ES256/RS256 against the project's JWKS (served over
httpx.MockTransport), and every way a token must be refused."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from shared.errors import ConfigurationError, ServiceUnavailable, Unauthorized
from shared.supabase_jwt import SupabaseJwtVerifier, SupabaseUser, jwks_url_for

SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
PROJECT = "https://abcdefghijklmnop.supabase.co"
JWKS_URL = jwks_url_for(PROJECT)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_EC_KEY = ec.generate_private_key(ec.SECP256R1())


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "aud": "authenticated",
        "exp": now + 3600,
        "iat": now,
        "iss": f"{PROJECT}/auth/v1",
        "sub": "0b4c7c59-5d4f-4d0e-9d59-9a3c2f1e8a11",
        "email": "recruiter@example.test",
        "role": "authenticated",
        "app_metadata": {"provider": "email", "tenant_id": "tenant-a"},
        "user_metadata": {},
    }
    base.update(overrides)
    return base


def jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = ECAlgorithm if alg == "ES256" else RSAAlgorithm
    data: dict[str, Any] = algorithm.to_jwk(key.public_key(), as_dict=True)
    return {**data, "kid": kid, "alg": alg, "use": "sig", "key_ops": ["verify"]}


class Jwks:
    """The project's JWKS endpoint, counting fetches; its keys can be swapped (rotation) or it can fail."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        self.fetches = 0
        self.status = 200

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert str(request.url) == JWKS_URL
        self.fetches += 1
        if self.status != 200:
            return httpx.Response(self.status, json={"message": "upstream error"})
        return httpx.Response(200, json={"keys": self.keys})

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_hs256_token_gives_user_and_tenant() -> None:
    """A token signed with the project's JWT secret yields the user id, tenant, role and claims."""
    verifier = SupabaseJwtVerifier(jwt_secret=SECRET)
    user = await verifier.verify(jwt.encode(claims(), SECRET, algorithm="HS256"))
    assert user == SupabaseUser(
        user_id="0b4c7c59-5d4f-4d0e-9d59-9a3c2f1e8a11", tenant_id="tenant-a", role="authenticated", claims=user.claims
    )
    assert user.claims["email"] == "recruiter@example.test"


@pytest.mark.parametrize(
    ("token_claims", "reason"),
    [
        pytest.param(claims(exp=int(time.time()) - 10), "expired", id="expired"),
        pytest.param(claims(aud="service"), "not for this service", id="wrong-audience"),
        pytest.param({k: v for k, v in claims().items() if k != "aud"}, "lacks a required claim", id="no-audience"),
        pytest.param({k: v for k, v in claims().items() if k != "exp"}, "lacks a required claim", id="no-expiry"),
        pytest.param(claims(app_metadata={"provider": "email"}), "app_metadata.tenant_id", id="no-tenant"),
        pytest.param(
            claims(app_metadata={}, user_metadata={"tenant_id": "tenant-a"}),
            "app_metadata.tenant_id",
            id="tenant-only-in-user-metadata",
        ),
        pytest.param(claims(app_metadata={"tenant_id": ""}), "app_metadata.tenant_id", id="empty-tenant"),
    ],
)
async def test_bad_claims_are_refused(token_claims: dict[str, Any], reason: str) -> None:
    """Expired, wrong- or no-audience, no-expiry and tenantless tokens are refused with a reason."""
    verifier = SupabaseJwtVerifier(jwt_secret=SECRET)
    with pytest.raises(Unauthorized, match=reason):
        await verifier.verify(jwt.encode(token_claims, SECRET, algorithm="HS256"))


async def test_alg_none_is_refused() -> None:
    """An unsigned token (`alg: none`) is refused even when its claims are perfect."""
    verifier = SupabaseJwtVerifier(jwt_secret=SECRET, jwks_url=JWKS_URL, http_client=Jwks([]).client())
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."
    with pytest.raises(Unauthorized, match="'none' is not accepted"):
        await verifier.verify(unsigned)


async def test_tampered_token_is_refused() -> None:
    """Swapping the payload of a valid token for another tenant's breaks the signature and is refused."""
    verifier = SupabaseJwtVerifier(jwt_secret=SECRET)
    header, _, signature = jwt.encode(claims(), SECRET, algorithm="HS256").split(".")
    forged = f"{header}.{b64(claims(app_metadata={'tenant_id': 'tenant-b'}))}.{signature}"
    with pytest.raises(Unauthorized, match="signature does not verify"):
        await verifier.verify(forged)


async def test_wrong_secret_is_refused() -> None:
    """A token signed with another project's secret is refused."""
    verifier = SupabaseJwtVerifier(jwt_secret=SECRET)
    other = jwt.encode(claims(), "another-projects-secret-of-enough-length-xx", algorithm="HS256")
    with pytest.raises(Unauthorized, match="signature does not verify"):
        await verifier.verify(other)


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "Bearer x.y.z"])
async def test_garbage_is_refused(token: str) -> None:
    """Strings that are not JWTs are refused, not crashed on."""
    verifier = SupabaseJwtVerifier(jwt_secret=SECRET)
    with pytest.raises(Unauthorized):
        await verifier.verify(token)


@pytest.mark.parametrize(("key", "alg"), [(EC_KEY, "ES256"), (RSA_KEY, "RS256")], ids=["ES256", "RS256"])
async def test_asymmetric_token_verified_with_cached_jwks(key: Any, alg: str) -> None:
    """ES256 and RS256 tokens verify against the project's JWKS, which is fetched once and then cached."""
    jwks = Jwks([jwk(EC_KEY, "ec-1", "ES256"), jwk(RSA_KEY, "rsa-1", "RS256")])
    verifier = SupabaseJwtVerifier(jwks_url=JWKS_URL, http_client=jwks.client())
    kid = "ec-1" if alg == "ES256" else "rsa-1"
    for _ in range(3):
        user = await verifier.verify(jwt.encode(claims(), key, algorithm=alg, headers={"kid": kid}))
        assert user.tenant_id == "tenant-a"
    assert jwks.fetches == 1


async def test_rotated_key_is_picked_up_and_unknown_kids_refused() -> None:
    """A token with a kid the cache lacks triggers one refetch (key rotation); a kid absent after it is refused."""
    jwks = Jwks([jwk(EC_KEY, "old", "ES256")])
    verifier = SupabaseJwtVerifier(jwks_url=JWKS_URL, http_client=jwks.client(), jwks_min_refetch_seconds=0)
    await verifier.verify(jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "old"}))
    jwks.keys = [jwk(EC_KEY, "old", "ES256"), jwk(OTHER_EC_KEY, "new", "ES256")]
    user = await verifier.verify(jwt.encode(claims(), OTHER_EC_KEY, algorithm="ES256", headers={"kid": "new"}))
    assert user.tenant_id == "tenant-a" and jwks.fetches == 2
    with pytest.raises(Unauthorized, match="no key 'ghost'"):
        await verifier.verify(jwt.encode(claims(), OTHER_EC_KEY, algorithm="ES256", headers={"kid": "ghost"}))


async def test_unknown_kids_do_not_flood_the_jwks_endpoint() -> None:
    """Within the refetch interval, tokens with unknown kids are refused from the cache without new fetches."""
    jwks = Jwks([jwk(EC_KEY, "k1", "ES256")])
    verifier = SupabaseJwtVerifier(jwks_url=JWKS_URL, http_client=jwks.client())
    await verifier.verify(jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "k1"}))
    for i in range(5):
        with pytest.raises(Unauthorized):
            await verifier.verify(jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": f"junk-{i}"}))
    assert jwks.fetches == 1


async def test_token_signed_by_another_key_with_a_known_kid_is_refused() -> None:
    """A token claiming the project's kid but signed by an attacker's key is refused."""
    jwks = Jwks([jwk(EC_KEY, "k1", "ES256")])
    verifier = SupabaseJwtVerifier(jwks_url=JWKS_URL, http_client=jwks.client())
    with pytest.raises(Unauthorized, match="signature does not verify"):
        await verifier.verify(jwt.encode(claims(), OTHER_EC_KEY, algorithm="ES256", headers={"kid": "k1"}))


async def test_algorithm_confusion_is_refused() -> None:
    """An HS256 token is refused when only the JWKS is configured (no HMAC with a public key), and RS256 claiming an EC kid too."""
    jwks = Jwks([jwk(EC_KEY, "k1", "ES256")])
    verifier = SupabaseJwtVerifier(jwks_url=JWKS_URL, http_client=jwks.client())
    with pytest.raises(Unauthorized, match="HS256 tokens are not accepted"):
        await verifier.verify(jwt.encode(claims(), SECRET, algorithm="HS256"))
    with pytest.raises(Unauthorized, match="no key 'k1' for RS256"):
        await verifier.verify(jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "k1"}))
    secret_only = SupabaseJwtVerifier(jwt_secret=SECRET)
    with pytest.raises(Unauthorized, match="need the project's JWKS"):
        await secret_only.verify(jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "k1"}))


async def test_jwks_outage_is_service_unavailable() -> None:
    """When the JWKS endpoint fails the verifier says the keys are unavailable (503), not that the token is bad."""
    jwks = Jwks([])
    jwks.status = 502
    verifier = SupabaseJwtVerifier(jwks_url=JWKS_URL, http_client=jwks.client())
    with pytest.raises(ServiceUnavailable, match="cannot load the Supabase signing keys") as caught:
        await verifier.verify(jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "k1"}))
    assert not isinstance(caught.value, Unauthorized)


def test_a_key_source_is_required() -> None:
    """A verifier with neither a JWT secret nor a JWKS URL is a configuration error at start-up."""
    with pytest.raises(ConfigurationError, match="SUPABASE_JWT_SECRET"):
        SupabaseJwtVerifier()
