"""The embedded store on a full disk: writes are refused with 503 and Retry-After, nothing is half-stored, reads go
on, and once space is freed the same bridge stores and transcribes again without a restart.

DATA_DIR is a small tmpfs mounted by the test (it runs as root, as CI does) and filled with a file until SQLite's
own writes fail with "database or disk is full"; deleting the file ends the fault.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bridge.app import create_app
from shared.settings import Settings
from tests.faults.support import (
    Key,
    Tally,
    check_unavailable,
    end_and_read,
    keys,
    new_session,
    post_until_stored,
    speech_stream,
    transcript,
    wait_for_transcript,
)
from tests.helpers import bearer, chunk_body
from tests.isolation.world import in_process, seed_api_key

DISK_SIZE = "4m"
SPEAKERS = ("candidate", "interviewer")
REFUSALS_PER_CHUNK = 3  # the client's retries of a refused chunk while the disk stays full


@contextlib.contextmanager
def small_tmpfs(size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted on a fresh directory, unmounted afterwards; fails the test if it cannot mount."""
    mount = shutil.which("mount")
    point = Path(tempfile.mkdtemp(prefix="ib-full-disk-"))
    result = subprocess.run(
        [mount or "mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        point.rmdir()
        pytest.fail(
            f"the full-disk test needs a small tmpfs and could not mount one (uid {os.geteuid()}, "
            f"`mount -t tmpfs` exited {result.returncode}: {result.stderr.strip()}); run the tests as root, as CI does",
            pytrace=False,
        )
    try:
        yield point
    finally:
        if subprocess.run(["umount", str(point)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)
        point.rmdir()


def fill(directory: Path) -> Path:
    """A file that takes every free byte of the file system `directory` is on."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        for block in (65_536, 4_096, 1):  # big blocks, then what is left of the last one
            while True:
                try:
                    out.write(b"\0" * block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    assert shutil.disk_usage(directory).free < 4096
    return filler


async def next_sequences(client: httpx.AsyncClient, token: str, session_id: str) -> dict[str, int]:
    response = await client.get(f"/sessions/{session_id}", headers=bearer(token))
    assert response.status_code == 200, response.text
    found: dict[str, int] = response.json()["next_sequence"]
    return found


async def fault_free_transcript(settings: Settings) -> list[Key]:
    """Both speakers' chunks on a disk with room: the transcript to expect."""
    tally = Tally("reference")
    async with in_process(create_app(settings)) as client:
        api_key = await seed_api_key(client.app.state.services)  # type: ignore[attr-defined]
        session_id, token = await new_session(client, api_key, tally, SPEAKERS)
        for sequence, data in enumerate(speech_stream()):
            for speaker in SPEAKERS:
                await post_until_stored(client, token, session_id, speaker, sequence, data, tally)
        expected = keys((await end_and_read(client, token, session_id, tally))["entries"])
    assert len(expected) == 4, expected
    return expected


async def test_full_disk_refuses_with_503_and_recovers_when_space_is_freed(
    make_settings: Callable[..., Settings], tmp_path: Path, report: Callable[[Tally], None]
) -> None:
    """On a full disk a chunk is refused with 503 and Retry-After and not stored (its retry after space is freed is
    `accepted`, not `duplicate`), no request gets a 500, the transcript stays readable, and the same bridge then
    stores every chunk and gives the transcript of a run with room."""
    expected = await fault_free_transcript(make_settings(data_dir=tmp_path / "reference"))
    tally = Tally("sqlite: disk full")
    chunks = speech_stream()
    with small_tmpfs(DISK_SIZE) as disk:
        async with in_process(create_app(make_settings(data_dir=disk / "data"))) as client:
            api_key = await seed_api_key(client.app.state.services)  # type: ignore[attr-defined]
            session_id, token = await new_session(client, api_key, tally, SPEAKERS)
            for speaker in SPEAKERS:
                await post_until_stored(client, token, session_id, speaker, 0, chunks[0], tally)

            filler = fill(disk)
            tally.injected += 1
            refused: tuple[str, int] | None = None
            for sequence in range(1, len(chunks)):  # a chunk may still fit in the WAL: post on until one is refused
                for speaker in SPEAKERS:
                    body = chunk_body(session_id, speaker, sequence, chunks[sequence])
                    response = await client.post("/functions/v1/process-audio", json=body, headers=bearer(token))
                    tally.saw(response)
                    if response.status_code == 200:
                        tally.acknowledged.add((session_id, speaker, sequence))
                        continue
                    check_unavailable(response)
                    assert "disk is full" in response.json()["detail"], response.text
                    refused = (speaker, sequence)
                    break
                if refused:
                    break
            assert refused is not None, "the full disk never refused a chunk"
            speaker, sequence = refused
            stored_before = await next_sequences(client, token, session_id)
            for _ in range(REFUSALS_PER_CHUNK):  # the client retries while the disk stays full
                body = chunk_body(session_id, speaker, sequence, chunks[sequence])
                response = await client.post("/functions/v1/process-audio", json=body, headers=bearer(token))
                tally.saw(response)
                check_unavailable(response)
            other = await client.post("/sessions", json={"speakers": ["candidate"]}, headers=bearer(api_key))
            tally.saw(other)
            check_unavailable(other)
            assert await next_sequences(client, token, session_id) == stored_before  # nothing half-stored
            assert (await transcript(client, token, session_id, tally))["session"]["id"] == session_id  # reads go on

            filler.unlink()  # space again: the same bridge, no restart
            answer = await post_until_stored(client, token, session_id, speaker, sequence, chunks[sequence], tally)
            assert answer["status"] == "accepted", answer  # it was not stored while the disk was full
            for later in range(sequence, len(chunks)):
                for name in SPEAKERS:
                    if (session_id, name, later) not in tally.acknowledged:
                        await post_until_stored(client, token, session_id, name, later, chunks[later], tally)
            live = await wait_for_transcript(client, token, session_id, tally, expected, within_s=10)
            assert live == expected, "the live path did not catch up once space was freed"
            final = await end_and_read(client, token, session_id, tally)

    tally.settle(session_id, expected, keys(final["entries"]))
    report(tally)
    assert keys(final["entries"]) == expected
    assert final["failed_sequences"] == {}
    assert tally.lost == 0
    assert not [answer for answer in tally.statuses if answer.startswith("500")], tally.statuses
