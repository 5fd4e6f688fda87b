"""A speaker's open utterance in memory: decoded PCM of the pending chunks plus its speech tracking.

Only a cache: the truth is the speaker stream and the pending chunks in the store. Any process rebuilds it from
there (the stream's `version` tells whether this copy is still current), and a rebuilt copy must decide exactly
as this one would. So after the front is cut, speech tracking restarts from the new buffer start, chunk by
chunk, each chunk at the gain it got when it arrived (computed on the whole chunk): the same steps a rebuild
from the store takes.

The speech model sees every chunk brought to a common peak level (`shared.audio.levels`), so a quiet
microphone is detected like a loud one; the stored PCM keeps its own level.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from functions.process_audio.segmenter import chunk_index
from shared.audio.levels import apply_block_gains, block_gains
from shared.audio.vad import SpeechDetector, VadTrack
from shared.stt.base import Pcm

_EMPTY: Pcm = np.zeros(0, dtype=np.float32)
Gains = npt.NDArray[np.float32]


@dataclass
class SpeakerBuffer:
    """PCM from the stream's buffer start (offset already applied), with the chunk each sample came from."""

    detector: SpeechDetector
    version: int = -1
    pcm: Pcm = field(default_factory=lambda: _EMPTY)
    chunk_seqs: list[int] = field(default_factory=list)
    chunk_starts: list[int] = field(default_factory=list)
    chunk_gains: list[Gains] = field(default_factory=list)  # per chunk; empty for digital silence (model skipped)
    chunk_offsets: list[int] = field(default_factory=list)  # samples of the chunk's audio before this buffer's copy
    vad: VadTrack = field(init=False)

    def __post_init__(self) -> None:
        self.vad = VadTrack(self.detector)

    @property
    def total(self) -> int:
        return int(self.pcm.shape[0])

    def append(self, sequence: int, pcm: Pcm, *, gains: Gains | None = None, offset: int = 0) -> None:
        """Add one decoded chunk, or its tail from `offset` on; its speech is detected at `gains` (computed on the
        whole chunk: default `block_gains(pcm)`, valid only for a whole chunk).

        Runs the speech model unless the chunk is digital silence: call it off the event loop.
        """
        levels = block_gains(pcm) if gains is None else gains
        self.chunk_seqs.append(sequence)
        self.chunk_starts.append(self.total)
        self.chunk_gains.append(levels)
        self.chunk_offsets.append(offset)
        self.pcm = np.concatenate([self.pcm, pcm]) if self.total else pcm.astype(np.float32, copy=False)
        self._track(pcm, levels, offset)

    def _track(self, pcm: Pcm, gains: Gains, offset: int) -> None:
        if gains.size == 0:
            self.vad.extend(pcm, silent=True)
        else:
            self.vad.extend(apply_block_gains(pcm, gains, offset))

    def regions(self) -> list[tuple[int, int]]:
        return [(max(0, s), min(self.total, e)) for s, e in self.vad.regions() if min(self.total, e) > max(0, s)]

    def sequence_at(self, position: int) -> int:
        """The chunk holding sample `position` (the last chunk for the end of the buffer)."""
        return self.chunk_seqs[max(0, chunk_index(self.chunk_starts, position))]

    def consume(self, samples: int) -> tuple[list[int], int | None, int]:
        """Drop `samples` from the front and restart speech tracking on what is left.

        Returns the sequences now fully consumed, the sequence the buffer now starts in (None when empty) and
        how far into that chunk's audio (as this buffer held it) the buffer now starts. Runs the speech model
        over the remaining audio: call it off the event loop.
        """
        samples = min(samples, self.total)
        done: list[int] = []
        kept: list[tuple[int, int, Gains, int]] = []
        offset_in_first = 0
        for i, seq in enumerate(self.chunk_seqs):
            start = self.chunk_starts[i]
            end = self.chunk_starts[i + 1] if i + 1 < len(self.chunk_starts) else self.total
            if end <= samples:
                done.append(seq)
                continue
            if not kept:
                offset_in_first = max(0, samples - start)
            cut_into = max(0, samples - start)
            kept.append((seq, max(0, start - samples), self.chunk_gains[i], self.chunk_offsets[i] + cut_into))
        self.pcm = self.pcm[samples:]
        self.chunk_seqs = [seq for seq, _, _, _ in kept]
        self.chunk_starts = [start for _, start, _, _ in kept]
        self.chunk_gains = [gains for _, _, gains, _ in kept]
        self.chunk_offsets = [offset for _, _, _, offset in kept]
        self.vad = VadTrack(self.detector)
        for i, gains in enumerate(self.chunk_gains):
            end = self.chunk_starts[i + 1] if i + 1 < len(self.chunk_starts) else self.total
            self._track(self.pcm[self.chunk_starts[i] : end], gains, self.chunk_offsets[i])
        return done, (self.chunk_seqs[0] if self.chunk_seqs else None), offset_in_first
