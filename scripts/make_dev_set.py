"""Build bench/devset/: the development clips as real microphones deliver them, for `bench/wer.py`.

The shared development set (../shared/data) is loud (peaks near full scale), clean and cut into single
utterances. Browsers send quiet microphones, rooms and continuous talk with pauses. From the real speech clips
there (rows whose speaker_role is not `none`) and this repo's own speech fixtures (`tests/fixtures/**/<name>.txt`
beside a .wav or .flac; a clip whose normalised reference is already in is skipped), this writes:

- `utterances/peak<L>/`: every clip with its peak re-levelled to L = -3, -30, -45, -55 dBFS; a fixed third of
  them (the same at every level) with room noise 20-25 dB under their active speech level first.
- `streams/peak<L>/`: 4 continuous streams of ~90-110 s per level (two rounds: in each, every real clip is used
  once, split over 2 streams), each made of about half the real clips in a fixed shuffled order, joined with
  0.3-6 s pauses (seeded) over one continuous room noise 50 dB under the peak. Every clip is brought to one peak
  first, as one microphone hears one speaker; the stream is then re-levelled to L as a whole, like a file turned
  down with `sox norm`. Levels differ only in gain (and the 16-bit rounding of the file), so a level's WER shows
  what the level does, not a different room; noisy rooms are the noisy third of the utterances.
- `noise/`: white, pink and brown noise and 50 Hz hum, 10 s each, at RMS -60, -45, -30, -15 dBFS and at a peak
  of -1 dBFS (near full scale), plus 10 s of digital silence. Nothing should be transcribed from them.
- `manifest.tsv`: id, path (relative to bench/devset), shape, level, noisy, seconds, peak_dbfs, rms_dbfs,
  sources (clip ids), reference. Levels are `peak-30` style for speech, `rms-60` / `peak-1` / `silence` for noise.

Everything is deterministic (fixed seeds; noise seeds derive from clip ids), so reruns give the same files.
Files are 16 kHz mono 16-bit WAV. `--write-fixtures` also (re)writes the few real clips in
`tests/fixtures/speech/` (see SOURCES.md there) that tests use when ../shared is absent.

    .venv/bin/python scripts/make_dev_set.py [--data ../shared/data] [--out bench/devset] [--write-fixtures]
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import sys
import wave
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.devset import (  # noqa: E402
    SAMPLE_RATE,
    Pcm,
    add_noise_under,
    brown_noise,
    hum,
    make_stream,
    peak_dbfs,
    pink_noise,
    relevel,
    rms_dbfs,
    white_noise,
)
from shared.audio.decode import decode_chunk  # noqa: E402
from shared.audio.formats import inspect_chunk  # noqa: E402
from shared.stt.wavio import wav_bytes  # noqa: E402
from shared.stt.wer import normalize_text  # noqa: E402

SEED = 20240611
SPEECH_PEAKS = (-3, -30, -45, -55)
NOISY_FRACTION = 1 / 3
SNR_RANGE_DB = (20.0, 25.0)
STREAM_COUNT = 2
STREAM_ROUNDS = 2  # each round uses every real clip once, in its own order and with its own pauses
PAUSE_RANGE_S = (0.3, 6.0)
STREAM_NOISE_BELOW_PEAK_DB = 50.0
NOISE_SECONDS = 10.0
NOISE_RMS = (-60, -45, -30, -15)
FULL_SCALE_PEAK = -1
FULL_SCALE_SOURCE_RMS = -20.0  # generated at this RMS, then re-levelled to the peak
NOISES = {"white": white_noise, "pink": pink_noise, "brown": brown_noise, "hum": hum}
MANIFEST_COLUMNS = ("id", "path", "shape", "level", "noisy", "seconds", "peak_dbfs", "rms_dbfs", "sources", "reference")

# Real clips committed to tests/fixtures/speech/ (source path in the data set -> file name here), varied voices:
# a LibriSpeech reader (test-clean) and one from test-other, CMU ARCTIC US male and Indian-accented female,
# the LJ Speech reader (22.05 kHz upstream, converted to 16 kHz).
FIXTURE_CLIPS = (
    ("real/triton_asr_client/1221-135766-0002.wav", "librispeech_1221-135766-0002.wav"),
    ("real/whisperlivekit/7902-96591-0000.flac", "librispeech_7902-96591-0000.wav"),
    ("real/pyroomacoustics/cmu_arctic_us_aew_a0001.wav", "cmu_arctic_aew_a0001.wav"),
    ("real/pyroomacoustics/cmu_arctic_us_axb_a0005.wav", "cmu_arctic_axb_a0005.wav"),
    ("real/speechbrain/LJ050-0131.wav", "ljspeech_LJ050-0131.wav"),
    ("real/arm_ml_eval_kit/yes_no_go_stop.wav", "speechcommands_yes_no_go_stop.wav"),
    ("real/arm_ml_eval_kit/right_left_up.wav", "speechcommands_right_left_up.wav"),
)
FIXTURE_DIR = REPO / "tests" / "fixtures" / "speech"


@dataclass(frozen=True)
class Clip:
    id: str
    pcm: Pcm
    reference: str
    real: bool  # from the shared data set's real/ part (streams are made of these)


@dataclass(frozen=True)
class Row:
    id: str
    path: str
    shape: str
    level: str
    noisy: bool
    pcm: Pcm
    sources: tuple[str, ...]
    reference: str


def decode(path: Path) -> Pcm:
    data = path.read_bytes()
    return decode_chunk(data, inspect_chunk(data, None))


def id_seed(text: str) -> int:
    """A seed that belongs to one clip, so adding a clip does not change anyone else's noise."""
    return zlib.crc32(text.encode("utf-8")) ^ SEED


