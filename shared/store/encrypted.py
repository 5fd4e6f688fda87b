"""Audio encrypted at rest: `AudioCipher` seals a chunk's audio with AES-GCM, `EncryptedStore` wraps any store.

What the store keeps in place of a chunk's bytes when `AUDIO_ENCRYPTION_KEY` is set (envelope version 1):

    MAGIC b"\\x89IBAE\\r\\n" (7 bytes) | version 1 (1 byte) | key id (4 bytes) | nonce (12 bytes) | ciphertext + tag

- The key id is the start of a SHA-256 of the key: it names the configured key that opens the envelope (the
  current one or one of `AUDIO_ENCRYPTION_KEYS_OLD`) without revealing anything of it.
- Each session's audio is sealed under a key of its own, HMAC-SHA256(key, label + session id), with a random
  96-bit nonce per chunk: AES-GCM's random nonces are safe for ~2^32 messages per key, which a busy bridge taking
  250 ms frames would reach in weeks under one key, never within one interview.
- The associated data is the envelope's header, the session id, the speaker and the sequence number: a row copied
  to another chunk does not open (`AudioUndecryptable`, never garbage audio).
- Bytes that do not begin with MAGIC were stored before encryption was turned on and read as they are. Empty audio
  (a skipped chunk, or audio that retention dropped) stays empty: nothing to hide, and the stores read an empty
  value as "no audio".
- The chunk's digest (replay detection) is stored keyed, an HMAC of the caller's digest, so the store holds no
  plain hash of the audio either; a replay whose keyed digest differs (written before a key rotation, or before
  encryption) is recognised by comparing the decrypted audio.

Chunks are the only audio the stores keep: a speaker stream holds the sequence number of its header chunk and
offsets into pending chunks, not bytes, so `claim_stream`/`save_stream` pass through.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import AudioUndecryptable, ConfigurationError, InvalidAudio
from shared.models import (
    EntryWrite,
    InsertOutcome,
    NewChunk,
    NewEntry,
    Session,
    SessionStatus,
    SpeakerStream,
    StoredChunk,
    StuckChunk,
    Tenant,
    TranscriptEntry,
    UsageCount,
    UsageDay,
    WebhookDelivery,
    utcnow,
)
from shared.store.base import Store

log = logging.getLogger("bridge.store")

MAGIC = b"\x89IBAE\r\n"
VERSION = 1
KEY_BYTES = 32
KEY_ID_BYTES = 4
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = len(MAGIC) + 1 + KEY_ID_BYTES
OVERHEAD = HEADER_BYTES + NONCE_BYTES + TAG_BYTES

KEY_VARIABLE = "AUDIO_ENCRYPTION_KEY"
OLD_KEYS_VARIABLE = "AUDIO_ENCRYPTION_KEYS_OLD"
MAKE_A_KEY = "make one with `openssl rand -base64 32`"

PROBE_STREAMS = 4  # start-up reads at most 2 chunks of 4 pending speaker streams and the latest of 4 sessions

_KEY_ID_LABEL = b"interview-bridge audio key id\x00"
_SESSION_KEY_LABEL = b"interview-bridge audio session key v1\x00"
_DIGEST_KEY_LABEL = b"interview-bridge audio digest key v1\x00"


def parse_key(value: str, variable: str) -> bytes:
    """A 32-byte key from its base64 (standard or URL-safe, padding optional); ConfigurationError naming
    `variable`, never echoing the value."""
    text = value.strip().replace("-", "+").replace("_", "/")
    if not text:
        raise ConfigurationError(f"{variable} is set but empty: unset it to store audio in the clear, or {MAKE_A_KEY}")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError as exc:  # binascii.Error, or characters outside ASCII
        raise ConfigurationError(
            f"{variable} is not base64 ({exc}); it must be base64 of 32 bytes: {MAKE_A_KEY}"
        ) from exc
    if len(key) != KEY_BYTES:
        raise ConfigurationError(
            f"{variable} must be base64 of exactly {KEY_BYTES} bytes (an AES-256 key), it decodes to {len(key)} "
            f"bytes: {MAKE_A_KEY}"
        )
    return key


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(_KEY_ID_LABEL + key).digest()[:KEY_ID_BYTES]


@dataclass(frozen=True, slots=True)
class ChunkPlace:
    """Which chunk an envelope belongs to: what its associated data binds it to."""

    session_id: str
    speaker: str
    sequence_number: int

    def describe(self) -> str:
        return f"chunk {self.sequence_number} of speaker {self.speaker!r} in session {self.session_id}"


class AudioCipher:
    """Seals and opens chunk audio. `current` seals (None: audio is written in the clear); `current` and `old`
    open. With no key at all it still recognises envelopes, to refuse them clearly."""

    def __init__(self, current: bytes | None = None, old: Sequence[bytes] = ()) -> None:
        self._keys: dict[bytes, bytes] = {}
        for key in (*([current] if current else []), *old):
            if len(key) != KEY_BYTES:
                raise ValueError(f"audio encryption keys are {KEY_BYTES} bytes, got {len(key)}")
            self._keys.setdefault(key_id(key), key)
        self._current = current
        self.current_id = key_id(current) if current else None
        self._digest_key = hmac.digest(current, _DIGEST_KEY_LABEL, "sha256") if current else None

    @classmethod
    def from_settings(cls, key: str | None, old: Sequence[str]) -> AudioCipher:
        """The cipher `AUDIO_ENCRYPTION_KEY` and `AUDIO_ENCRYPTION_KEYS_OLD` describe; ConfigurationError for a
        value that is not base64 of 32 bytes (an empty `AUDIO_ENCRYPTION_KEY` too: unset it to store in the
        clear)."""
        current = parse_key(key, KEY_VARIABLE) if key is not None else None
        olds = [parse_key(item, f"{OLD_KEYS_VARIABLE} (item {n})") for n, item in enumerate(old, start=1)]
        return cls(current, olds)

    @property
    def has_keys(self) -> bool:
        return bool(self._keys)

    def knows(self, kid: bytes) -> bool:
        return kid in self._keys

    def describe_keys(self) -> str:
        """The configured key ids, for messages: `AUDIO_ENCRYPTION_KEY (key id ...)` and the old ones."""
        current = f"{KEY_VARIABLE} (key id {self.current_id.hex()})" if self.current_id else f"{KEY_VARIABLE} (unset)"
        olds = [kid.hex() for kid in self._keys if kid != self.current_id]
        return f"{current}, {OLD_KEYS_VARIABLE} ({'key ids ' + ', '.join(olds) if olds else 'none'})"

    def encrypt(self, data: bytes, place: ChunkPlace) -> bytes:
        """The envelope to store for `data` (empty audio stays empty; without a current key, `data` itself)."""
        if not data or self._current is None or self.current_id is None:
            return data
        header = MAGIC + bytes([VERSION]) + self.current_id
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(_session_key(self._current, place)).encrypt(nonce, data, _associated_data(header, place))
        return header + nonce + sealed

    def decrypt(self, stored: bytes, place: ChunkPlace) -> bytes:
        """The audio of a stored value: an envelope opened, anything else (written in the clear) as it is.
        AudioUndecryptable when an envelope does not open."""
        if not stored.startswith(MAGIC):
            return stored
        if len(stored) < OVERHEAD:
            raise AudioUndecryptable(f"the stored audio of {place.describe()} is cut short ({len(stored)} bytes)")
        if stored[len(MAGIC)] != VERSION:
            raise AudioUndecryptable(
                f"the stored audio of {place.describe()} is in envelope version {stored[len(MAGIC)]}, which this "
                f"bridge does not know (it writes version {VERSION}): run a newer bridge"
            )
        kid = stored[len(MAGIC) + 1 : HEADER_BYTES]
        key = self._keys.get(kid)
        if key is None:
            raise AudioUndecryptable(
                f"the stored audio of {place.describe()} is encrypted under key id {kid.hex()}, which is none of "
                f"the configured keys ({self.describe_keys()}): add the key it was written with to {OLD_KEYS_VARIABLE}"
            )
        nonce, sealed = stored[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES], stored[HEADER_BYTES + NONCE_BYTES :]
        try:
            return AESGCM(_session_key(key, place)).decrypt(
                nonce, sealed, _associated_data(stored[:HEADER_BYTES], place)
            )
        except InvalidTag as exc:
            raise AudioUndecryptable(
                f"the stored audio of {place.describe()} does not decrypt under key id {kid.hex()}: it was altered, "
                "or it belongs to another chunk"
            ) from exc

    @staticmethod
    def stored_key_id(stored: bytes | None) -> bytes | None:
        """The key id an envelope names; None for audio stored in the clear (or none at all)."""
        if not stored or not stored.startswith(MAGIC) or len(stored) < HEADER_BYTES:
            return None
        return stored[len(MAGIC) + 1 : HEADER_BYTES]

    def keyed_digest(self, digest: str) -> str:
        """What the store keeps as a chunk's digest: keyed when encrypting, so no plain hash of audio is stored."""
        if self._digest_key is None:
            return digest
        return "hmac-sha256:" + hmac.new(self._digest_key, digest.encode(), "sha256").hexdigest()


