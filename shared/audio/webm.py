"""Just enough EBML to split a MediaRecorder WebM stream into its header and decodable continuations.

With a timeslice, only the first blob carries the EBML header and Tracks. Later blobs do not start on a
Cluster: real Chromium blobs end right after a SimpleBlock's one-byte ID (0xA3), so the next blob begins with
that block's size. `continuation_body` finds where whole elements start in a blob (restoring a lost 0xA3
when that makes the bytes parse), cuts a trailing partial element, and prefixes a synthetic Cluster of unknown
size, so `stream header + body` is a valid WebM that FFmpeg decodes completely.
"""

from __future__ import annotations

EBML_ID = b"\x1a\x45\xdf\xa3"
SEGMENT_ID = b"\x18\x53\x80\x67"
CLUSTER_ID = b"\x1f\x43\xb6\x75"
_SIMPLE_BLOCK = 0xA3
_UNKNOWN_SIZE_8 = b"\x01\xff\xff\xff\xff\xff\xff\xff"
# A Cluster of unknown size: the blocks that follow belong to it until the next Cluster. Its Timecode is 1,
# not 0, so no block in it looks like the start of the stream (where decoders drop the codec's pre-skip).
SYNTHETIC_CLUSTER = CLUSTER_ID + _UNKNOWN_SIZE_8 + b"\xe7\x81\x01"
# Elements that may appear inside a Cluster, or at Segment level after clusters began.
_CLUSTER_CHILDREN = {0xA3, 0xA0, 0xE7, 0xA7, 0xAB, 0xEC, 0xBF, 0x5854}
_LEVEL1_AFTER_CLUSTERS = {0x1F43B675, 0x1C53BB6B, 0x1254C367, 0x1941A469, 0x1043A770, 0x114D9B74}
_SCAN_LIMIT = 65_536  # a continuation's first whole element starts within this many bytes


def read_id(buf: bytes, pos: int) -> tuple[int, int] | None:
    """(element id with its marker bits, length) or None when the bytes cannot start an id."""
    if pos >= len(buf) or buf[pos] < 0x10:
        return None
    length = 1 if buf[pos] & 0x80 else 2 if buf[pos] & 0x40 else 3 if buf[pos] & 0x20 else 4
    if pos + length > len(buf):
        return None
    return int.from_bytes(buf[pos : pos + length], "big"), length


def read_size(buf: bytes, pos: int) -> tuple[int | None, int] | None:
    """(size or None for 'unknown', length) or None when the vint is invalid or cut off."""
    if pos >= len(buf) or buf[pos] == 0:
        return None
    first = buf[pos]
    length = 9 - first.bit_length()
    if pos + length > len(buf):
        return None
    value = int.from_bytes(buf[pos : pos + length], "big") & ((1 << (7 * length)) - 1)
    return (None if value == (1 << (7 * length)) - 1 else value), length


def _element(buf: bytes, pos: int) -> tuple[int, int, int | None] | None:
    """(id, header length, size) of the element at pos."""
    got_id = read_id(buf, pos)
    if got_id is None:
        return None
    got_size = read_size(buf, pos + got_id[1])
    if got_size is None:
        return None
    return got_id[0], got_id[1] + got_size[1], got_size[0]


def _first_cluster(data: bytes) -> tuple[int, int] | None:
    """(Segment offset, first Cluster offset or end of data) for a blob that starts with the EBML header."""
    head = _element(data, 0)
    if head is None or head[0] != 0x1A45DFA3 or head[2] is None:
        return None
    seg_pos = head[1] + head[2]
    seg = _element(data, seg_pos)
    if seg is None or seg[0] != 0x18538067:
        return None
    pos = seg_pos + seg[1]
    while pos < len(data):
        el = _element(data, pos)
        if el is None or el[0] == 0x1F43B675 or el[2] is None:
            break
        pos += el[1] + el[2]
    return seg_pos, min(pos, len(data))


