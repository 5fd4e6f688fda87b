"""Fan-out benchmark of the local realtime hub: publish -> arrival at 1, 100 and 1,000 subscribers of one topic.

    .venv/bin/python bench/fanout.py [--counts 1,100,1000] [--messages 200] [--interval-ms 50[,500]]
                                     [--topics 1] [--no-deflate] [--client python|node] [--loop uvloop|asyncio]

`--interval-ms 50` (the default) is a saturation test: 20 messages/s to 3,000 subscribers is 60,000 frames/s,
more than the 2 cores of the reference machine do with the subscribers on them too. A transcript topic carries
a few messages per second at most, so give a realistic rate as a second phase (`--interval-ms 50,500`): each
rate is a phase over the same connections, each printed on its own row. `--topics 1000` spreads the subscribers
round-robin over 1,000 topics and publishes each message on every topic (one encoding per topic, the same number
of frames as one topic). `KiB/sock` is the hub process's RSS growth from before the subscribers connect to when
they have all joined, idle, divided by their number. The hub runs on uvloop by default, as `uvicorn.run` (the
bridge's `serve`) picks it when installed.

The hub runs on uvicorn in this process and publishes with `hub.publish`, as the bridge does after a store write.
The subscribers live in ANOTHER process (`--subscriber` mode): N plain `websockets` clients speaking Phoenix vsn
1.0.0 directly, lighter than N realtime-py clients. Each arrival is timestamped on receipt (CLOCK_MONOTONIC is
system-wide, so both processes read the same clock) and parsed only at the end, so the figure measures the hub,
not the subscribers' JSON parsing. The subscriber process's CPU time is printed beside the latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TOPIC = "session:bench"
WS_IMPL = os.environ.get("FANOUT_WS", "websockets-sansio")  # uvicorn WebSocket implementation to serve with
ENTRY_TEXT = "So in my last role I led the migration of our billing service to an event-driven design, which"


def topic_of(index: int, topics: int) -> str:
    """The topic subscriber `index` joins: one topic, or round-robin over `topics`."""
    return TOPIC if topics == 1 else f"{TOPIC}-{index % topics}"


def rss_kib() -> int:
    """This process's resident set size now (not the peak `ru_maxrss`)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def poll(condition: Callable[[], bool], within_s: float = 120.0) -> None:
    for _ in range(int(within_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("the benchmark's set-up did not complete")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# --------------------------------------------------------------------------------------------- subscriber side
async def subscriber_main(url: str, count: int, messages: int, deflate: bool, topics: int) -> None:
    from websockets.asyncio.client import ClientConnection, connect

    raise_fd_limit()
    arrivals: list[tuple[int, str]] = []
    done = asyncio.Event()
    expected = count * messages

    async def open_one(i: int) -> ClientConnection:
        ws = await connect(url, compression="deflate" if deflate else None, max_queue=None, open_timeout=60)
        join = {
            "topic": f"realtime:{topic_of(i, topics)}",
            "event": "phx_join",
            "payload": {"config": {"broadcast": {"ack": False, "self": False}, "private": False}},
            "ref": "1",
            "join_ref": "1",
        }
        await ws.send(json.dumps(join))
        reply = json.loads(await ws.recv())
        assert reply["payload"]["status"] == "ok", reply
        return ws

    async def read(ws: ClientConnection) -> None:
        clock = time.monotonic_ns
        async for frame in ws:
            text = frame if isinstance(frame, str) else frame.decode()
            if '"event":"broadcast"' not in text:  # heartbeat replies come too once a run passes 20 s
                continue
            arrivals.append((clock(), text))
            if len(arrivals) >= expected:
                done.set()

    async def heartbeat(sockets: list[ClientConnection]) -> None:
        while True:
            await asyncio.sleep(20)
            for ws in sockets:
                await ws.send('{"topic":"phoenix","event":"heartbeat","payload":{},"ref":null}')

    sockets: list[ClientConnection] = []
    for start in range(0, count, 100):
        sockets += await asyncio.gather(*(open_one(i) for i in range(start, min(count, start + 100))))
    readers = [asyncio.create_task(read(ws)) for ws in sockets]
    beats = asyncio.create_task(heartbeat(sockets))
    # The subscribers stand in for browsers on other machines: their own full collections (3,000 connections
    # and a growing list of arrivals) are not the hub's latency. Nothing cyclic is made from here on.
    gc.collect()
    gc.freeze()
    gc.disable()
    cpu0 = cpu_seconds()
    print("READY", flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout=messages * 2 + 60)
    cpu = cpu_seconds() - cpu0
    beats.cancel()
    for task in readers:
        task.cancel()
    samples: list[tuple[int, float]] = []  # (phase, latency ms)
    for arrived, frame in arrivals:
        payload = json.loads(frame)["payload"]["payload"]
        if payload.get("seq", 0) >= payload.get("warmup", 0):
            samples.append((payload.get("phase", 0), (arrived - payload["t0"]) / 1e6))
    result = {"received": len(arrivals), "expected": expected, "samples": samples, "cpu_s": cpu}
    print("RESULT " + json.dumps(result), flush=True)
    for ws in sockets:
        await ws.close()


# A lighter subscriber process: Node with the `ws` package (from the repo's node_modules). process.hrtime reads
# CLOCK_MONOTONIC too. Frames are kept raw on arrival; t0 is cut out with a regex at the end (ns exceed 2^53).
NODE_SUBSCRIBERS = r"""
import WebSocket from 'ws'
const [url, countArg, messagesArg, deflateArg, topicsArg] = process.argv.slice(1)
const count = Number(countArg), expected = count * Number(messagesArg), topics = Number(topicsArg)
const topicOf = (i) => topics === 1 ? 'realtime:session:bench' : `realtime:session:bench-${i % topics}`
const arrivals = []
let joined = 0, finished = false, cpu0 = null
const sockets = []
const finish = () => {
  if (finished) return
  finished = true
  const cpu = process.cpuUsage(cpu0)
  const samples = []
  for (const [at, frame] of arrivals) {
    const seq = Number(/"seq":(\d+)/.exec(frame)[1]), warmup = Number(/"warmup":(\d+)/.exec(frame)[1])
    const phase = Number(/"phase":(\d+)/.exec(frame)[1])
    if (seq >= warmup) samples.push([phase, Number(at - BigInt(/"t0":(\d+)/.exec(frame)[1])) / 1e6])
  }
  process.stdout.write('RESULT ' + JSON.stringify({ received: arrivals.length, expected, samples,
    cpu_s: (cpu.user + cpu.system) / 1e6 }) + '\n', () => process.exit(0))
}
const open = (i) => new Promise((resolve, reject) => {
  const ws = new WebSocket(url, { perMessageDeflate: deflateArg === '1' })
  let ready = false
  ws.on('open', () => ws.send(JSON.stringify({ topic: topicOf(i), event: 'phx_join',
    payload: { config: { broadcast: { ack: false, self: false }, private: false } }, ref: '1', join_ref: '1' })))
  ws.on('message', (data) => {
    if (!ready) { ready = true; joined++; resolve(ws); return }
    const text = data.toString()
    if (!text.includes('"event":"broadcast"')) return  // heartbeat replies
    arrivals.push([process.hrtime.bigint(), text])
    if (arrivals.length >= expected) finish()
  })
  ws.on('error', reject)
})
for (let start = 0; start < count; start += 100) {
  const batch = []
  for (let i = start; i < Math.min(count, start + 100); i++) batch.push(open(i))
  sockets.push(...await Promise.all(batch))
}
setInterval(() => { for (const ws of sockets) ws.send('{"topic":"phoenix","event":"heartbeat","payload":{},"ref":null}') }, 20000)
setTimeout(finish, (Number(messagesArg) * 2 + 60) * 1000)
cpu0 = process.cpuUsage()
process.stdout.write('READY\n')
"""


# ------------------------------------------------------------------------------------------------- hub side
class AllowAll:
    async def check_socket(self, apikey: str | None) -> None:
        return None

    async def check_join(self, token: str | None, topic: str) -> None:
        return None

    async def check_send(self, token: str | None, topic: str, event: str) -> None:
        return None


def entry(seq: int, phase: int, warmup: int) -> dict[str, Any]:
    return {
        "id": f"entry-{seq}",
        "session_id": "bench",
        "speaker": "candidate",
        "first_sequence": seq,
        "last_sequence": seq,
        "text": ENTRY_TEXT,
        "start_ms": seq * 2000,
        "end_ms": seq * 2000 + 1900,
        "seq": seq,
        "warmup": warmup,
        "phase": phase,
        "t0": time.monotonic_ns(),
    }


async def publish_phase(hub: Any, names: list[str], messages: int, interval_s: float, phase: int, warmup: int) -> float:
    """One message per interval on every topic; returns the hub process's CPU seconds for the phase."""
    cpu0 = cpu_seconds()
    started = time.monotonic()
    for seq in range(messages):
        for name in names:
            await hub.publish(name, "transcript_entry", entry(seq, phase, warmup))
        next_at = started + (seq + 1) * interval_s
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.sleep(2.0)  # the last frames leave (and are counted here) before the next phase starts
    return cpu_seconds() - cpu0


async def run_scenario(
    hub: Any,
    ws_url: str,
    count: int,
    topics: int,
    messages: int,
    intervals_s: list[float],
    deflate: bool,
    warmup: int,
    client: str,
) -> dict[str, Any]:
    total = messages * len(intervals_s)
    if client == "node":
        command = ["node", "--input-type=module", "-e", NODE_SUBSCRIBERS, ws_url, str(count), str(total)]
        command += ["1" if deflate else "0", str(topics)]
    else:
        command = [sys.executable, __file__, "--subscriber", f"--url={ws_url}", f"--count={count}"]
        command += [f"--messages={total}", f"--topics={topics}", *([] if deflate else ["--no-deflate"])]
    gc.collect()
    rss0 = rss_kib()
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        limit=1 << 26,  # the result line carries every latency sample
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 300)
    assert line.strip() == b"READY", line
    names = sorted({topic_of(i, topics) for i in range(count)})
    await poll(lambda: sum(hub.subscriber_count(name) for name in names) >= count)
    await asyncio.sleep(0.5)
    gc.collect()
    idle_kib = (rss_kib() - rss0) / count
    started = time.monotonic()
    server_cpu = [
        await publish_phase(hub, names, messages, interval_s, phase, warmup)
        for phase, interval_s in enumerate(intervals_s)
    ]
    raw = b""
    while not raw.startswith(b"RESULT "):
        raw = await asyncio.wait_for(proc.stdout.readline(), total * 2 + 120)
        if not raw:
            raise RuntimeError("the subscriber process ended without a result")
    await proc.wait()
    result: dict[str, Any] = json.loads(raw[len(b"RESULT ") :])
    result["server_cpu_s"] = server_cpu
    result["idle_kib_per_socket"] = idle_kib
    result["elapsed_s"] = time.monotonic() - started
    return result


def print_rows(count: int, topics: int, messages: int, intervals_ms: list[float], result: dict[str, Any]) -> None:
    """One row per phase; `received` is per phase, from the samples' phase tags plus the warm-up."""
    by_phase: dict[int, list[float]] = {phase: [] for phase in range(len(intervals_ms))}
    for phase, ms in result["samples"]:
        by_phase[phase].append(ms)
    for phase, interval_ms in enumerate(intervals_ms):
        lat = by_phase[phase] or [float("nan")]
        rate = f"{1000 / interval_ms:g}/s" if interval_ms else "max"
        print(
            f"{count:>11} {topics:>6} {rate:>6} {result['received']:>9}/{result['expected']:<9} "
            f"{percentile(lat, 50):>8.2f} {percentile(lat, 95):>8.2f} {percentile(lat, 99):>8.2f} {max(lat):>8.2f} "
            f"{result['server_cpu_s'][phase]:>9.2f} {result['idle_kib_per_socket']:>8.1f}",
            flush=True,
        )
    print(f"{'':>11} subscriber process CPU over all phases: {result['cpu_s']:.2f} s", flush=True)


async def hub_main(
    counts: list[int],
    topics: int,
    messages: int,
    intervals_ms: list[float],
    deflate: bool,
    warmup: int,
    client: str,
    loop_name: str,
) -> None:
    import uvicorn
    from litestar import Litestar

    from bridge.realtime import realtime_handlers
    from shared.broadcast.local import LocalHub

    raise_fd_limit()
    hub = LocalHub()
    app = Litestar(route_handlers=realtime_handlers(hub, AllowAll()), on_startup=[hub.start])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", ws_per_message_deflate=deflate, backlog=4096, ws=WS_IMPL)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    await poll(lambda: server.started)
    ws_url = f"ws://127.0.0.1:{port}/realtime/v1/websocket?vsn=1.0.0"
    print(
        f"fan-out over {topics} topic(s): {messages} entries per phase ({warmup} warm-up, not counted), "
        f"permessage-deflate {'on' if deflate else 'off'}, {WS_IMPL} on {loop_name}, "
        f"subscribers: one {client} process, {os.cpu_count()} CPUs"
    )
    print(
        f"{'subscribers':>11} {'topics':>6} {'rate':>6} {'received/expected':>19} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8} {'hub CPU s':>9} {'KiB/sock':>8}"
    )
    for count in counts:
        intervals_s = [ms / 1000 for ms in intervals_ms]
        result = await run_scenario(hub, ws_url, count, topics, messages, intervals_s, deflate, warmup, client)
        print_rows(count, topics, messages, intervals_ms, result)
        await asyncio.sleep(0.5)
    server.should_exit = True
    await serving


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="1,100,1000", help="subscriber counts, comma-separated")
    parser.add_argument("--messages", type=int, default=200, help="entries published per phase")
    parser.add_argument("--warmup", type=int, default=10, help="first entries of each phase not counted")
    parser.add_argument(
        "--interval-ms", default="50", help="time between entries; several, comma-separated, run as phases"
    )
    parser.add_argument("--topics", type=int, default=1, help="spread the subscribers over this many topics")
    parser.add_argument("--no-deflate", action="store_true", help="serve without permessage-deflate")
    parser.add_argument(
        "--client",
        choices=["python", "node"],
        default="python",
        help="subscriber process: Python `websockets` clients, or Node `ws` clients (lighter, measures the hub more)",
    )
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop", help="the hub's event loop")
    parser.add_argument("--subscriber", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        asyncio.run(subscriber_main(args.url, args.count, args.messages, not args.no_deflate, args.topics))
        return
    counts = [int(c) for c in args.counts.split(",")]
    intervals_ms = [float(ms) for ms in args.interval_ms.split(",")]
    hub = hub_main(
        counts, args.topics, args.messages, intervals_ms, not args.no_deflate, args.warmup, args.client, args.loop
    )
    if args.loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(hub)
    else:
        asyncio.run(hub)


if __name__ == "__main__":
    main()
