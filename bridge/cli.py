"""The `interview-bridge` command: serve, tenant create/update, transcribe, reap, db migrate, tail."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from bridge.logs import install_json_logging
from shared.credentials import hash_api_key, new_api_key, new_webhook_secret
from shared.errors import ConfigurationError
from shared.models import Tenant, utcnow
from shared.settings import EngineName, Settings

log = logging.getLogger("bridge.cli")

ENGINE_CHOICES = list(get_args(EngineName))


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides: dict[str, Any] = {k: v for k, v in extra.items() if v is not None}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    if getattr(args, "engine", None):
        overrides["stt_engine"] = args.engine
    return Settings(**overrides)


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None, help="embedded store folder (default: $DATA_DIR, else ./data)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interview-bridge", description="Live interview transcription bridge")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the bridge (embedded defaults: SQLite, local hub, local model)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--engine", choices=ENGINE_CHOICES, default=None)
    serve.add_argument("--workers", type=int, default=None, help="server processes (default: $WORKERS, else 1)")
    _add_data_dir(serve)

    tenant = commands.add_parser("tenant", help="manage tenants")
    tenant_commands = tenant.add_subparsers(dest="tenant_command", required=True)
    create = tenant_commands.add_parser(
        "create", help="create a tenant; prints its id, API key and webhook signing secret as one JSON line"
    )
    create.add_argument("name")
    create.add_argument("--webhook-url", default=None, help="POST each ended session's transcript here (https)")
    _add_data_dir(create)
    update = tenant_commands.add_parser("update", help="change a tenant's webhook URL (NAME or tenant id)")
    update.add_argument("name")
    update.add_argument("--webhook-url", required=True, help="the new URL; an empty string removes the webhook")
    _add_data_dir(update)

    transcribe = commands.add_parser("transcribe", help="push audio files through the live path, print transcripts")
    transcribe.add_argument("files", nargs="+")
    transcribe.add_argument("--engine", choices=ENGINE_CHOICES, default=None)
    transcribe.add_argument("--chunk-seconds", type=float, default=2.0)
    transcribe.add_argument("--format", choices=["text", "json"], default="text")
    _add_data_dir(transcribe)

    reap_parser = commands.add_parser("reap", help="one session reaper pass; prints its summary as one JSON line")
    reap_parser.add_argument("--engine", choices=ENGINE_CHOICES, default=None)
    reap_parser.add_argument(
        "--every", type=float, default=None, help="repeat a pass every SECONDS until SIGTERM (a reaper machine)"
    )
    _add_data_dir(reap_parser)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    migrate = db_commands.add_parser("migrate", help="apply pending migrations")
    _add_data_dir(migrate)

    stream = commands.add_parser(
        "stream", help="stream a file through the streaming socket at real-time pace; print lines as they come"
    )
    stream.add_argument("file")
    stream.add_argument("--session", required=True, help="the session id")
    stream.add_argument("--speaker", required=True)
    stream.add_argument("--token", default=os.environ.get("SESSION_TOKEN"), help="session token (or $SESSION_TOKEN)")
    stream.add_argument("--url", default=None, help="the bridge (default: this bridge's local address)")
    stream.add_argument("--frame-ms", type=int, default=250, help="audio per frame, 100-500 ms")
    stream.add_argument("--pace", type=float, default=1.0, help="times real time; 0: as fast as acks allow")

    tail = commands.add_parser("tail", help="follow a live transcript through Realtime")
    tail.add_argument("session_id")
    tail.add_argument("--url", default=None, help="bridge or Supabase URL (default: this bridge's local address)")
    tail.add_argument("--apikey", default=os.environ.get("REALTIME_APIKEY"), help="key the realtime server accepts")
    tail.add_argument("--token", default=os.environ.get("SESSION_TOKEN"), help="session or viewer token")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    install_json_logging()
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args)
        if args.command == "tenant" and args.tenant_command == "update":
            return asyncio.run(tenant_update(args))
        if args.command == "tenant":
            return asyncio.run(tenant_create(args))
        if args.command == "transcribe":
            return asyncio.run(transcribe(args))
        if args.command == "db":
            return asyncio.run(db_migrate(args))
        if args.command == "reap":
            return asyncio.run(reap_once(args))
        if args.command == "stream":
            return asyncio.run(stream_file(args))
        return asyncio.run(tail(args))
    except ConfigurationError as exc:
        print(f"interview-bridge: {exc}", file=sys.stderr)
        return 2


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from bridge.app import create_app

    settings = _settings(args, host=args.host, port=args.port, workers=args.workers)
    check_workers(settings)
    # Once, before saying where it listens: migrations, the token secret, and the store's own start-up checks
    # (a wrong AUDIO_ENCRYPTION_KEY), so a bad setting is one line and exit 2, not a lifespan traceback.
    asyncio.run(prepare_store(settings))
    for line in start_up_lines(settings):
        print(line, file=sys.stderr)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "info",
        "loop": "uvloop",  # what the benchmarks measure, not left to whatever happens to be installed
        "http": "httptools",
        "access_log": False,  # bridge.request_guard writes the access line: JSON, with the request id, redacted
        "log_config": None,  # uvicorn's own records go through the JSON handler installed above
        "timeout_graceful_shutdown": 30,
        "ws": "websockets-sansio",  # measured: ~25% less hub CPU per frame than the default implementation
        "ws_per_message_deflate": False,  # hub frames are encoded once per topic; per-socket deflate undoes that
    }
    exit_zero_after_shutdown()
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **options)
        return 0
    # Each worker process builds its own app from the environment: hand it what the command line set (what
    # every worker would otherwise race to do at its start was done above).
    os.environ.update(worker_environment(settings))
    uvicorn.run("bridge.app:create_app", factory=True, workers=settings.workers, **options)
    return 0


def start_up_lines(settings: Settings) -> list[str]:
    """What `serve` tells whoever started it: where it listens, the demo page, the API schema, how to get a key."""
    url = browser_url(settings.host, settings.port)
    create = f"{own_command()} tenant create NAME"
    if settings.resolved_store() == "sqlite":
        create += f" --data-dir {shlex.quote(str(settings.data_dir))}"
    return [
        f"interview-bridge listening on {settings.host}:{settings.port}  (health: {url}/health)",
        f"demo page: {url}/",
        f"API schema: {url}/schema  (JSON: {url}/schema/openapi.json)",
        f"get a tenant key: {create}",
    ]


def browser_url(host: str, port: int) -> str:
    """The base URL a browser on this machine opens: a wildcard listening address is not one to visit."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def own_command() -> str:
    """How to run this same `interview-bridge` from the current directory: its path relative to it when it lives
    below it (`.venv/bin/interview-bridge` after the README's install), the bare name when PATH finds this one,
    else its full path."""
    script = Path(sys.argv[0])
    folder = (script.parent if script.name == "interview-bridge" else Path(sys.executable).parent).resolve()
    executable = folder / "interview-bridge"
    if not executable.exists():
        return "interview-bridge"
    with contextlib.suppress(ValueError, OSError):  # not below it, or no current directory any more
        below = executable.relative_to(Path.cwd().resolve())
        return shlex.quote(str(below) if len(below.parts) > 1 else f"./{below}")
    found = shutil.which("interview-bridge")
    if found and Path(found).resolve() == executable.resolve():
        return "interview-bridge"
    return shlex.quote(str(executable))


