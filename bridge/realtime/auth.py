"""Who may join, and send on, a realtime topic: the seam between the realtime endpoints and the bridge's credentials.

The realtime package only asks; the bridge answers against real tokens (session, viewer, tenant key, user JWT).
Topics are given without the `realtime:` prefix the SDKs add (`session:{id}`).
"""

from __future__ import annotations

from typing import Protocol

from shared.broadcast.vocabulary import RESERVED_EVENTS

__all__ = ["RESERVED_EVENTS", "TopicAuthorizer"]


class TopicAuthorizer(Protocol):
    async def check_socket(self, apikey: str | None) -> None:
        """Raise `shared.errors.Unauthorized` unless the socket's (or REST caller's) apikey is a valid credential."""

    async def check_join(self, token: str | None, topic: str) -> None:
        """Raise `Unauthorized` for a bad or expired token, `Forbidden` for a valid one not admitted to `topic`."""

    async def check_send(self, token: str | None, topic: str, event: str) -> None:
        """Like `check_join`, for a client's push; must refuse (`Forbidden`) the events in `RESERVED_EVENTS`."""
