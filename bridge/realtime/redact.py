"""Keep credentials out of logs: the realtime socket carries its key in the query string (`?apikey=`)."""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

REDACTED: Final = "REDACTED"
_SECRET_PARAMS: Final = frozenset({"apikey", "access_token", "token"})
_PATTERN: Final = re.compile(r"(?i)\b(apikey|access_token|token)=[^&\s\"']+")


def redact_query(query: str) -> str:
    """`apikey=secret&vsn=1.0.0` -> `apikey=REDACTED&vsn=1.0.0`."""
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, REDACTED if k.lower() in _SECRET_PARAMS else v) for k, v in pairs])


def redact_scope(scope: MutableMapping[str, Any]) -> None:
    """Rewrite the ASGI scope's query string in place, so the server's own access line shows no key.

    Call it after reading the query parameters: uvicorn logs `"WebSocket /path?query" [accepted]` from this scope.
    """
    raw = scope.get("query_string", b"")
    if raw:
        scope["query_string"] = redact_query(raw.decode("latin-1")).encode("latin-1")


class RedactSecretsFilter(logging.Filter):
    """A logging filter that masks `apikey=`/`access_token=`/`token=` values in any record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _PATTERN.sub(lambda m: f"{m.group(1)}={REDACTED}", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install_log_redaction(*logger_names: str) -> None:
    """Attach `RedactSecretsFilter` to the given loggers (default: uvicorn's access and error loggers)."""
    for name in logger_names or ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(RedactSecretsFilter())
