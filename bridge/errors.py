"""Every error leaves the bridge as `{"error": code, "detail": text}`; this is the one place that says how."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

from shared.errors import BridgeError, ServedElsewhere

log = logging.getLogger("bridge.errors")

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "invalid_request",
    429: "rate_limited",
    503: "service_unavailable",
}


def error_response(
    status: int, code: str, detail: str, retry_after: int | None = None, headers: dict[str, str] | None = None
) -> Response[Any]:
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Response({"error": code, "detail": detail}, status_code=status, headers=headers or None)


def retry_after_for(exc: BridgeError) -> int | None:
    """Seconds a client should wait before trying again: the error's own, else 5 for a limit or an outage."""
    if exc.retry_after is not None:
        return exc.retry_after
    return 5 if exc.status_code in (429, 503) else None


def bridge_error_handler(_: Request[Any, Any, Any], exc: BridgeError) -> Response[Any]:
    retry = retry_after_for(exc)
    headers = {"fly-replay": exc.fly_replay} if isinstance(exc, ServedElsewhere) else None
    return error_response(exc.status_code, exc.code, exc.detail, retry, headers)


def http_error_handler(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    detail = str(exc.detail)
    if isinstance(exc, ValidationException) and exc.extra:
        detail = f"{detail}: {exc.extra}"
    if status == 413:
        detail = "the request body is too large; send smaller chunks (see MAX_BODY_BYTES)"
    return error_response(status, _HTTP_CODES.get(status, "http_error"), detail)


def unexpected_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "something went wrong on our side")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    BridgeError: bridge_error_handler,
    HTTPException: http_error_handler,
    Exception: unexpected_error_handler,
}
