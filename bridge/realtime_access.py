"""Who may join or push to which realtime topic: the bridge's credentials applied to the local hub."""

from __future__ import annotations

from bridge.auth import Authenticator
from shared.access import Action, session_for
from shared.broadcast.vocabulary import RESERVED_EVENTS, session_id_of
from shared.errors import BridgeError, Forbidden, Unauthorized
from shared.store.base import Store


class SessionTopicAuthorizer:
    """Joining `session:{id}` needs that session's session or viewer token, its tenant's key, or a user JWT of
    its tenant; nothing else (the service key included). The bridge's own events cannot be pushed by clients."""

    def __init__(self, auth: Authenticator, store: Store) -> None:
        self.auth = auth
        self.store = store

    async def check_socket(self, apikey: str | None) -> None:
        if not apikey:
            raise Unauthorized("connect with ?apikey=<session token or tenant key>")
        await self.auth.principal(apikey)

    async def check_join(self, token: str | None, topic: str) -> None:
        await self._check(token, topic, Action.READ)

    async def check_send(self, token: str | None, topic: str, event: str) -> None:
        if event in RESERVED_EVENTS:
            raise Forbidden(f"{event} events come only from the bridge")
        await self._check(token, topic, Action.WRITE)

    async def _check(self, token: str | None, topic: str, action: Action) -> None:
        if not token:
            raise Unauthorized("no access token")
        principal = await self.auth.principal(token)
        session_id = session_id_of(topic)
        if session_id is None:
            raise Forbidden("only session:{id} topics are served here")
        try:
            await session_for(principal, session_id, self.store, action)
        except Unauthorized:
            raise
        except BridgeError as exc:
            raise Forbidden(f"this token cannot use {topic}") from exc
