"""Who may touch which session: the contract's checks, in the contract's order, in one place."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from shared.credentials import Principal, PrincipalKind
from shared.errors import Forbidden, NotFound, SessionClosed
from shared.models import Session, SessionStatus
from shared.session_cache import SessionSource


class Action(StrEnum):
    READ = "read"  # session object, transcript, subscribe
    WRITE = "write"  # chunks, entries, end
    ADMIN = "admin"  # delete, issue viewer tokens


async def session_for(principal: Principal, session_id: str, store: SessionSource, action: Action) -> Session:
    """Load a session the principal may act on, else raise.

    Unknown sessions and other tenants' sessions are both 404 (existence is not revealed); a token of another
    session of the same tenant, a viewer writing, or a session token administering is 403.
    """
    if principal.kind is PrincipalKind.SERVICE or principal.tenant_id is None:
        raise Forbidden("the service key serves operator routes only; use a tenant key or a session token")
    session = await store.get_session(session_id, principal.tenant_id)
    if session is None:
        raise NotFound(f"no session {session_id!r} for this tenant")
    if principal.kind in (PrincipalKind.SESSION, PrincipalKind.VIEWER) and principal.session_id != session.id:
        raise Forbidden("this token belongs to another session")
    if action is Action.WRITE and principal.kind is PrincipalKind.VIEWER:
        raise Forbidden("a viewer token reads and subscribes; it cannot write")
    if action is Action.ADMIN and principal.kind is PrincipalKind.VIEWER:
        raise Forbidden("this needs the tenant's key or the session token")
    return session


def require_tenant(principal: Principal) -> str:
    """Tenant-level routes (create and list sessions) take a tenant key or a Supabase user JWT."""
    if principal.kind not in (PrincipalKind.TENANT, PrincipalKind.USER) or principal.tenant_id is None:
        raise Forbidden("this route needs the tenant's API key or a user token of the tenant")
    return principal.tenant_id


def in_closing_grace(session: Session, now: datetime, grace_s: float) -> bool:
    """Whether a write to `session` is one of the late ones after `end` that are still accepted (and flushed).

    False for an active session; raises SessionClosed once the grace window after the end has passed.
    """
    if session.status is SessionStatus.ACTIVE:
        return False
    ended = session.ended_at or session.last_activity_at
    if (now - ended).total_seconds() <= grace_s:
        return True
    raise SessionClosed(f"session {session.id} is {session.status.value}; start a new session")
