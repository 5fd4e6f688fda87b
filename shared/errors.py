"""The bridge's own error classes. `bridge.errors` turns each into one JSON response shape, in one place.

Backends wrap driver errors in these (`raise StoreUnavailable(...) from exc`) so handlers never guess.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base class: carries the HTTP status, a stable machine-readable code and a human-readable detail."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class Unauthorized(BridgeError):
    status_code = 401
    code = "unauthorized"


class NotFound(BridgeError):
    """Unknown objects and other tenants' objects look the same: existence is never revealed."""

    status_code = 404
    code = "not_found"


class Forbidden(BridgeError):
    status_code = 403
    code = "forbidden"


class TenantMismatch(BridgeError):
    status_code = 403
    code = "tenant_mismatch"


class InvalidRequest(BridgeError):
    status_code = 400
    code = "invalid_request"


class InvalidAudio(BridgeError):
    status_code = 400
    code = "invalid_audio"


class SessionClosed(BridgeError):
    status_code = 409
    code = "session_closed"


class SequenceConflict(BridgeError):
    status_code = 409
    code = "sequence_conflict"


class PayloadTooLarge(BridgeError):
    status_code = 413
    code = "payload_too_large"


class RequestTimeout(BridgeError):
    """The request body did not arrive whole in time (BODY_TIMEOUT_S): a stalled or trickling client."""

    status_code = 408
    code = "request_timeout"


class RateLimited(BridgeError):
    status_code = 429
    code = "rate_limited"


class ServiceUnavailable(BridgeError):
    status_code = 503
    code = "service_unavailable"


class StoreUnavailable(ServiceUnavailable):
    code = "store_unavailable"


class EngineUnavailable(ServiceUnavailable):
    """The transcription engine cannot answer now (not loaded, outage, quota); the audio stays pending."""

    code = "engine_unavailable"


class ConfigurationError(Exception):
    """Settings that cannot work together; raised at start-up, never per request."""


class StoreConflict(BridgeError):
    """A write collided with existing data in a way the caller must resolve (e.g. a duplicate id)."""

    status_code = 409
    code = "conflict"


class ServedElsewhere(BridgeError):
    """The session runs on a machine of its own: Fly's proxy replays the request there (`fly-replay`). A client
    only sees this when no Fly proxy stands in front of the bridge."""

    status_code = 409
    code = "served_elsewhere"

    def __init__(self, fly_replay: str) -> None:
        super().__init__(f"this session is served by another machine ({fly_replay}); Fly's proxy replays it there")
        self.fly_replay = fly_replay


class AudioUndecryptable(BridgeError):
    """Stored audio that the configured AUDIO_ENCRYPTION_KEY and AUDIO_ENCRYPTION_KEYS_OLD cannot open: written
    under another key, or altered or moved to another chunk's row. Never handed on as if it were audio."""

    status_code = 500
    code = "audio_undecryptable"
