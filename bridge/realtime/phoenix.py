"""Phoenix channel frames as Supabase Realtime speaks them: vsn 1.0.0 (JSON objects) and 2.0.0 (JSON arrays,
binary user-broadcast pushes of kind 3 in, kind 4 out; the latter are built by `shared.broadcast.local.Message`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

Vsn = Literal["v1", "v2"]

KIND_USER_BROADCAST_PUSH: Final = 3
PHOENIX_TOPIC: Final = "phoenix"

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class FrameError(ValueError):
    """A frame that is not a Phoenix message this server understands."""


@dataclass(slots=True)
class BinaryBroadcast:
    """The user payload of a kind-3 push, kept as the bytes it arrived in."""

    event: str
    data: bytes
    encoding: int
    meta: bytes


@dataclass(slots=True)
class Inbound:
    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: Any
    binary: BinaryBroadcast | None = None


def parse_vsn(value: str | None) -> Vsn | None:
    """`vsn` query parameter to wire format; a missing vsn is 1.0.0 (realtime-py 2.7 sends none)."""
    if value is None or value in ("1.0.0", "1.0", "1"):
        return "v1"
    if value in ("2.0.0", "2.0", "2"):
        return "v2"
    return None


def _ref(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise FrameError("ref and join_ref must be strings or null")


def decode_text(vsn: Vsn, text: str | bytes) -> Inbound:
    try:
        raw = _decode(text)
    except msgspec.DecodeError as exc:
        raise FrameError(f"not JSON: {exc}") from exc
    if vsn == "v2" and isinstance(raw, list):
        if len(raw) != 5:
            raise FrameError("a vsn 2.0.0 frame is [join_ref, ref, topic, event, payload]")
        join_ref, ref, topic, event, payload = raw
    elif isinstance(raw, dict):
        # vsn 1.0.0; also tolerated on a v2 socket, as Phoenix's own JSON decoding would not be.
        join_ref, ref = raw.get("join_ref"), raw.get("ref")
        topic, event, payload = raw.get("topic"), raw.get("event"), raw.get("payload")
    else:
        raise FrameError("frame is neither a JSON object nor a 5-element array")
    if not isinstance(topic, str) or not isinstance(event, str):
        raise FrameError("topic and event must be strings")
    return Inbound(_ref(join_ref), _ref(ref), topic, event, payload)


def decode_binary(data: bytes) -> Inbound:
    """A vsn 2.0.0 binary frame: only kind 3 (user broadcast push) is accepted from clients."""
    if len(data) < 7 or data[0] != KIND_USER_BROADCAST_PUSH:
        raise FrameError("only binary frames of kind 3 (user broadcast push) are accepted")
    lengths = data[1:6]
    encoding = data[6]
    offset = 7
    parts: list[bytes] = []
    for size in lengths:
        parts.append(data[offset : offset + size])
        offset += size
    if offset > len(data):
        raise FrameError("binary frame shorter than its header declares")
    if encoding not in (0, 1):
        raise FrameError("unknown payload encoding")
    try:
        join_ref, ref, topic, event = (part.decode() for part in parts[:4])
    except UnicodeDecodeError as exc:
        raise FrameError("binary frame header is not UTF-8") from exc
    body = data[offset:]
    payload: Any = None
    if encoding == 1:
        try:
            payload = _decode(body)
        except msgspec.DecodeError as exc:
            raise FrameError(f"JSON payload is not JSON: {exc}") from exc
    inner = {"type": "broadcast", "event": event, "payload": payload}
    return Inbound(
        join_ref or None, ref or None, topic, "broadcast", inner, BinaryBroadcast(event, body, encoding, parts[4])
    )


def encode(vsn: Vsn, join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any) -> str:
    """A server frame; vsn 1.0.0 frames carry `ref` (always present, may be null) and no join_ref."""
    if vsn == "v1":
        body = {"topic": topic, "event": event, "payload": payload, "ref": ref}
    else:
        body = [join_ref, ref, topic, event, payload]  # type: ignore[assignment]
    return _encode(body).decode()


def reply(vsn: Vsn, msg: Inbound, status: Literal["ok", "error"], response: dict[str, Any]) -> str:
    return encode(vsn, msg.join_ref, msg.ref, msg.topic, "phx_reply", {"status": status, "response": response})


def error_reply(vsn: Vsn, msg: Inbound, reason: str) -> str:
    """`reason` follows Supabase's `"<Code>: <message>"` shape."""
    return reply(vsn, msg, "error", {"reason": reason})
