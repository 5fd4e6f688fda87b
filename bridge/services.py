"""The resources one bridge process owns, built from settings in one place and closed in one place."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import uuid
from collections import defaultdict
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.auth import Authenticator
from bridge.limits import RateLimiter
from functions.process_audio.config import LiveConfig
from functions.process_audio.live import LivePath
from functions.session_end import Ending, SessionCloser
from functions.session_reaper.service import ReaperConfig, ReapSummary, reap
from shared.broadcast.base import Broadcaster
from shared.broadcast.local import LocalHub
from shared.broadcast.tap import BroadcastTap
from shared.credentials import SessionTokens
from shared.errors import ServedElsewhere
from shared.interview_machines import InterviewMachines
from shared.models import Session, SessionStatus, utcnow
from shared.session_cache import SessionCache
from shared.settings import Settings
from shared.store.base import FIRST_DELIVERY_AFTER_S, Store
from shared.store.factory import create_store
from shared.stt.base import Transcriber
from shared.stt.factory import create_transcriber
from shared.webhook.sender import WebhookSender

if TYPE_CHECKING:
    from shared.supabase_jwt import SupabaseJwtVerifier

log = logging.getLogger("bridge")


def token_secret(settings: Settings) -> str:
    """SESSION_TOKEN_SECRET, else SUPABASE_JWT_SECRET (Supabase accepts our tokens), else one kept in the data dir."""
    if settings.session_token_secret:
        return settings.session_token_secret
    if settings.supabase_jwt_secret:
        return settings.supabase_jwt_secret
    path = Path(settings.data_dir) / "session_token_secret"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole under another name, then linked into place: processes starting together (`serve --workers`,
    # two `reap` runs) never read a half-written secret, and all of them end up with the one that won.
    draft = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    draft.write_text(secrets.token_urlsafe(48), encoding="utf-8")
    draft.chmod(0o600)
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links: an atomic rename still never shows a half-written file
        os.replace(draft, path)
    finally:
        draft.unlink(missing_ok=True)
    return path.read_text(encoding="utf-8").strip()


@dataclass
class Services:
    settings: Settings
    store: Store
    transcriber: Transcriber
    broadcaster: Broadcaster
    tokens: SessionTokens
    auth: Authenticator
    live: LivePath
    hub: LocalHub | None = None
    user_tokens: SupabaseJwtVerifier | None = None
    limits: RateLimiter = field(default_factory=RateLimiter)
    machines: InterviewMachines | None = None  # PER_INTERVIEW_MACHINES=on
    tap: BroadcastTap = field(init=False)  # what the live path broadcasts through, for the streaming socket
    _background: set[asyncio.Task[object]] = field(default_factory=set)
    sessions: SessionCache = field(init=False)  # the per-chunk path's session reads
    closer: SessionCloser = field(init=False)  # how a session ends, for the route, the CLI and the reaper
    webhooks: WebhookSender = field(init=False)  # the outbox of transcripts for tenants' webhooks
    reaper: ReaperConfig = field(init=False)  # the reaper's rules, from settings
    # one session created at a time per tenant, so MAX_ACTIVE_SESSIONS is not overshot by parallel requests
    session_creation: defaultdict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))

    def __post_init__(self) -> None:
        self.tap = (
            self.live.broadcaster if isinstance(self.live.broadcaster, BroadcastTap) else BroadcastTap(self.broadcaster)
        )
        self.sessions = SessionCache(self.store)
        self.closer = SessionCloser(self.store, self.live, self.tap, self.sessions)
        self.webhooks = WebhookSender(self.store, allow_private=self.settings.webhook_allow_private == "on")
        self.reaper = ReaperConfig(
            idle_timeout_s=self.settings.session_idle_timeout,
            max_duration_s=self.settings.session_max_duration,
            chunk_max_attempts=self.settings.chunk_max_attempts,
            audio_retention_days=self.settings.audio_retention_days,
            transcript_retention_days=self.settings.transcript_retention_days,
        )

    async def end_session(self, session: Session, status: SessionStatus) -> Ending:
        """End a session now (the route); its tenant's webhook is sent in the background."""
        now = utcnow()
        ending = await self.closer.end(session, status, now)
        if ending.closed_now:
            self.webhooks.deliver_soon(session.id, now, due_by=now + timedelta(seconds=FIRST_DELIVERY_AFTER_S))
        return ending

    async def start(self, *, resume: bool = True, reaper: bool = False) -> None:
        """Open every backend; with `resume`, pending audio left by an earlier process is processed once the
        engine is ready (a throwaway store has none, so the `transcribe` command passes False); with `reaper`,
        a reaper pass runs every REAPER_INTERVAL seconds until `close` (the server)."""
        await self.open_backends()
        await self.transcriber.start()
        # Loading Silero builds its graph (~1 s with the onnx import): off the start path, so the port opens at
        # once; a chunk that comes sooner waits for the load in the detector's lock.
        self._in_background(asyncio.to_thread(self.live.detector.warm_up))
        if resume:
            self._in_background(self._resume_when_ready())
        self._in_background(self.live.usage.flush_every(USAGE_FLUSH_S))
        if reaper and self.settings.reaper_interval > 0:
            self._in_background(self._reap_every(self.settings.reaper_interval))

    async def open_backends(self) -> None:
        """Store and broadcaster, without starting the engine (the `reap` command loads it only to flush)."""
        await self.store.start()
        await self.broadcaster.start()

    async def reap(self) -> ReapSummary:
        """One reaper pass, now."""
        return await reap(
            utcnow(), closer=self.closer, config=self.reaper, webhooks=self.webhooks, machines=self.machines
        )

    def serve_here(self, session: Session, headers: Mapping[str, str]) -> None:
        """Raise ServedElsewhere when the session's own machine should take this request."""
        if self.machines is not None and (target := self.machines.replay_to(session, headers)) is not None:
            raise ServedElsewhere(target)

    async def _reap_every(self, interval_s: float) -> None:
        """The server's own reaper: a pass every `interval_s`, the first one interval after start."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                summary = await self.reap()
            except Exception:
                log.exception("a reaper pass failed; the next one retries")
                continue
            if summary.abandoned or summary.ended:
                log.info("reaper: %s", summary.to_json())

    def _in_background(self, work: Coroutine[Any, Any, object]) -> None:
        """Run `work` as a task that `close` cancels."""
        task: asyncio.Task[object] = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _resume_when_ready(self) -> None:
        """Whenever the engine becomes ready, every pending chunk is processed in order, without waiting for end."""
        try:
            await self.transcriber.wait_ready()
        except Exception:
            log.exception("the transcription engine failed to start; chunks stay pending")
            return
        resumed = await self.live.resume_pending(self._load_session)
        if resumed:
            log.info("resumed %d speaker streams with pending audio", resumed)

    async def _load_session(self, session_id: str) -> Session | None:
        return await self.store.get_session(session_id, None)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.live.close()
        await self.webhooks.aclose()
        await self.broadcaster.close()
        await self.transcriber.close()
        await self.store.close()
        if self.machines is not None:
            await self.machines.aclose()
        if self.user_tokens is not None:
            await self.user_tokens.aclose()


USAGE_FLUSH_S = 5.0  # how often counted usage is added to the store

LOCAL_RUN_SLOTS = 16  # the local model transcribes `transcribe_concurrency` at a time: more runs only queue there
REMOTE_RUN_SLOTS = 256  # a remote engine's call is a wait on the network: a run holds its slot through it


def run_slots(settings: Settings, transcriber: Transcriber) -> int:
    """How many speakers' runs go at once: `LIVE_CONCURRENCY`, else sized for the engine. With a remote engine
    at 0.5 s a call, 1,000 interviews keep ~50 finals in flight; 32 slots had entries queueing for seconds."""
    if settings.live_concurrency is not None:
        return settings.live_concurrency
    return LOCAL_RUN_SLOTS if transcriber.name == "local" else REMOTE_RUN_SLOTS


def build_services(
    settings: Settings,
    *,
    store: Store | None = None,
    transcriber: Transcriber | None = None,
    broadcaster: Broadcaster | None = None,
) -> Services:
    store = store or create_store(settings)
    transcriber = transcriber or create_transcriber(settings)
    if broadcaster is None:
        from shared.broadcast.factory import create_broadcaster

        broadcaster = create_broadcaster(settings)
    tokens = SessionTokens(token_secret(settings), settings.session_token_ttl)
    user_tokens: SupabaseJwtVerifier | None = None
    if settings.supabase_url or settings.supabase_jwt_secret:
        from shared.supabase_jwt import SupabaseJwtVerifier, jwks_url_for

        jwks = jwks_url_for(settings.supabase_url) if settings.supabase_url else None
        user_tokens = SupabaseJwtVerifier(jwt_secret=settings.supabase_jwt_secret, jwks_url=jwks)
    auth = Authenticator(store, tokens, service_key=settings.service_key, user_tokens=user_tokens)
    partials = transcriber.partials_by_default if settings.partials is None else settings.partials == "on"
    live = LivePath(
        store,
        transcriber,
        BroadcastTap(broadcaster),
        config=LiveConfig(
            gap_timeout_s=settings.gap_timeout_s,
            partials=partials,
            retry_base_s=settings.engine_retry_s,
            engine_timeout_s=settings.openai_timeout_s,
            speculate=transcriber.name in ("local", "simulate"),  # a wasted decode costs nothing here
            workers=run_slots(settings, transcriber),
        ),
    )
    hub = broadcaster if isinstance(broadcaster, LocalHub) else None
    limits = RateLimiter(enabled=settings.rate_limits == "on")
    machines = None
    if settings.per_interview_machines == "on":
        from shared.fly_machines import FlyMachines

        machines = InterviewMachines(FlyMachines(settings.fly_api_token), settings)
    return Services(settings, store, transcriber, broadcaster, tokens, auth, live, hub, user_tokens, limits, machines)