def load_real(data: Path) -> list[Clip]:
    manifest = data / "manifest.tsv"
    if not manifest.exists():
        print(f"warning: {manifest} not found; using only the repo's fixtures", file=sys.stderr)
        return []
    clips = []
    with manifest.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row["relative_path"].startswith("real/") and row["speaker_role"] != "none":
                clips.append(Clip(row["id"], decode(data / row["relative_path"]), row["reference_text"], True))
    return clips


def load_fixtures() -> list[Clip]:
    clips = []
    root = REPO / "tests" / "fixtures"
    for text_file in sorted(root.rglob("*.txt")):
        for suffix in (".wav", ".flac"):
            audio = text_file.with_suffix(suffix)
            if audio.exists():
                name = "fixture_" + "_".join(audio.relative_to(root).with_suffix("").parts)
                reference = text_file.read_text(encoding="utf-8").strip()
                clips.append(Clip(name, decode(audio), reference, False))
                break
    return clips


def unique(clips: list[Clip]) -> list[Clip]:
    """Drop clips whose normalised reference is already in: the fixtures copy some real clips."""
    seen: set[str] = set()
    kept = []
    for clip in clips:
        key = normalize_text(clip.reference)
        if key not in seen:
            seen.add(key)
            kept.append(clip)
    return kept


def level_name(kind: str, dbfs: int) -> str:
    return f"{kind}{dbfs}"


def utterances(clips: list[Clip]) -> list[Row]:
    by_hash = sorted(clips, key=lambda c: id_seed(c.id))
    noisy = {c.id for c in by_hash[: round(len(clips) * NOISY_FRACTION)]}
    rows = []
    for clip in clips:
        source = clip.pcm
        if clip.id in noisy:
            snr = float(np.random.default_rng(id_seed(clip.id)).uniform(*SNR_RANGE_DB))
            source = add_noise_under(clip.pcm, snr, id_seed(clip.id))
        for peak in SPEECH_PEAKS:
            level = level_name("peak", peak)
            rows.append(
                Row(
                    f"utterances/{level}/{clip.id}",
                    f"utterances/{level}/{clip.id}.wav",
                    "utterances",
                    level,
                    clip.id in noisy,
                    relevel(source, peak),
                    (clip.id,),
                    clip.reference,
                )
            )
    return rows


def split_streams(clips: list[Clip], seed: int = SEED) -> list[list[Clip]]:
    """A fixed shuffle, each clip to the stream with the least speech so far: streams of about equal length."""
    order = np.random.default_rng(seed).permutation(len(clips))
    streams: list[list[Clip]] = [[] for _ in range(STREAM_COUNT)]
    for index in order:
        shortest = min(streams, key=lambda s: sum(c.pcm.size for c in s))
        shortest.append(clips[int(index)])
    return streams


def streams(clips: list[Clip]) -> list[Row]:
    rows = []
    rounds = [split_streams(clips, SEED + round_) for round_ in range(STREAM_ROUNDS)]
    for number, members in enumerate((members for split in rounds for members in split), start=1):
        pauses = [float(p) for p in np.random.default_rng(SEED + number).uniform(*PAUSE_RANGE_S, len(members) + 1)]
        reference = " ".join(c.reference for c in members)
        loudest = max(SPEECH_PEAKS)
        room = loudest - STREAM_NOISE_BELOW_PEAK_DB
        joined = make_stream([relevel(c.pcm, loudest) for c in members], pauses, room, SEED + number)
        for peak in SPEECH_PEAKS:
            level = level_name("peak", peak)
            rows.append(
                Row(
                    f"streams/{level}/stream_{number}",
                    f"streams/{level}/stream_{number}.wav",
                    "streams",
                    level,
                    True,
                    relevel(joined, peak),
                    tuple(c.id for c in members),
                    reference,
                )
            )
    return rows


