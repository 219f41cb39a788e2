"""/metrics of the real application through a whole training, behind its bearer token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.jobs.states import JobState
from tests.e2e.harness import ALICE, API_KEY, World, open_world

TOKEN = "e2e-metrics-token-0123456789abcdef"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    world, close = await open_world(tmp_path, metrics_token=TOKEN)
    try:
        yield world
    finally:
        await close()


def parse(text: str) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    """Family name -> labels -> value, for every sample (Prometheus's own text parser)."""
    found: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return found


def total(metrics: dict, name: str, **labels: str) -> float:
    """The sum of `name` over the samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for key, v in metrics.get(name, {}).items() if wanted <= key)


async def scrape(world: World, token: str | None = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(f"http://127.0.0.1:{world.app.webhooks.port}/metrics", headers=headers)


async def test_counters_move_with_a_training_and_the_token_is_required(world: World) -> None:
    assert (await scrape(world, token=None)).status_code == 401
    assert (await scrape(world, token="not-the-token-0123456789")).status_code == 401
    before = parse((await scrape(world)).text)
    assert total(before, "lorabot_jobs", state="model_ready") == 0
    assert total(before, "lorabot_provider_requests_total", endpoint="lora_fine_tune") == 0

    job = await world.start_training()
    job = await world.wait_state(job.id, JobState.MODEL_READY, timeout=30)
    await world.wait_for(lambda: world.dm_texts(ALICE) or None, what="the DM")

    deadline = asyncio.get_running_loop().time() + 10
    while True:  # the card's last edit and the DM leave the outbox
        response = await scrape(world)
        metrics = parse(response.text)
        if total(metrics, "lorabot_outbox_pending") == 0 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")

    assert total(metrics, "lorabot_jobs", state="model_ready") == 1
    assert total(metrics, "lorabot_jobs") == 1
    assert total(metrics, "lorabot_outbox_pending") == 0
    assert total(metrics, "lorabot_outbox_oldest_age_seconds") == 0
    changes = "lorabot_job_state_changes_total"
    assert total(metrics, changes, source="user", state="submitting") == 1  # Start pressed
    # The provider's answer moves the job on, or its first webhook when that lands first (the simulator
    # sends it right after the answer; on PostgreSQL the two writes truly race): once either way.
    assert total(metrics, changes, state="deploying_gpu") == 1
    assert total(metrics, changes, source="webhook") >= 2  # the simulator's webhooks moved it on
    assert total(metrics, changes, state="model_ready") == 1
    assert total(metrics, "lorabot_webhooks_total", outcome="accepted") >= 2
    assert total(metrics, "lorabot_webhooks_total", outcome="refused") == 0
    assert total(metrics, "lorabot_provider_requests_total", endpoint="lora_fine_tune", outcome="ok") == 1
    assert total(metrics, "lorabot_provider_request_duration_seconds_count", endpoint="lora_fine_tune") == 1
    assert total(metrics, "lorabot_reconciler_passes_total") >= 1  # the start-up pass
    assert total(metrics, "lorabot_discord_delivery_failures_total") == 0
    assert "process_resident_memory_bytes" in metrics or "process_cpu_seconds_total" in metrics

    # Nothing secret, nor any id, becomes a label.
    for secret in (TOKEN, API_KEY, world.fake.token, job.training_id):
        assert secret not in response.text


async def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    world, close = await open_world(tmp_path, metrics_enabled=False)
    try:
        assert (await scrape(world)).status_code == 404
    finally:
        await close()
