"""The local realtime hub served the way Supabase Realtime is, so the official clients work against both."""

from __future__ import annotations

from .auth import RESERVED_EVENTS, TopicAuthorizer
from .redact import RedactSecretsFilter, install_log_redaction
from .routes import realtime_handlers

__all__ = [
    "RESERVED_EVENTS",
    "RedactSecretsFilter",
    "TopicAuthorizer",
    "install_log_redaction",
    "realtime_handlers",
]
