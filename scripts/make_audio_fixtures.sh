#!/usr/bin/env bash
# Regenerates tests/fixtures/audio/ (small, committed). Needs espeak-ng, sox, ffmpeg, and for the real
# MediaRecorder chunks chromium + node with playwright-core (npm install). Output differs slightly between
# tool versions; tests compare decoded durations against each fixture itself, not hard-coded bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=tests/fixtures/audio
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"
rm -f "$OUT"/*.wav "$OUT"/*.webm "$OUT"/*.ogg "$OUT"/*.mp3 "$OUT"/*.flac "$OUT"/*.m4a "$OUT"/*.mp4 "$OUT"/*.m4s

PHRASE="Thanks, I am ready to start."
printf '%s\n' "$PHRASE" > "$OUT/phrase.txt"
FF=(ffmpeg -hide_banner -loglevel error -y -bitexact)

# The phrase: espeak-ng, trimmed, peak -3 dBFS, 0.2 s of silence either side (about 2.3 s).
espeak-ng -v en-us -s 165 -w "$TMP/raw.wav" "$PHRASE"
sox "$TMP/raw.wav" -r 16000 -c 1 -b 16 "$OUT/phrase_16k_s16.wav" \
  silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse norm -3 pad 0.2 0.2
# Resampling and channel cases, kept short (first 0.6 s) so the fixtures stay small.
sox "$OUT/phrase_16k_s16.wav" -r 44100 -c 2 -b 16 "$OUT/phrase_44k1_stereo_s16.wav" trim 0 0.6
sox "$OUT/phrase_16k_s16.wav" -r 48000 -c 1 -e floating-point -b 32 "$OUT/phrase_48k_f32.wav" trim 0 0.6

# A streaming writer's WAV: RIFF and data sizes left as the 0xFFFFFFFF placeholder (first 1.0 s).
sox "$OUT/phrase_16k_s16.wav" "$TMP/short.wav" trim 0 1.0
python3 - "$TMP/short.wav" "$OUT/phrase_placeholder_size.wav" <<'PY'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
assert data[:4] == b"RIFF" and data[36:40] == b"data", "expected a canonical 44-byte WAV header"
data[4:8] = b"\xff\xff\xff\xff"
data[40:44] = b"\xff\xff\xff\xff"
open(sys.argv[2], "wb").write(bytes(data))
PY

# Compressed encodings of the same phrase.
"${FF[@]}" -i "$OUT/phrase_16k_s16.wav" -c:a libopus -b:a 24k "$OUT/phrase.webm"
"${FF[@]}" -i "$OUT/phrase_16k_s16.wav" -c:a libopus -b:a 24k "$OUT/phrase.ogg"
"${FF[@]}" -i "$OUT/phrase_16k_s16.wav" -c:a libmp3lame -b:a 32k "$OUT/phrase.mp3"
"${FF[@]}" -i "$OUT/phrase_16k_s16.wav" -c:a flac "$OUT/phrase.flac"
"${FF[@]}" -i "$OUT/phrase_16k_s16.wav" -c:a aac -b:a 32k "$OUT/phrase.m4a"

# Fragmented MP4 (AAC, as Safari records) split into its init segment and one file per fragment.
"${FF[@]}" -i "$OUT/phrase_16k_s16.wav" -c:a aac -b:a 32k \
  -movflags frag_keyframe+empty_moov+default_base_moof -frag_duration 1000000 "$TMP/frag.mp4"
python3 - "$TMP/frag.mp4" "$OUT" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
boxes, pos = [], 0
while pos < len(data):
    size, kind = struct.unpack(">I4s", data[pos:pos + 8])
    boxes.append((kind, data[pos:pos + size]))
    pos += size
header = b"".join(b for k, b in boxes if k in (b"ftyp", b"moov"))
open(f"{sys.argv[2]}/fmp4_header.mp4", "wb").write(header)
frags, current = [], b""
for kind, box in boxes:
    if kind == b"moof" and current:
        frags.append(current)
        current = b""
    if kind not in (b"ftyp", b"moov", b"mfra"):
        current += box
frags.append(current)
for i, frag in enumerate(frags):
    open(f"{sys.argv[2]}/fmp4_frag_{i:03d}.m4s", "wb").write(frag)
PY

# Non-speech: 2 s of digital silence, 2 s of pink noise at about -40 dBFS RMS (sox -R: repeatable).
sox -n -r 16000 -c 1 -b 16 "$OUT/silence_2s.wav" trim 0 2
sox -R -n -r 16000 -c 1 -b 16 "$TMP/pink.wav" synth 2 pinknoise
sox "$TMP/pink.wav" "$OUT/pink_noise_2s.wav" gain -n -28

# Real Chromium MediaRecorder output, 1 s timeslice: the phrase, a pause, the phrase again.
sox -n -r 16000 -c 1 -b 16 "$TMP/pause.wav" trim 0 0.5
sox "$OUT/phrase_16k_s16.wav" "$TMP/pause.wav" "$OUT/phrase_16k_s16.wav" "$TMP/mic.wav"
node scripts/make_audio_fixtures_record.mjs "$TMP/mic.wav" 4.5 1000 'audio/webm;codecs=opus' "$OUT/webm_chunk_" webm
node scripts/make_audio_fixtures_record.mjs "$TMP/mic.wav" 4.5 1000 'audio/mp4' "$OUT/mp4_chunk_" mp4
# Chromium has no audio/ogg recorder; the helper says so and writes nothing.
node scripts/make_audio_fixtures_record.mjs "$TMP/mic.wav" 2 1000 'audio/ogg;codecs=opus' "$OUT/ogg_chunk_" ogg

echo "fixtures: $(cat "$OUT"/* | wc -c) bytes in $OUT" >&2