def _session_key(key: bytes, place: ChunkPlace) -> bytes:
    return hmac.digest(key, _SESSION_KEY_LABEL + place.session_id.encode(), "sha256")


def _associated_data(header: bytes, place: ChunkPlace) -> bytes:
    fields = (place.session_id.encode(), place.speaker.encode())
    framed = b"".join(len(field).to_bytes(4, "big") + field for field in fields)
    return header + framed + place.sequence_number.to_bytes(8, "big", signed=True)


def _place(chunk: StoredChunk | NewChunk) -> ChunkPlace:
    return ChunkPlace(chunk.session_id, chunk.speaker, chunk.sequence_number)


class EncryptedStore:
    """Any Store, with chunk audio encrypted on the way in and decrypted on the way out; the rest passes through.

    `create_store` always puts it in front of the backend: with no key configured it writes in the clear, and its
    start-up check still refuses encrypted audio it cannot open, instead of handing envelopes on as audio.
    """

    def __init__(self, inner: Store, cipher: AudioCipher) -> None:
        self.inner = inner
        self.cipher = cipher
        self.name = inner.name
        self._started = False

    if not TYPE_CHECKING:  # hidden from mypy, which would otherwise let anything pass for the Store protocol

        def __getattr__(self, name: str) -> Any:
            """Backend-specific attributes (the SQLite connection tests read rows through) come from the backend."""
            if name == "inner":
                raise AttributeError(name)
            return getattr(self.inner, name)

    # lifecycle
    async def start(self) -> None:
        """Start the backend, then check that a sample of the stored audio opens under the configured keys:
        ConfigurationError now rather than undecryptable audio later."""
        if self._started:
            return
        await self.inner.start()
        try:
            await self._check_stored_keys()
        except BaseException:
            await self.inner.close()
            raise
        self._started = True

    async def close(self) -> None:
        self._started = False
        await self.inner.close()

    async def migrate(self) -> list[str]:
        return await self.inner.migrate()

    async def _check_stored_keys(self) -> None:
        try:
            sampled = await self._sample_stored_audio()
        except Exception as exc:
            # A schema not migrated yet (`db migrate` starts the store before migrating it) holds no audio; a store
            # that cannot answer these reads fails the next ones loudly anyway.
            log.debug("stored audio not sampled for its encryption keys: %s", exc)
            return
        unknown = [(place, kid) for place, kid in sampled if not self.cipher.knows(kid)]
        if not unknown:
            return
        place, kid = unknown[0]
        more = f" (and {len(unknown) - 1} more of the {len(sampled)} chunks sampled)" if len(unknown) > 1 else ""
        if self.cipher.has_keys:
            fix = f"add the key it was written with to {OLD_KEYS_VARIABLE} (a rotation keeps the old key there)"
        else:
            fix = (
                f"set {KEY_VARIABLE} to the key it was written with ({OLD_KEYS_VARIABLE} to read it without encrypting)"
            )
        raise ConfigurationError(
            f"stored audio is encrypted under a key this bridge does not have: {place.describe()} names key id "
            f"{kid.hex()}{more}; configured: {self.cipher.describe_keys()}; {fix}"
        )

    async def _sample_stored_audio(self) -> list[tuple[ChunkPlace, bytes]]:
        """(place, key id) of the envelopes among the audio this bridge may read again: the first and last pending
        chunk of up to PROBE_STREAMS speakers with pending audio, and the latest chunk of each speaker of up to
        PROBE_STREAMS active sessions (what an interview still going on was last recorded under). Audio of closed
        sessions is never read again, so a key may leave AUDIO_ENCRYPTION_KEYS_OLD once no running interview and
        no pending audio uses it."""
        places: dict[ChunkPlace, None] = {}
        for session_id, speaker in (await self.inner.sessions_with_pending_audio())[:PROBE_STREAMS]:
            pending = await self.inner.list_chunks(session_id, speaker, pending_only=True)
            for chunk in pending[:1] + pending[-1:]:
                places[_place(chunk)] = None
        later = utcnow() + timedelta(days=1)  # every active session counts as idle before then
        for session in await self.inner.stale_sessions(later, later, PROBE_STREAMS):
            for speaker, next_sequence in (await self.inner.next_sequences(session.id)).items():
                places[ChunkPlace(session.id, speaker, next_sequence - 1)] = None
        sampled: list[tuple[ChunkPlace, bytes]] = []
        for place in places:
            stored = await self.inner.get_chunk(place.session_id, place.speaker, place.sequence_number)
            kid = self.cipher.stored_key_id(stored.data if stored else None)
            if kid is not None:
                sampled.append((place, kid))
        return sampled

    def _opened(self, chunk: StoredChunk) -> StoredChunk:
        if not chunk.data or not chunk.data.startswith(MAGIC):  # in the clear: as it is, no copy on each run's path
            return chunk
        return replace(chunk, data=self.cipher.decrypt(chunk.data, _place(chunk)))

    # audio chunks: the only audio the store keeps
    async def insert_chunk(self, chunk: NewChunk) -> InsertOutcome:
        if chunk.data.startswith(MAGIC) and self.cipher.current_id is None:
            # stored in the clear it would read as an envelope: a tenant could stop every bridge start-up with it
            raise InvalidAudio(
                "the audio begins with the bytes that mark the bridge's encrypted audio; it is not audio"
            )
        if self.cipher.current_id is None:  # nothing to seal: no copy of the chunk on the per-chunk path
            sealed = chunk
        else:
            sealed = replace(
                chunk,
                data=self.cipher.encrypt(chunk.data, _place(chunk)),
                digest=self.cipher.keyed_digest(chunk.digest),
            )
        outcome = await self.inner.insert_chunk(sealed)
        if outcome is InsertOutcome.CONFLICT:
            # another digest: other audio, or the same audio stored under another key (or before encryption)
            stored = await self.get_chunk(chunk.session_id, chunk.speaker, chunk.sequence_number)
            if stored is not None and stored.data == chunk.data:
                return InsertOutcome.DUPLICATE
        return outcome

    async def list_chunks(
        self,
        session_id: str,
        speaker: str,
        *,
        from_sequence: int = 0,
        pending_only: bool = False,
        with_data: bool = False,
    ) -> list[StoredChunk]:
        chunks = await self.inner.list_chunks(
            session_id, speaker, from_sequence=from_sequence, pending_only=pending_only, with_data=with_data
        )
        return [self._opened(chunk) for chunk in chunks] if with_data else chunks

    async def get_chunk(self, session_id: str, speaker: str, sequence_number: int) -> StoredChunk | None:
        chunk = await self.inner.get_chunk(session_id, speaker, sequence_number)
        return None if chunk is None else self._opened(chunk)

    async def next_sequences(self, session_id: str) -> dict[str, int]:
        return await self.inner.next_sequences(session_id)

    async def stuck_chunks(self, received_before: datetime, due_at: datetime, limit: int) -> list[StuckChunk]:
        return await self.inner.stuck_chunks(received_before, due_at, limit)

    async def record_chunk_attempt(
        self, session_id: str, speaker: str, sequences: Sequence[int], next_attempt_at: datetime
    ) -> int:
        return await self.inner.record_chunk_attempt(session_id, speaker, sequences, next_attempt_at)

    async def fail_chunks(self, session_id: str, speaker: str, sequences: Sequence[int], at: datetime) -> int:
        return await self.inner.fail_chunks(session_id, speaker, sequences, at)

    async def failed_sequences(self, session_id: str) -> dict[str, list[int]]:
        return await self.inner.failed_sequences(session_id)

    async def sessions_with_pending_audio(self) -> list[tuple[str, str]]:
        return await self.inner.sessions_with_pending_audio()

    # tenants
    async def create_tenant(self, tenant: Tenant, api_key_hash: str) -> None:
        await self.inner.create_tenant(tenant, api_key_hash)

    async def tenant_by_key_hash(self, api_key_hash: str) -> Tenant | None:
        return await self.inner.tenant_by_key_hash(api_key_hash)

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        return await self.inner.get_tenant(tenant_id)

    async def tenants_named(self, name: str) -> list[Tenant]:
        return await self.inner.tenants_named(name)

    async def set_tenant_webhook(self, tenant_id: str, url: str | None, secret: str | None) -> bool:
        return await self.inner.set_tenant_webhook(tenant_id, url, secret)

    async def claim_webhook_deliveries(
        self, due_by: datetime, lease_until: datetime, limit: int, *, session_id: str | None = None
    ) -> list[WebhookDelivery]:
        return await self.inner.claim_webhook_deliveries(due_by, lease_until, limit, session_id=session_id)

    async def finish_webhook_delivery(
        self, delivery_id: str, *, delivered: bool, at: datetime, next_attempt_at: datetime | None, error: str | None
    ) -> None:
        await self.inner.finish_webhook_delivery(
            delivery_id, delivered=delivered, at=at, next_attempt_at=next_attempt_at, error=error
        )

    # sessions
    async def create_session(self, session: Session) -> None:
        await self.inner.create_session(session)

    async def get_session(self, session_id: str, tenant_id: str | None) -> Session | None:
        return await self.inner.get_session(session_id, tenant_id)

    async def list_sessions(
        self,
        tenant_id: str,
        *,
        status: SessionStatus | None = None,
        candidate_id: str | None = None,
        limit: int = 50,
        before: tuple[datetime, str] | None = None,
    ) -> list[Session]:
        return await self.inner.list_sessions(
            tenant_id, status=status, candidate_id=candidate_id, limit=limit, before=before
        )

    async def set_session_status(
        self, session_id: str, status: SessionStatus, at: datetime, *, only_if_active: bool = True
    ) -> Session | None:
        return await self.inner.set_session_status(session_id, status, at, only_if_active=only_if_active)

    async def close_session(self, session_id: str, status: SessionStatus, at: datetime) -> Session | None:
        return await self.inner.close_session(session_id, status, at)

    async def stale_sessions(self, idle_before: datetime, started_before: datetime, limit: int) -> list[Session]:
        return await self.inner.stale_sessions(idle_before, started_before, limit)

    async def delete_session(self, tenant_id: str, session_id: str) -> bool:
        return await self.inner.delete_session(tenant_id, session_id)

    async def delete_closed_audio(self, closed_before: datetime, limit: int) -> int:
        return await self.inner.delete_closed_audio(closed_before, limit)

    async def delete_closed_sessions(self, closed_before: datetime, limit: int) -> int:
        return await self.inner.delete_closed_sessions(closed_before, limit)

    async def add_usage(
        self, tenant_id: str, day: date, *, audio_ms: int = 0, engine_ms: int = 0, engine_calls: int = 0
    ) -> None:
        await self.inner.add_usage(tenant_id, day, audio_ms=audio_ms, engine_ms=engine_ms, engine_calls=engine_calls)

    async def usage(self, tenant_id: str, first: date, last: date) -> list[UsageDay]:
        return await self.inner.usage(tenant_id, first, last)

    async def claim_reaper_pass(self, owner: str, now: datetime, until: datetime) -> bool:
        return await self.inner.claim_reaper_pass(owner, now, until)

    async def release_reaper_pass(self, owner: str) -> None:
        await self.inner.release_reaper_pass(owner)

    # speaker streams: a header's sequence number and offsets, no audio
    async def claim_stream(
        self, session_id: str, speaker: str, owner: str, lease_seconds: float, now: datetime
    ) -> SpeakerStream | None:
        return await self.inner.claim_stream(session_id, speaker, owner, lease_seconds, now)

    async def save_stream(
        self,
        stream: SpeakerStream,
        owner: str,
        *,
        done_sequences: Sequence[int] = (),
        entry: NewEntry | None = None,
        usage: UsageCount | None = None,
    ) -> EntryWrite | None:
        return await self.inner.save_stream(stream, owner, done_sequences=done_sequences, entry=entry, usage=usage)

    async def release_stream(self, session_id: str, speaker: str, owner: str) -> None:
        await self.inner.release_stream(session_id, speaker, owner)

    # transcript entries
    async def insert_entry(self, entry: NewEntry) -> EntryWrite:
        return await self.inner.insert_entry(entry)

    async def list_entries(self, session_id: str) -> list[TranscriptEntry]:
        return await self.inner.list_entries(session_id)
