"""Keep credentials out of logs: the realtime socket carries its key in the query string (`?apikey=`)."""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

REDACTED: Final = "REDACTED"
_SECRET_PARAMS: Final = frozenset({"apikey", "access_token", "token"})
# `token=`/`apikey=` in query strings and JSON, bearer credentials, and the bridge's own key and token shapes; no
# match crosses a quote or a backslash, so masking JSON text leaves it valid JSON
_SECRETS: Final = re.compile(
    r"\b(?P<name>apikey|access_token|token|secret|password)(?P<sep>=|\":\s*\"|: )[^&\s\"',\\]+"
    r"|\b(?P<scheme>bearer)\s+[^\s\"',\\]+"
    r"|\bibk_[A-Za-z0-9_-]{8,}"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+",
    re.IGNORECASE,
)
# every alternative above starts with one of these (lower-cased): text without any is returned at once, as the
# regex costs ~9 us on a 230-character access line and runs for every log line
_TRIGGERS: Final = ("apikey", "token", "secret", "password", "bearer", "ibk_", "eyj")


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


def may_hold_secret(text: str) -> bool:
    """False when `redact_text` would certainly leave `text` as it is (cheap: no regex)."""
    lowered = text.lower()
    return any(trigger in lowered for trigger in _TRIGGERS)


def redact_text(text: str) -> str:
    """Mask credentials in free text: `token=abc` -> `token=REDACTED`, `Bearer abc` -> `Bearer REDACTED`."""
    if not may_hold_secret(text):
        return text

    def mask(match: re.Match[str]) -> str:
        if match.group("name"):
            return f"{match.group('name')}{match.group('sep')}{REDACTED}"
        if match.group("scheme"):
            return f"{match.group('scheme')} {REDACTED}"
        return REDACTED

    return _SECRETS.sub(mask, text)


class RedactSecretsFilter(logging.Filter):
    """A logging filter that masks credentials in any record's message (`redact_text`), for loggers whose lines are
    not JSON (uvicorn's, and any in a process where `bridge.logs` did not set logging up)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install_log_redaction(*logger_names: str) -> None:
    """Attach `RedactSecretsFilter` to the given loggers (default: uvicorn's access and error loggers)."""
    for name in logger_names or ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(RedactSecretsFilter())
