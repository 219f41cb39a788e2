"""LOG_FORMAT=json in the real `lorabot run` process: every line it writes is one JSON object, and
none carries a secret, through a training, forged webhooks and refused scrapes."""

from __future__ import annotations

import json
import signal
from datetime import datetime
from pathlib import Path

import httpx

from bot.jobs.states import JobState
from tests.e2e.databases import wait_stored_job
from tests.e2e.harness import API_KEY, BotProcess
from tests.e2e.test_process import fakes, started, train_and_start

__all__ = ["fakes"]  # the fixture, used by name

METRICS_TOKEN = "json-logs-metrics-token-0123456789"


async def test_json_logs_parse_line_by_line_and_hold_no_secret(tmp_path: Path, fakes: tuple) -> None:
    fake, sim = fakes
    bot = BotProcess(tmp_path, fake, sim.url, LOG_FORMAT="json", METRICS_TOKEN=METRICS_TOKEN)
    await started(bot, fake)
    try:
        job_id = await train_and_start(fake)
        row = await wait_stored_job(tmp_path, job_id, lambda r: r.state is JobState.MODEL_READY)
        webhook_secret = sim.simulator.trainings[row.training_id].webhook_url.rsplit("/", 1)[1]
        base = f"http://127.0.0.1:{bot.port}"
        async with httpx.AsyncClient(timeout=5) as client:
            forged = await client.post(
                f"{base}/webhooks/training/{job_id}/{webhook_secret[:-2]}xx", json={"model_id": "x"}
            )
            assert forged.status_code == 404
            refused = await client.get(f"{base}/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
            assert refused.status_code == 401
            scraped = await client.get(f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            assert scraped.status_code == 200 and "lorabot_jobs" in scraped.text
    finally:
        code = await bot.stop(signal.SIGTERM)
    assert code == 0, bot.log

    lines = bot.log.splitlines()
    assert len(lines) > 20
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    for entry in entries:
        assert isinstance(entry, dict) and {"time", "level", "logger", "message"} <= set(entry), entry
        assert datetime.fromisoformat(entry["time"]).utcoffset() is not None
    messages = [entry["message"] for entry in entries]
    assert any("webhook rejected" in m for m in messages)  # the forged webhook was logged...
    assert any("metrics scrape refused" in m for m in messages)  # ...and the refused scrape
    assert "stopped cleanly" in messages
    for secret in (fake.token, API_KEY, webhook_secret, METRICS_TOKEN):
        assert secret not in bot.log  # ...without any secret
