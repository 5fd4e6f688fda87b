"""The hallucination filter on constructed segments, with signal values measured on tiny.en."""

from __future__ import annotations

import pytest

from shared.stt.base import Segment, Transcription
from shared.stt.filters import clean_transcription, is_silence_phrase, keep_segment, trim_prompt


def seg(
    text: str, *, logprob: float | None = -0.2, no_speech: float | None = 0.02, ratio: float | None = 1.2
) -> Segment:
    return Segment(0.0, 2.0, text, avg_logprob=logprob, no_speech_prob=no_speech, compression_ratio=ratio)


def test_confident_speech_is_kept() -> None:
    """An ordinary, confidently decoded sentence is kept."""
    assert keep_segment(seg(" I tell you it is not poison, she cried."))


def test_silent_segment_is_dropped() -> None:
    """A segment with no_speech_prob > 0.6 and avg_logprob < -1.0 is dropped (openai/whisper's rule)."""
    assert not keep_segment(seg(" And then we went home.", logprob=-1.3, no_speech=0.7))


def test_likely_silence_with_good_logprob_is_kept() -> None:
    """High no_speech_prob alone does not drop ordinary words that decoded well."""
    assert keep_segment(seg(" And then we went home.", logprob=-0.4, no_speech=0.7))


def test_repetition_loop_is_dropped() -> None:
    """A segment whose compression ratio exceeds 2.4 (a repetition loop) is dropped."""
    looped = " see you in the next video," * 20
    assert not keep_segment(seg(looped, logprob=-0.19, no_speech=0.9, ratio=10.9))


@pytest.mark.parametrize(
    ("text", "logprob", "no_speech"),
    [
        ("you", -0.93, 0.94),  # tiny.en on 10 s of digital silence
        ("Wooooooh!", -1.15, 0.59),  # tiny.en on a tone sweep
        ("Woohoo!", -0.8, 0.59),
        ("Thanks for watching!", -0.5, 0.45),
        ("Thank you.", -0.9, 0.1),
        ("Subtitles by the Amara.org community", -0.6, 0.5),
    ],
)
def test_silence_phrases_with_weak_signals_are_dropped(text: str, logprob: float, no_speech: float) -> None:
    """A known silence phrase is dropped when the decoder itself doubts it."""
    assert not keep_segment(seg(text, logprob=logprob, no_speech=no_speech))


@pytest.mark.parametrize("text", ["Thank you.", "Thanks for watching!", "You."])
def test_confident_silence_phrases_survive(text: str) -> None:
    """A real, confidently decoded "Thank you." from a speaker is kept."""
    assert keep_segment(seg(text, logprob=-0.15, no_speech=0.03))


def test_phrase_without_signals_is_kept() -> None:
    """An engine without segment signals (gpt-4o) keeps phrases: nothing says they are weak."""
    assert keep_segment(seg("Thank you.", logprob=None, no_speech=None, ratio=None))


@pytest.mark.parametrize("text", ["[BLANK_AUDIO]", "(upbeat music)", "♪ ♪", " . . . . ", ""])
def test_annotations_and_empty_text_are_dropped(text: str) -> None:
    """Non-speech annotations and text without words never reach a transcript."""
    assert not keep_segment(seg(text))


def test_phrase_detection_is_exact_not_substring() -> None:
    """Only whole known phrases count: a sentence containing "thank you" is not a silence phrase."""
    assert is_silence_phrase(" Thank you. ")
    assert is_silence_phrase("WOOHOO")
    assert not is_silence_phrase("I said thank you to the team.")
    assert not is_silence_phrase("Who?")


def test_clean_transcription_keeps_real_segments_and_normalises_whitespace() -> None:
    """Hallucinated segments disappear from text and segments; the rest is joined with single spaces."""
    t = Transcription(
        text="ignored",
        segments=(
            seg("  Hello   there,\n how are you? ", logprob=-0.1),
            seg(" you", logprob=-0.93, no_speech=0.94),
            seg(" Fine,  thanks. ", logprob=-0.3),
        ),
        language="en",
        confidence=0.5,
    )
    cleaned = clean_transcription(t)
    assert cleaned.text == "Hello there, how are you? Fine, thanks."
    assert [s.text for s in cleaned.segments] == ["Hello there, how are you?", "Fine, thanks."]
    assert cleaned.language == "en"
    assert cleaned.confidence == pytest.approx(0.8187, abs=1e-3)  # exp(mean(-0.1, -0.3))


def test_clean_transcription_of_pure_hallucination_is_empty() -> None:
    """A transcription made only of a hallucination becomes empty text with no confidence."""
    cleaned = clean_transcription(
        Transcription(text="you", segments=(seg("you", logprob=-0.93, no_speech=0.94),), confidence=0.4)
    )
    assert cleaned.text == ""
    assert cleaned.segments == ()
    assert cleaned.confidence is None


def test_clean_transcription_without_segments_judges_the_text() -> None:
    """Text-only transcriptions keep real text (whitespace normalised) and lose pure annotations."""
    kept = clean_transcription(Transcription(text=" Hello \n world ", confidence=0.9))
    assert (kept.text, kept.confidence) == ("Hello world", 0.9)
    assert clean_transcription(Transcription(text="[BLANK_AUDIO]", confidence=0.9)).text == ""


def test_trim_prompt_keeps_the_tail_at_a_word_boundary() -> None:
    """A long prompt keeps its last ~200 characters, starting at a whole word; empty prompts become None."""
    prompt = " ".join(f"word{i}" for i in range(100))
    trimmed = trim_prompt(prompt)
    assert trimmed is not None
    assert len(trimmed) <= 200
    assert prompt.endswith(trimmed)
    assert trimmed.split()[0] in prompt.split()
    assert trim_prompt("   ") is None
    assert trim_prompt(None) is None
