"""Ogg page walking: the stream header is the leading pages with granule position 0 (OpusHead, OpusTags;
Vorbis' three headers), and a continuation chunk is decodable as `header pages + its whole pages`."""

from __future__ import annotations

import struct

CAPTURE = b"OggS"


def whole_pages(data: bytes, start: int = 0) -> list[tuple[int, int, int]]:
    """(offset, length, granule position) of each whole page from `start`; stops at the first partial one."""
    pages = []
    pos = start
    while data.startswith(CAPTURE, pos) and pos + 27 <= len(data):
        nsegs = data[pos + 26]
        if pos + 27 + nsegs > len(data):
            break
        length = 27 + nsegs + sum(data[pos + 27 : pos + 27 + nsegs])
        if pos + length > len(data):
            break
        (granule,) = struct.unpack_from("<q", data, pos + 6)
        pages.append((pos, length, granule))
        pos += length
    return pages


def header_pages(data: bytes) -> bytes | None:
    """The leading pages whose granule position is 0 (codec headers), or None if there are none."""
    pages = whole_pages(data)
    count = next((i for i, page in enumerate(pages) if page[2] != 0), len(pages))
    if count == 0:
        return None
    last = pages[count - 1]
    return data[: last[0] + last[1]]


def whole_pages_span(data: bytes) -> tuple[int, int]:
    """(start, end) of the run of whole pages beginning at the first capture pattern; (0, 0) if none."""
    start = data.find(CAPTURE)
    if start < 0:
        return 0, 0
    pages = whole_pages(data, start)
    return (start, pages[-1][0] + pages[-1][1]) if pages else (start, start)