def exit_zero_after_shutdown() -> None:
    """uvicorn shuts down gracefully on SIGTERM (stops accepting, finishes in-flight requests, runs the app's
    shutdown), then raises the signal again with the handler it found in place. Without this one the process
    would then die by SIGTERM; with it, the orderly shutdown ends with exit status 0, as Fly and Docker expect."""
    import signal

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, leave)


def check_workers(settings: Settings) -> None:
    """Several processes need a broadcaster they share: the in-process hub would split subscribers by worker."""
    if settings.workers > 1 and settings.resolved_broadcaster() == "local":
        raise ConfigurationError(
            f"WORKERS={settings.workers} needs Supabase Realtime (SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY, or "
            "BROADCASTER=supabase): the in-process realtime hub serves one process, so a subscriber on one worker "
            "would miss lines made by another. Run one worker, or configure Supabase."
        )


async def prepare_store(settings: Settings) -> None:
    from bridge.services import token_secret
    from shared.store.factory import create_store

    token_secret(settings)
    store = create_store(settings)
    await store.start()  # applies pending migrations
    await store.close()


def worker_environment(settings: Settings) -> dict[str, str]:
    """The command line's settings as the environment variables every worker reads."""
    return {
        "HOST": settings.host,
        "PORT": str(settings.port),
        "DATA_DIR": str(settings.data_dir),
        "STT_ENGINE": settings.stt_engine,
        "WORKERS": str(settings.workers),
    }


async def tenant_create(args: argparse.Namespace) -> int:
    from shared.store.factory import create_store

    url = _webhook_url(args.webhook_url)
    store = create_store(_settings(args))
    await store.start()
    try:
        api_key, webhook_secret = new_api_key(), new_webhook_secret()
        tenant = Tenant(id=str(uuid.uuid4()), name=args.name, created_at=utcnow())
        await store.create_tenant(tenant, hash_api_key(api_key))
        await store.set_tenant_webhook(tenant.id, url, webhook_secret)
    finally:
        await store.close()
    print(json.dumps({"tenant_id": tenant.id, "api_key": api_key, "webhook_secret": webhook_secret}))
    return 0