def stream_header(data: bytes) -> bytes | None:
    """Everything before the first Cluster, with the Segment size set to 'unknown' so that continuation
    bytes appended later are inside the Segment even when the writer declared a finite size."""
    found = _first_cluster(data)
    if found is None:
        return None
    seg_pos, cluster_pos = found
    seg = _element(data, seg_pos)
    assert seg is not None
    return data[:seg_pos] + SEGMENT_ID + _UNKNOWN_SIZE_8 + data[seg_pos + seg[1] : cluster_pos]


def _chain_end(buf: bytes, pos: int) -> int | None:
    """If whole cluster-level elements run from pos to the end (the last may be cut off), return where the
    last complete one ends; None if the bytes at pos do not parse that way. SimpleBlocks must look real
    (track 1-8, reserved flag bits clear, timecodes not going backwards), which rejects chance matches."""
    last_complete = pos
    count = 0
    last_tc = -(1 << 15)
    while pos < len(buf):
        el = _element(buf, pos)
        if el is None:
            # A header cut off by the end of the blob is normal; anything else means pos was wrong.
            return last_complete if count and len(buf) - pos < 12 else None
        el_id, header, size = el
        if el_id == 0x1F43B675:
            pos += header  # step into the Cluster: its children follow
            last_tc = -(1 << 15)
        elif el_id in _LEVEL1_AFTER_CLUSTERS and size is not None:
            pos += header + size
        elif el_id in _CLUSTER_CHILDREN and size is not None:
            if el_id == _SIMPLE_BLOCK:
                tc = _block_timecode(buf, pos + header, size)
                if tc is None or tc < last_tc:
                    return None
                last_tc = tc
            pos += header + size
        else:
            return None
        count += 1
        if pos <= len(buf):
            last_complete = pos
    return last_complete if count else None


def _block_timecode(buf: bytes, body: int, size: int) -> int | None:
    """The relative timecode of a plausible SimpleBlock (one-byte track number 1-8, flags with the reserved
    bits clear), else None. A block cut off by the end of the blob only needs its first byte to check."""
    if size < 5 or body >= len(buf) or not 0x81 <= buf[body] <= 0x88:
        return None
    if body + 4 > len(buf):
        return 1 << 15  # cut off: nothing more to check, and nothing may follow it anyway
    if buf[body + 3] & 0x70:
        return None
    return int.from_bytes(buf[body + 1 : body + 3], "big", signed=True)


def _whole_elements(data: bytes) -> tuple[bytes, int, int] | None:
    """(restored prefix, start, end): `prefix + data[start:end]` is a run of whole cluster-level elements.
    The prefix is the SimpleBlock id when the blob begins right after it (what Chromium's blobs do)."""
    end = _chain_end(data, 0)
    if end is not None:
        return b"", 0, end
    lost_id = bytes([_SIMPLE_BLOCK])
    end = _chain_end(lost_id + data, 0)
    if end is not None:
        return lost_id, 0, end - 1
    for start in range(1, min(len(data), _SCAN_LIMIT)):
        end = _chain_end(data, start)
        if end is not None and end > start:
            return b"", start, end
    return None


def continuation_body(data: bytes) -> bytes | None:
    """Bytes to append to the stream header so FFmpeg decodes this blob; None if no element boundary is
    found. A leading fragment of an element split with the previous blob is dropped (or, when only the
    SimpleBlock id byte was lost, restored); a trailing partial element is cut."""
    found = _whole_elements(data)
    if found is None:
        return None
    prefix, start, end = found
    body = prefix + data[start:end]
    return body if body.startswith(CLUSTER_ID) else SYNTHETIC_CLUSTER + body


def incomplete_tail(data: bytes) -> bytes:
    """The trailing bytes of a blob that do not form a whole element, which StreamDecoder carries over so
    the next blob joins them byte-exactly. Empty when the blob ends on an element boundary."""
    if data.startswith(EBML_ID):
        found = _first_cluster(data)
        if found is None or found[1] >= len(data):
            return b""
        end = _chain_end(data, found[1])
    else:
        whole = _whole_elements(data)
        end = whole[2] if whole else None
    return data[end:] if end is not None else b""
