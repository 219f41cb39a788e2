"""A small HTTP/1.1 load generator, meant to run in its own process (pure Python, no dependencies).

    python -m bench._loadgen '{"port": 8080, "mode": "closed", "concurrency": 32, ...}'

It speaks just enough HTTP/1.1 over keep-alive connections (one request in flight per connection,
no pipelining) to be several times cheaper per request than an aiohttp or httpx client, so that a
Python client can keep a Python server busy.

Requests go to jobs `first_job ...` in blocks of 500 (see `target`): within a block, a job's
consecutive statuses are 500 requests apart, so each job sees its statuses in order, and gets all
of them within a short time, as a running training does (so per-job caches behave as in life).

mode "closed": `concurrency` connections each send their next request as soon as the previous
answer arrives, for `duration` seconds (after `warmup` seconds not counted): the throughput.

With `"repeat": true` the requests start over once every (job, status) was sent, until the time
is up: for jobs that have already finished, every request is then an authentic late webhook.

mode "open": requests are due at a fixed `rate` per second whatever the server does; the latency
of each is counted from the moment it was due (so a slow server cannot hide queueing delay,
"coordinated omission"); up to `concurrency` connections carry them.

With `"ports": [a, b, ...]` instead of `"port"`, connection i goes to ports[i mod n] (and comes
back to the same port after a reconnection): several servers behind one round-robin balancer.

Prints one JSON line: counts per HTTP status, latency percentiles, throughput, own CPU time.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import sys
import time
from typing import Any

_DESCRIPTIONS = {
    "deploying_gpu": "Deploying GPU",
    "training_started": "Step:1 Training Started, 5 Steps to go : ETA : 30 minutes",
    "training_success": "Step:2 Training Done, 4 Steps to go : ETA : 15 minutes",
    "trained_model_compressing": "Compressing the trained model",
    "trained_model_uploading": "Step:3 Model Uploading, 3 Steps to go : ETA : 10 minutes",
    "trained_model_uploaded": "Step:4 Model Uploaded, 2 Steps to go : ETA : 5 minutes",
    "deploying_model": "Deploying the trained model",
    "model_ready": "Model loaded successfully",
}


BLOCK = 500  # jobs per block: each block's jobs get all their statuses before the next block starts


def target(index: int, first_job: int, statuses: list[str], block: int = BLOCK) -> tuple[int, str]:
    """Job and status of request `index`: jobs go in blocks of `block`; within a block request i
    is for job i mod block with status i div block, so a job's statuses are `block` requests apart
    (far more than the requests in flight: each arrives after the previous one was answered) and
    each job receives all its statuses close together, as a running training does."""
    per_block = block * len(statuses)
    number, within = divmod(index, per_block)
    return first_job + number * block + within % block, statuses[within // block]


def secret_for(job_id: int) -> str:
    """The webhook secret the benchmark gave job `job_id` (the server stores only its hash)."""
    return f"bench-secret-{job_id:012d}-0123456789abcdef"


def training_id_for(job_id: int) -> str:
    return f"bench-training-{job_id:09d}"


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; `request()` sends raw bytes and returns the status."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        status = int(head[9:12])
        length = 0
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        del self.buffer[:total]
        waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    async def request(self, data: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


class Generator:
    def __init__(self, options: dict[str, Any]) -> None:
        self.host: str = options.get("host", "127.0.0.1")
        self.ports: list[int] = list(options.get("ports") or [options["port"]])
        self.connections = 0
        self.first_job: int = options["first_job"]
        self.jobs: int = options["jobs"]
        self.statuses: list[str] = options["statuses"]
        self.block = min(BLOCK, self.jobs)
        self.total = (self.jobs // self.block) * self.block * len(self.statuses)
        self.repeat: bool = bool(options.get("repeat", False))
        self.next_index = 0
        self.statuses_seen: dict[str, int] = {}
        self.errors = 0
        self.latencies: list[float] = []

    def build(self, index: int) -> bytes:
        job_id, status = target(index % self.total, self.first_job, self.statuses, self.block)
        body = json.dumps(
            {
                "status": "success",
                "training_status": status,
                "logs": _DESCRIPTIONS.get(status, status),
                "model_id": training_id_for(job_id),
            }
        ).encode()
        head = (
            f"POST /webhooks/training/{job_id}/{secret_for(job_id)} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.ports[0]}\r\n"
            "User-Agent: lorabot-bench\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    def take(self) -> int | None:
        if self.next_index >= self.total and not self.repeat:
            return None
        index = self.next_index
        self.next_index += 1
        return index

    async def connect(self, port: int | None = None) -> Connection:
        """A new connection to `port`, or to the next port in turn."""
        if port is None:
            port = self.ports[self.connections % len(self.ports)]
            self.connections += 1
        loop = asyncio.get_running_loop()
        _transport, protocol = await loop.create_connection(lambda: Connection(port), self.host, port)
        return protocol

    async def send(self, conn: Connection, index: int) -> tuple[Connection, int | None]:
        if conn.closed:
            conn = await self.connect(conn.port)
        try:
            status = await asyncio.wait_for(conn.request(self.build(index)), 30)
        except (ConnectionError, OSError, TimeoutError):
            self.errors += 1
            if conn.transport is not None:
                conn.transport.abort()
            return await self.connect(conn.port), None
        return conn, status

    def count(self, status: int | None) -> None:
        key = str(status) if status is not None else "error"
        self.statuses_seen[key] = self.statuses_seen.get(key, 0) + 1

    # -- closed loop --------------------------------------------------------------------------

    async def closed(self, concurrency: int, duration: float, warmup: float) -> dict[str, Any]:
        conns = [await self.connect() for _ in range(concurrency)]
        start = time.perf_counter()
        measure_from = start + warmup
        deadline = measure_from + duration
        measured = 0
        first: float | None = None
        last = start

        async def worker(conn: Connection) -> None:
            nonlocal measured, first, last
            while True:
                now = time.perf_counter()
                if now >= deadline:
                    return
                index = self.take()
                if index is None:
                    return
                conn, status = await self.send(conn, index)
                done = time.perf_counter()
                self.count(status)
                if now >= measure_from:
                    if first is None:
                        first = now
                    measured += 1
                    last = done
                    self.latencies.append(done - now)

        await asyncio.gather(*(worker(c) for c in conns))
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
        elapsed = (last - first) if first is not None else 0.0
        return {"measured": measured, "elapsed": elapsed, "throughput": measured / elapsed if elapsed else 0.0}

    # -- open loop ----------------------------------------------------------------------------

    async def open(self, concurrency: int, rate: float, duration: float, warmup: float) -> dict[str, Any]:
        free: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(concurrency):
            free.put_nowait(await self.connect())
        count = min(self.total, int(rate * (duration + warmup)))
        skip = int(rate * warmup)
        start = time.perf_counter() + 0.05
        tasks = []
        late_starts = 0

        async def one(index: int, due: float) -> None:
            nonlocal late_starts
            conn = await free.get()
            if time.perf_counter() - due > 0.001:
                late_starts += 1
            conn, status = await self.send(conn, index)
            done = time.perf_counter()
            free.put_nowait(conn)
            self.count(status)
            if index >= skip:
                self.latencies.append(done - due)

        for i in range(count):
            index = self.take()
            if index is None:
                break
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(index, due)))
        await asyncio.gather(*tasks)
        while not free.empty():
            conn = free.get_nowait()
            if conn.transport is not None:
                conn.transport.close()
        sent_over = time.perf_counter() - start
        return {
            "measured": len(self.latencies),
            "elapsed": sent_over,
            "throughput": count / sent_over if sent_over else 0.0,
            "late_starts": late_starts,
        }


def _summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        rank = (len(ordered) - 1) * p / 100
        low = int(rank)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)

    return {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": ordered[-1], "mean": sum(ordered) / len(ordered)}


async def main(options: dict[str, Any]) -> dict[str, Any]:
    gen = Generator(options)
    if options["mode"] == "closed":
        result = await gen.closed(options["concurrency"], options["duration"], options.get("warmup", 0.5))
    else:
        result = await gen.open(
            options["concurrency"], options["rate"], options["duration"], options.get("warmup", 1.0)
        )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.update(
        sent=gen.next_index,
        statuses=gen.statuses_seen,
        errors=gen.errors,
        latency=_summary(gen.latencies),
        client_cpu=usage.ru_utime + usage.ru_stime,
    )
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
