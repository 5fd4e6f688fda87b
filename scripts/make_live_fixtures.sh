#!/usr/bin/env bash
# Regenerates tests/fixtures/live/ from the development audio set (../shared/data): real speech with real
# pauses, for the live-path tests. Needs sox. Usage: bash scripts/make_live_fixtures.sh [path/to/shared/data]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
OUT=tests/fixtures/live
mkdir -p "$OUT"
REAL="$DATA/real/arm_ml_eval_kit"
# Two LibriSpeech sentences by one reader family, 1.2 s apart, 0.6 s lead-in and 1.0 s tail: 16 kHz mono FLAC.
sox -n -r 16000 -c 1 -b 16 "$OUT/lead.wav" trim 0 0.6
sox -n -r 16000 -c 1 -b 16 "$OUT/gap.wav" trim 0 1.2
sox -n -r 16000 -c 1 -b 16 "$OUT/tail.wav" trim 0 1.0
sox "$OUT/lead.wav" "$REAL/another_engineer.wav" "$OUT/gap.wav" "$REAL/i_tell_you.wav" "$OUT/tail.wav" \
  -r 16000 -c 1 -b 16 "$OUT/two_sentences.flac"
rm -f "$OUT/lead.wav" "$OUT/gap.wav" "$OUT/tail.wav"
printf '%s\n' "Another engineer rushed toward the door to see what was happening outside I tell you it is not poison she cried" \
  > "$OUT/two_sentences.txt"
cat > "$OUT/SOURCES.md" <<'TXT'
# Sources
`two_sentences.flac` joins two LibriSpeech dev-clean utterances (251-137823-0003 and 251-118436-0001, as
converted to WAV in the Arm ML embedded evaluation kit) with silence between them.
LibriSpeech (c) 2014 Vassil Panayotov, CC BY 4.0; Panayotov, Chen, Povey and Khudanpur, ICASSP 2015.
Changes: joined with digital silence, re-encoded as FLAC. Regenerate with `bash scripts/make_live_fixtures.sh`.
TXT
