"""ArrivalCache: acknowledged chunk bytes kept for their run, within a byte budget, oldest dropped first."""

from __future__ import annotations

from functions.process_audio.arrivals import ArrivalCache


def test_a_kept_chunk_is_taken_once() -> None:
    """The run gets the bytes without a store read, and the memory is given back."""
    cache = ArrivalCache(budget_bytes=100)
    assert cache.put("s", "a", 0, b"x" * 10, "audio/wav")
    assert cache.bytes == 10
    assert cache.take("s", "a", 0) == (b"x" * 10, "audio/wav")
    assert cache.take("s", "a", 0) is None
    assert cache.bytes == 0


def test_the_budget_is_kept_by_dropping_the_oldest() -> None:
    """A backlog never holds more than the budget; the oldest chunks are read back from the store instead."""
    cache = ArrivalCache(budget_bytes=30)
    for seq in range(5):
        assert cache.put("s", "a", seq, b"x" * 10, None)
    assert cache.bytes == 30
    assert [cache.take("s", "a", seq) is not None for seq in range(5)] == [False, False, True, True, True]
    assert not cache.put("s", "a", 9, b"x" * 31, None), "a chunk larger than the budget is not kept"


def test_forget_drops_a_session_or_one_speaker() -> None:
    """Ended, deleted or evicted streams give their memory back."""
    cache = ArrivalCache(budget_bytes=100)
    cache.put("s", "a", 0, b"1234", None)
    cache.put("s", "b", 0, b"1234", None)
    cache.put("t", "a", 0, b"1234", None)
    cache.forget("s", "a")
    assert len(cache) == 2 and cache.bytes == 8
    cache.forget("s")
    assert len(cache) == 1 and cache.bytes == 4