def noise() -> list[Row]:
    rows = []
    for color, generate in NOISES.items():
        seed = id_seed(color)
        for rms in NOISE_RMS:
            level = level_name("rms", rms)
            pcm = generate(NOISE_SECONDS, rms, seed)
            rows.append(Row(f"noise/{color}_{level}", f"noise/{color}_{level}.wav", "noise", level, True, pcm, (), ""))
        level = level_name("peak", FULL_SCALE_PEAK)
        pcm = relevel(generate(NOISE_SECONDS, FULL_SCALE_SOURCE_RMS, seed), FULL_SCALE_PEAK)
        rows.append(Row(f"noise/{color}_{level}", f"noise/{color}_{level}.wav", "noise", level, True, pcm, (), ""))
    silence = np.zeros(round(NOISE_SECONDS * SAMPLE_RATE), dtype=np.float32)
    rows.append(Row("noise/silence", "noise/silence.wav", "noise", "silence", False, silence, (), ""))
    return rows


def fmt_db(value: float) -> str:
    return f"{value:.2f}"  # levels bottom out at -120 dBFS (shared.audio.levels), never -inf


def write(out: Path, rows: list[Row]) -> None:
    for part in ("utterances", "streams", "noise", "manifest.tsv"):
        target = out / part
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    lines = ["\t".join(MANIFEST_COLUMNS)]
    for row in rows:
        path = out / row.path
        path.parent.mkdir(parents=True, exist_ok=True)
        data = wav_bytes(row.pcm)
        path.write_bytes(data)
        written = decode_chunk(data, inspect_chunk(data, None))  # measure what the file holds, after 16-bit rounding
        fields = (
            row.id,
            row.path,
            row.shape,
            row.level,
            "yes" if row.noisy else "no",
            f"{written.size / SAMPLE_RATE:.3f}",
            fmt_db(peak_dbfs(written)),
            fmt_db(rms_dbfs(written)),
            ",".join(row.sources),
            row.reference,
        )
        if any("\t" in f or "\n" in f for f in fields):
            raise ValueError(f"{row.id}: a field holds a tab or a newline")
        lines.append("\t".join(fields))
    (out / "manifest.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def is_16k_mono_wav(raw: bytes) -> bool:
    try:
        with wave.open(io.BytesIO(raw), "rb") as src:
            return (src.getnchannels(), src.getsampwidth(), src.getframerate()) == (1, 2, SAMPLE_RATE)
    except (wave.Error, EOFError):
        return False


def write_fixtures(data: Path) -> None:
    """Copy the FIXTURE_CLIPS into tests/fixtures/speech/: byte-identical when already 16 kHz 16-bit WAV."""
    FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
    for source, name in FIXTURE_CLIPS:
        path = data / source
        raw = path.read_bytes()
        target = FIXTURE_DIR / name
        target.write_bytes(raw if is_16k_mono_wav(raw) else wav_bytes(decode_chunk(raw, inspect_chunk(raw, None))))
        reference = path.with_suffix(".txt").read_text(encoding="utf-8").strip()
        target.with_suffix(".txt").write_text(reference + "\n", encoding="utf-8")
        print(f"  tests/fixtures/speech/{name}: {target.stat().st_size} bytes")


def summary(rows: list[Row]) -> None:
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.shape, row.level), []).append(row)
    print(f"{'shape':<11} {'level':<8} {'files':>5} {'seconds':>8} {'noisy':>5}")
    for (shape, level), members in groups.items():
        seconds = sum(r.pcm.size for r in members) / SAMPLE_RATE
        noisy = sum(r.noisy for r in members)
        print(f"{shape:<11} {level:<8} {len(members):>5} {seconds:>8.1f} {noisy:>5}")
    total = sum(r.pcm.size for r in rows) / SAMPLE_RATE
    print(f"{'total':<20} {len(rows):>5} {total:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "devset")
    parser.add_argument("--write-fixtures", action="store_true", help="also rewrite tests/fixtures/speech/ clips")
    args = parser.parse_args()
    if args.write_fixtures:
        write_fixtures(args.data)
    real = load_real(args.data)
    clips = unique(real + load_fixtures())
    stream_clips = [c for c in clips if c.real] or clips
    if not clips:
        sys.exit("no speech clips found: pass --data or restore tests/fixtures")
    rows = utterances(clips) + streams(stream_clips) + noise()
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out, rows)
    print(f"{len(clips)} clips ({len(real)} real from {args.data}), written to {args.out}")
    summary(rows)


if __name__ == "__main__":
    main()
