"""Audio for the live path: classify chunks on arrival, decode them to 16 kHz mono float32, gate silence.

- `formats`: `inspect_chunk` / `stream_header`, the microsecond check run on the request path;
- `decode`: `decode_chunk` (numpy for WAV, PyAV otherwise) and `StreamDecoder`, a per-stream cache;
- `levels`: peak and RMS levels, digital silence, gain to a common level (so quiet speakers are heard);
- `vad`: Silero VAD (`SpeechDetector`, incremental `VadTrack`).
"""

from shared.audio.decode import StreamDecoder, decode_chunk
from shared.audio.formats import AudioKind, ChunkFormat, inspect_chunk, stream_header
from shared.audio.levels import is_digital_silence, normalized, peak_dbfs, rms_dbfs
from shared.audio.vad import SpeechDetector, VadTrack

__all__ = [
    "AudioKind",
    "ChunkFormat",
    "SpeechDetector",
    "StreamDecoder",
    "VadTrack",
    "decode_chunk",
    "inspect_chunk",
    "is_digital_silence",
    "normalized",
    "peak_dbfs",
    "rms_dbfs",
    "stream_header",
]
