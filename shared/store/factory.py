"""Pick the store the settings ask for; imports of the production drivers stay lazy.

Every store comes wrapped in `EncryptedStore`: chunk audio is encrypted at rest when `AUDIO_ENCRYPTION_KEY` is
set, and whatever the keys, audio encrypted under a key this bridge does not have is refused at start-up.
"""

from __future__ import annotations

from shared.errors import ConfigurationError
from shared.settings import Settings
from shared.store.base import Store
from shared.store.encrypted import AudioCipher, EncryptedStore


def create_store(settings: Settings) -> Store:
    cipher = AudioCipher.from_settings(settings.audio_encryption_key, settings.audio_encryption_keys_old)
    return EncryptedStore(_backend(settings), cipher)


def _backend(settings: Settings) -> Store:
    kind = settings.resolved_store()
    auto_migrate = settings.auto_migrate == "on"
    if kind == "sqlite":
        from shared.store.sqlite import SQLiteStore

        return SQLiteStore(settings.sqlite_path, auto_migrate=auto_migrate)
    if kind == "postgres":
        if not settings.database_url:
            raise ConfigurationError("STORE=postgres needs DATABASE_URL (postgresql://user:pass@host:5432/db)")
        from shared.store.postgres import PostgresStore

        return PostgresStore(settings.database_url, auto_migrate=auto_migrate)
    if not (settings.supabase_url and settings.supabase_service_role_key):
        raise ConfigurationError("STORE=supabase needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY")
    from shared.store.supabase import SupabaseStore

    return SupabaseStore(settings.supabase_url, settings.supabase_service_role_key)
