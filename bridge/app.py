"""`create_app(settings)`: the one place where the bridge is wired together."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.openapi import OpenAPIConfig

from bridge.demo import DEMO_ROUTES, DemoTenant
from bridge.errors import EXCEPTION_HANDLERS
from bridge.logs import install_json_logging
from bridge.realtime.redact import install_log_redaction
from bridge.realtime.routes import realtime_handlers
from bridge.realtime_access import SessionTopicAuthorizer
from bridge.request_guard import GuardedLitestar, guard_for
from bridge.routes import ROUTES
from bridge.services import Services, build_services
from bridge.stream_socket import stream_socket
from shared.broadcast.base import Broadcaster
from shared.settings import Settings
from shared.store.base import Store
from shared.stt.base import Transcriber


def create_app(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    transcriber: Transcriber | None = None,
    broadcaster: Broadcaster | None = None,
) -> GuardedLitestar:
    """Build the app; backends come from settings unless handed in (tests hand in a loaded model)."""
    if not logging.getLogger().handlers:  # a worker process spawned by uvicorn: the CLI's set-up did not reach it
        install_json_logging()
    settings = settings or Settings()
    services = build_services(settings, store=store, transcriber=transcriber, broadcaster=broadcaster)
    return app_for(services)


def app_for(services: Services) -> GuardedLitestar:
    settings = services.settings

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await services.start(reaper=True)
        try:
            yield
        finally:
            await services.close()

    handlers: list[Any] = [*ROUTES, *DEMO_ROUTES, stream_socket]
    if services.hub is not None:
        authorizer = SessionTopicAuthorizer(services.auth, services.store)
        handlers.extend(realtime_handlers(services.hub, authorizer, max_body_bytes=settings.max_body_bytes))
    cors = None
    if settings.cors_origins:
        cors = CORSConfig(
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["authorization", "content-type", "apikey", "x-client-info", "x-request-id"],
            expose_headers=["x-request-id", "retry-after"],
            max_age=600,
        )
    install_log_redaction("uvicorn.access", "uvicorn.error")
    app = GuardedLitestar(
        route_handlers=handlers,
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        cors_config=cors,
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,
        openapi_config=OpenAPIConfig(
            title="interview-bridge",
            version="1",
            description="Live interview transcription: chunks in, ordered per-speaker transcripts out.",
        ),
    )
    app.guard = guard_for(settings)
    app.state.services = services
    app.state.demo_tenant = DemoTenant()
    logging.getLogger("bridge").setLevel(logging.INFO)
    return app
