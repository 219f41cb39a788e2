"""A webhook server in its own process: the bot's real `WebhookServer`, or a bare aiohttp handler.

    python -m bench._webhook_server '{"mode": "real", "db": "/tmp/x/bot.db"}'
    python -m bench._webhook_server '{"mode": "real", "database_url": "postgresql://..."}'

Mode "floor" serves nothing: it calls the real handler with in-memory requests (no HTTP) and
prints its throughput (the ceiling the real server could reach if aiohttp's own work cost nothing).

Prints one JSON line `{"port": ...}` once listening, then serves until stdin closes or SIGTERM,
stops cleanly (in-flight webhooks finish their write) and exits 0. The real server is the bot's
own `bot.app.Application` (database, store, job service, webhook server, gc.freeze after start),
configured as `lorabot run` configures it (INFO logging through the redacting filter, to stderr),
with Discord and the provider unreachable: as during a Discord outage, the bot keeps retrying
its login in the background and the outbox only accumulates. Delivering it is not ingest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any

from aiohttp import web


async def _bare(host: str) -> tuple[web.AppRunner, int]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/webhooks/training/{job_id}/{secret}", ok)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


class _InMemoryRequest:
    """What the webhook handler reads from an aiohttp request, without a socket or HTTP parsing.

    Only the attributes the handler uses today; if it starts using another one, the floor fails
    loudly (AttributeError) rather than measuring something else.
    """

    remote = "127.0.0.1"
    content_type = "application/json"

    def __init__(self, job_id: int, secret: str, raw: bytes) -> None:
        self.match_info = {"job_id": str(job_id), "secret": secret}
        self.content_length = len(raw)
        self._raw = raw

    async def read(self) -> bytes:
        return self._raw


async def _floor(app: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The webhook handler without HTTP: `WebhookServer.training_webhook` itself, called with
    in-memory requests (no socket, no HTTP parsing, no response writing), on the same bodies.

    `concurrency` tasks for `duration` seconds; request i goes to the same (job, status) as in the
    load generator. What the real server could reach if aiohttp's own work cost nothing.
    With `repeat`, requests start over after the last (job, status), until the time is up.
    """
    import time

    from bench._loadgen import _DESCRIPTIONS, BLOCK, secret_for, target, training_id_for

    handler = app.webhooks.training_webhook
    first, jobs, statuses = options["first_job"], options["jobs"], options["statuses"]
    block = min(BLOCK, jobs)
    total = (jobs // block) * block * len(statuses)
    repeat = bool(options.get("repeat", False))
    counter = 0
    answers: dict[str, int] = {}
    deadline = time.perf_counter() + options["duration"]

    async def worker() -> None:
        nonlocal counter
        while (repeat or counter < total) and time.perf_counter() < deadline:
            index, counter = counter, counter + 1
            job_id, status = target(index % total, first, statuses, block)
            body = {"status": "success", "training_status": status}
            body |= {"logs": _DESCRIPTIONS.get(status, status), "model_id": training_id_for(job_id)}
            response = await handler(_InMemoryRequest(job_id, secret_for(job_id), json.dumps(body).encode()))
            answers[str(response.status)] = answers.get(str(response.status), 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(options["concurrency"])))
    elapsed = time.perf_counter() - started
    done = sum(answers.values())
    return {"done": done, "answers": answers, "elapsed": elapsed, "throughput": done / elapsed if elapsed else 0.0}


async def main(options: dict[str, Any]) -> None:
    host = options.get("host", "127.0.0.1")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if options["mode"] != "floor":  # a server stops when the parent closes our stdin
        stdin = sys.stdin.fileno()
        loop.add_reader(stdin, lambda: None if os.read(stdin, 4096) else stop.set())

    if options["mode"] == "bare":
        runner, port = await _bare(host)
        print(json.dumps({"port": port}), flush=True)
        await stop.wait()
        await runner.cleanup()
        return

    import socket

    from bot.app import Application
    from bot.config import load_settings
    from bot.logging_setup import setup_logging

    with socket.socket() as probe:  # a port nothing listens on: Discord and the provider are down
        probe.bind((host, 0))
        nowhere = f"{host}:{probe.getsockname()[1]}"
    secrets = ["bench-discord-token-0123456789", "bench-api-key-0123456789"]
    settings = load_settings(
        env_file=None,
        discord_token=secrets[0],
        discord_api_base=f"http://{nowhere}/api/v10",
        discord_gateway_url=f"ws://{nowhere}/",
        sdapi_key=secrets[1],
        sdapi_base_url=f"http://{nowhere}",
        public_url=f"http://{host}:1",
        webhook_host=host,
        webhook_port=0,
        database_url=options.get("database_url") or f"sqlite:///{options['db']}",
        # The default per-address rate limit although one address sends everything, as the
        # provider does: authentic webhooks never spend it (a 429 would show as a non-200 answer).
        log_level=options.get("log_level", "INFO"),
    )
    setup_logging(settings.log_level, secrets)  # as `lorabot run` does
    app = Application(settings)
    await app.start()
    try:
        if options["mode"] == "floor":
            print(json.dumps(await _floor(app, options)), flush=True)
            return
        print(json.dumps({"port": app.webhooks.port}), flush=True)
        profiler = None
        if options.get("profile"):
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        await stop.wait()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(options["profile"])
    finally:
        await app.stop()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(json.loads(sys.argv[1])))