async def tenant_update(args: argparse.Namespace) -> int:
    from shared.store.factory import create_store

    url = _webhook_url(args.webhook_url or None)
    store = create_store(_settings(args))
    await store.start()
    try:
        # tenants_named reads whole rows (get_tenant leaves the webhook columns out on some stores)
        by_id = await store.get_tenant(args.name)
        named = await store.tenants_named(by_id.name if by_id else args.name)
        tenants = [t for t in named if by_id is None or t.id == by_id.id]
        if len(tenants) != 1:
            many = f"{len(tenants)} tenants are named {args.name!r}; give the tenant id" if tenants else ""
            print(f"interview-bridge tenant update: {many or f'no tenant {args.name!r}'}", file=sys.stderr)
            return 2
        tenant = tenants[0]
        secret = None if tenant.webhook_secret else new_webhook_secret()  # made before webhooks: a key now
        await store.set_tenant_webhook(tenant.id, url, secret)
    finally:
        await store.close()
    line: dict[str, Any] = {"tenant_id": tenant.id, "webhook_url": url}
    if secret is not None:
        line["webhook_secret"] = secret
    print(json.dumps(line))
    return 0


def _webhook_url(url: str | None) -> str | None:
    from shared.errors import InvalidRequest
    from shared.webhook.target import check_webhook_url

    if url is None:
        return None
    try:
        return check_webhook_url(url)
    except InvalidRequest as exc:
        raise ConfigurationError(exc.detail) from exc


async def db_migrate(args: argparse.Namespace) -> int:
    from shared.store.factory import create_store

    store = create_store(_settings(args, auto_migrate="off"))
    await store.start()
    try:
        applied = await store.migrate()
    finally:
        await store.close()
    print(json.dumps({"applied": applied}))
    return 0


async def reap_once(args: argparse.Namespace) -> int:
    """Close the sessions nobody ended, from cron or a scheduled machine; the engine loads only to flush audio.
    With `--every`, a pass every that many seconds (one JSON line each) until SIGTERM or SIGINT."""
    import signal

    from bridge.services import build_services

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    services = build_services(_settings(args))
    await services.open_backends()
    try:
        while not stop.is_set():
            summary = await services.reap()
            print(json.dumps(summary.to_json()), flush=True)
            if not args.every:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=args.every)
    finally:
        await services.close()
    return 0


async def transcribe(args: argparse.Namespace) -> int:
    from bridge.offline import ensure_tenant, transcribe_file
    from bridge.services import build_services
    from shared.broadcast.local import LocalHub

    with tempfile.TemporaryDirectory(prefix="interview-bridge-") as scratch:
        data_dir = args.data_dir or scratch
        settings = _settings(args, data_dir=Path(data_dir), partials="off")
        if not args.data_dir:
            settings = settings.model_copy(update={"store": "sqlite", "data_dir": Path(scratch)})
        services = build_services(settings, broadcaster=LocalHub())
        await services.start(resume=bool(args.data_dir))
        failed = False
        try:
            tenant = await ensure_tenant(services)
            for name in args.files:
                result = await transcribe_file(services, tenant, Path(name), args.chunk_seconds)
                failed = failed or result.error is not None
                if args.format == "json":
                    print(json.dumps(result.to_json()), flush=True)
                else:
                    if result.error is not None:
                        print(f"interview-bridge transcribe: {name}: {result.error}", file=sys.stderr, flush=True)
                    print(result.text, flush=True)
        finally:
            await services.close()
    return 1 if failed else 0


async def stream_file(args: argparse.Namespace) -> int:
    """Entries on stdout as `speaker: text` the moment they arrive; partials, reconnects and a summary on stderr."""
    from bridge.stream_client import StreamRefused, pcm_frames, socket_url, stream_frames

    if not args.token:
        print("interview-bridge stream: give --token (or SESSION_TOKEN)", file=sys.stderr)
        return 2
    settings = Settings()
    base = args.url or settings.public_url or f"http://{settings.host}:{settings.port}"
    url = socket_url(base, args.session, args.speaker, args.token, "audio/pcm;rate=16000")

    def show(message: dict[str, Any]) -> None:
        if message.get("type") == "entry":
            print(f"{message['entry']['speaker']}: {message['entry']['text']}", flush=True)
        elif message.get("type") == "partial":
            print(f"... {message['text']}", file=sys.stderr, flush=True)

    frames = pcm_frames(Path(args.file), args.frame_ms)
    try:
        run = await stream_frames(url, frames, frame_s=args.frame_ms / 1000, pace=args.pace or None, on_message=show)
    except StreamRefused as exc:
        print(f"interview-bridge stream: refused: {exc}", file=sys.stderr)
        return 1
    summary = {
        "frames": len(frames),
        "acked": len(run.acked),
        "entries": len(run.entries),
        "reconnects": run.reconnects,
    }
    print(json.dumps(summary), file=sys.stderr)
    return 0


async def tail(args: argparse.Namespace) -> int:
    from bridge.tail import tail as follow

    settings = Settings()
    url = args.url or settings.public_url or f"http://{settings.host}:{settings.port}"
    apikey = args.apikey or args.token
    if not apikey:
        print("interview-bridge tail: give --apikey or --token (or REALTIME_APIKEY / SESSION_TOKEN)", file=sys.stderr)
        return 2
    await follow(url, apikey, args.session_id, token=args.token)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
