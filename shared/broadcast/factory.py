"""Pick the broadcaster from settings: the in-process hub, or Supabase Realtime's REST broadcast API."""

from __future__ import annotations

from shared.errors import ConfigurationError
from shared.settings import Settings

from .base import Broadcaster
from .local import LocalHub
from .supabase import SupabaseBroadcaster


def create_broadcaster(settings: Settings) -> Broadcaster:
    """`local` -> LocalHub; `supabase` -> SupabaseBroadcaster (needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY)."""
    if settings.resolved_broadcaster() == "local":
        return LocalHub()
    if not settings.supabase_url or not settings.supabase_service_role_key:
        raise ConfigurationError(
            "BROADCASTER=supabase needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY; "
            "set both, or use BROADCASTER=local for the in-process hub"
        )
    return SupabaseBroadcaster(
        settings.supabase_url,
        settings.supabase_service_role_key,
        private=settings.supabase_private_topics,
    )
