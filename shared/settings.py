"""Typed settings, read once from the environment (and `.env`) and passed down explicitly.

Nothing below `bridge.app.create_app` reads `os.environ`: tests and the CLI build a `Settings` and hand it in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

EngineName = Literal["auto", "local", "openai", "openai-realtime", "simulate"]
StoreName = Literal["auto", "sqlite", "postgres", "supabase"]
BroadcasterName = Literal["auto", "local", "supabase"]
OnOff = Literal["on", "off"]


class Settings(BaseSettings):
    """Every knob of the bridge; names match the environment variables in the architecture brief."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = Field(default=1, ge=1)  # server processes; more than one needs Supabase Realtime
    public_url: str | None = None

    store: StoreName = "auto"
    database_url: str | None = None
    supabase_url: str | None = None
    supabase_service_role_key: str | None = None
    supabase_anon_key: str | None = None
    supabase_jwt_secret: str | None = None
    supabase_private_topics: bool = False
    broadcaster: BroadcasterName = "auto"

    stt_engine: EngineName = "auto"
    openai_api_key: str | None = None
    openai_model: str = "whisper-1"
    openai_base_url: str | None = None
    openai_timeout_s: float = 30.0
    whisper_model: str | None = None
    whisper_threads: int = 2
    transcribe_concurrency: int = 1
    partials: OnOff | None = None
    simulate_latency_ms: int = 0

    service_key: str | None = None
    session_token_secret: str | None = None
    session_token_ttl: int = 86_400
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_body_bytes: int = 10_000_000
    auto_migrate: OnOff = "on"
    rate_limits: OnOff = "on"
    max_active_sessions: int | None = Field(default=None, ge=1)  # active sessions per tenant; unset: no limit
    body_timeout_s: float = Field(default=30.0, gt=0)  # a request body must arrive whole within this; slow ones are cut
    audio_encryption_key: str | None = None  # base64 of 32 bytes: chunk audio is AES-GCM-encrypted at rest
    audio_encryption_keys_old: Annotated[list[str], NoDecode] = Field(default_factory=list)  # decrypt only

    session_idle_timeout: int = Field(default=900, ge=1)
    session_max_duration: int = Field(default=14_400, ge=1)
    reaper_interval: float = Field(default=60.0, ge=0)  # seconds between the server's reaper passes; 0: off
    chunk_max_attempts: int = Field(default=6, ge=1)  # reaper retries of stuck audio before it is marked failed
    audio_retention_days: int | None = Field(default=None, ge=0)  # closed sessions' audio; unset: keep
    transcript_retention_days: int | None = Field(default=None, ge=0)  # closed sessions as a whole; unset: keep
    webhook_allow_private: OnOff = "off"  # on: webhooks may target private and link-local addresses
    gap_timeout_s: float = 10.0
    end_grace_s: float = 10.0
    engine_retry_s: float = 5.0
    live_concurrency: int | None = Field(default=None, ge=1)  # speaker runs at once; unset: by engine

    per_interview_machines: OnOff = "off"  # on: every session gets a Fly machine of its own (shared/interview_machines)
    fly_api_token: str | None = None
    fly_org: str = "personal"
    fly_image: str | None = None  # the interview machines' image; unset: FLY_IMAGE_REF, this machine's own
    fly_image_ref: str | None = None  # set by Fly inside a machine
    fly_app_name: str | None = None  # set by Fly inside a machine: the shared app, and the tenant apps' prefix
    fly_machine_id: str | None = None  # set by Fly inside a machine
    interview_machine_region: str | None = None  # unset: the region of the request (Fly-Region)
    interview_machine_size: str = "performance-2x"  # cpu_kind-cpus, e.g. shared-1x, performance-2x
    interview_machine_memory_mb: int = Field(default=4096, ge=256)

    @field_validator("cors_origins", "audio_encryption_keys_old", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    def resolved_store(self) -> Literal["sqlite", "postgres", "supabase"]:
        """`auto` picks Postgres when `DATABASE_URL` is set, else Supabase when `SUPABASE_URL` is, else SQLite."""
        if self.store != "auto":
            return self.store
        if self.database_url:
            return "postgres"
        if self.supabase_url:
            return "supabase"
        return "sqlite"

    def resolved_broadcaster(self) -> Literal["local", "supabase"]:
        """`auto` broadcasts through Supabase Realtime when a project is configured, else the in-process hub."""
        if self.broadcaster != "auto":
            return self.broadcaster
        if self.supabase_url and self.supabase_service_role_key:
            return "supabase"
        return "local"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "bridge.sqlite3"
