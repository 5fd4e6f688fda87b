"""Word error rate with a small English text normaliser, shared by the tests and the benchmarks.

The normaliser makes references and hypotheses comparable across the styles found in test sets:
case, punctuation, hyphens, apostrophes, a few titles (`Mr.` = `mister`), and numbers written as
digits or as words (`60` = `sixty`, `12%` = `twelve percent`, `20th` = `twentieth`).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["corpus_wer", "normalize_text", "wer", "word_errors"]

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((1_000_000_000, "billion"), (1_000_000, "million"), (1_000, "thousand"))
_ORDINAL_WORDS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
_SCALE_WORDS = frozenset({"hundred", "thousand", "million", "billion"})
_NUMBER_WORDS = frozenset(_ONES[1:] + _TENS[2:])
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "okay": "ok", "percent": "percent"}
_NUMBER_TOKEN = re.compile(r"^(\d+)(?:\.(\d+))?(%|st|nd|rd|th)?$")
_DIGIT_GROUPS = re.compile(r"(?<=\d),(?=\d{3}\b)")


def _under_thousand(n: int) -> list[str]:
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [_ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens])
        if ones:
            words.append(_ONES[ones])
    elif rest or not words:
        words.append(_ONES[rest])
    return words


def _cardinal(n: int) -> list[str]:
    if n >= 1_000_000_000_000:
        return [_ONES[int(d)] for d in str(n)]
    words: list[str] = []
    for value, name in _SCALES:
        count, n = divmod(n, value)
        if count:
            words += [*_under_thousand(count), name]
    if n or not words:
        words += _under_thousand(n)
    return words


def _ordinal(words: list[str]) -> list[str]:
    last = words[-1]
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return [*words[:-1], last]


def _expand_number(token: str) -> list[str] | None:
    match = _NUMBER_TOKEN.match(token)
    if match is None:
        return None
    integer, fraction, suffix = match.groups()
    words = _cardinal(int(integer))
    if fraction:
        words += ["point", *(_ONES[int(d)] for d in fraction)]
    if suffix == "%":
        words.append("percent")
    elif suffix:
        words = _ordinal(words)
    return words


def normalize_text(text: str) -> str:
    """Lower-case, drop punctuation and diacritics, spell numbers as words, and collapse whitespace."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = _DIGIT_GROUPS.sub("", text)  # 600,000 -> 600000
    text = text.replace("’", "'").replace("'", "")  # isn't -> isnt, 'em -> em
    text = re.sub(r"[-‐‑‒–—/]", " ", text)  # twenty-one -> twenty one
    text = re.sub(r"(?<=\d)\s+%", "%", text)
    words: list[str] = []
    for raw in text.split():
        token = raw.strip('.,;:!?"()[]{}<>…«»“”*_~`')
        if not token:
            continue
        expanded = _expand_number(token)
        if expanded is not None:
            words += expanded
            continue
        token = re.sub(r"[^\w%]", " ", token).replace("_", " ").replace("%", " percent ")
        for part in token.split():
            expanded = _expand_number(part)
            words += expanded if expanded is not None else [_ABBREVIATIONS.get(part, part)]
    # British "one hundred and twenty" reads the same as "120".
    kept = [
        word
        for i, word in enumerate(words)
        if not (
            word == "and" and 0 < i < len(words) - 1 and words[i - 1] in _SCALE_WORDS and words[i + 1] in _NUMBER_WORDS
        )
    ]
    return " ".join(kept)


def _edit_distance(ref: list[str], hyp: list[str]) -> int:
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        current = [i]
        for j, hyp_word in enumerate(hyp, start=1):
            cost = 0 if ref_word == hyp_word else 1
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost))
        previous = current
    return previous[-1]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """Return (substitutions + deletions + insertions, reference word count) after normalising both texts."""
    ref = normalize_text(reference).split()
    hyp = normalize_text(hypothesis).split()
    return _edit_distance(ref, hyp), len(ref)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of `hypothesis` against `reference`; an empty reference scores 0.0 only if nothing was said."""
    errors, words = word_errors(reference, hypothesis)
    if words == 0:
        return 0.0 if errors == 0 else 1.0
    return errors / words


def corpus_wer(pairs: list[tuple[str, str]]) -> float:
    """Pooled WER over (reference, hypothesis) pairs: total errors divided by total reference words."""
    errors = words = 0
    for reference, hypothesis in pairs:
        e, w = word_errors(reference, hypothesis)
        errors += e
        words += w
    return errors / words if words else 0.0
