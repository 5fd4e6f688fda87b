"""A speaker's open utterance in memory: decoded PCM of the pending chunks plus its speech tracking.

Only a cache: the truth is the speaker stream and the pending chunks in the store. Any process rebuilds it from
there (the stream's `version` tells whether this copy is still current).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shared.audio.vad import SpeechDetector, VadTrack
from shared.stt.base import Pcm

_EMPTY: Pcm = np.zeros(0, dtype=np.float32)


@dataclass
class SpeakerBuffer:
    """PCM from the stream's buffer start (offset already applied), with the chunk each sample came from."""

    detector: SpeechDetector
    version: int = -1
    pcm: Pcm = field(default_factory=lambda: _EMPTY)
    chunk_seqs: list[int] = field(default_factory=list)
    chunk_starts: list[int] = field(default_factory=list)
    vad: VadTrack | None = None

    def __post_init__(self) -> None:
        self.vad = VadTrack(self.detector)

    @property
    def total(self) -> int:
        return int(self.pcm.shape[0])

    def append(self, sequence: int, pcm: Pcm, *, quiet: bool) -> None:
        """Add one decoded chunk; a quiet chunk (energy gate) skips the speech model."""
        self.chunk_seqs.append(sequence)
        self.chunk_starts.append(self.total)
        self.pcm = np.concatenate([self.pcm, pcm]) if self.total else pcm.astype(np.float32, copy=False)
        assert self.vad is not None
        self.vad.extend(pcm, quiet=quiet)

    def regions(self) -> list[tuple[int, int]]:
        assert self.vad is not None
        return [(max(0, s), min(self.total, e)) for s, e in self.vad.regions() if min(self.total, e) > max(0, s)]

    def sequence_at(self, position: int) -> int:
        """The chunk holding sample `position` (the last chunk for the end of the buffer)."""
        index = 0
        for i, start in enumerate(self.chunk_starts):
            if start <= position:
                index = i
        return self.chunk_seqs[index]

    def consume(self, samples: int) -> tuple[list[int], int | None, int]:
        """Drop `samples` from the front.

        Returns the sequences now fully consumed, the sequence the buffer now starts in (None when empty) and
        the offset into that chunk's own audio that the buffer starts at.
        """
        samples = min(samples, self.total)
        done: list[int] = []
        keep_seqs: list[int] = []
        keep_starts: list[int] = []
        for i, seq in enumerate(self.chunk_seqs):
            end = self.chunk_starts[i + 1] if i + 1 < len(self.chunk_starts) else self.total
            if end <= samples:
                done.append(seq)
            else:
                keep_seqs.append(seq)
                keep_starts.append(max(0, self.chunk_starts[i] - samples))
        offset_in_first = 0
        if keep_seqs:
            first_index = self.chunk_seqs.index(keep_seqs[0])
            offset_in_first = max(0, samples - self.chunk_starts[first_index])
        self.pcm = self.pcm[samples:]
        self.chunk_seqs, self.chunk_starts = keep_seqs, keep_starts
        assert self.vad is not None
        self.vad.drop(samples)
        return done, (keep_seqs[0] if keep_seqs else None), offset_in_first
