"""Start pressed, through the `CardPoster` port: the card goes to the channel, or to the owner's
DMs when the channel refuses it (or when asked), and nothing reaches the provider when it can go
nowhere."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from bot.errors import UserError
from bot.jobs.delivery_errors import CannotPost, DeliveryError, DiscordUnavailable, DmsClosed, MessageGone
from bot.jobs.limits import Requester
from bot.jobs.model import Job, Posted, PreviewPhoto
from bot.jobs.service import JobService
from bot.jobs.states import JobState
from bot.jobs.submission import TrainingStarter
from bot.store.sqlite import SqliteStore

from .test_service import URLS, Provider, ok, preview

OWNER, CHANNEL, DM_CHANNEL = 1, 20, 777
ACCEPTED = {"status": "success", "messege": "deploying_gpu", "training_id": "T1"}
IMAGES = [bytes([i]) * 10 for i in range(len(URLS))]


@dataclass
class ScriptedCards:
    """The card poster: records each call, raises the scripted error for "post" or "dm" if any."""

    errors: dict[str, DeliveryError] = field(default_factory=dict)
    calls: list[tuple[str, int, int]] = field(default_factory=list)  # (where, channel or user, photos)

    async def post_card(self, job: Job, photos: Sequence[tuple[str, bytes]], *, channel_id: int) -> Posted:
        return self._posted("post", channel_id, photos)

    async def dm_card(self, job: Job, photos: Sequence[tuple[str, bytes]]) -> Posted:
        return self._posted("dm", job.owner_id, photos)

    def _posted(self, where: str, target: int, photos: Sequence[tuple[str, bytes]]) -> Posted:
        self.calls.append((where, target, len(photos)))
        if where in self.errors:
            raise self.errors[where]
        channel = target if where == "post" else DM_CHANNEL
        return Posted(channel, 4242, tuple(URLS[: len(photos)]))


@pytest.fixture
def start(store: SqliteStore, settings, make_provider):
    async def run(cards: ScriptedCards, *, in_dms: bool = False) -> tuple[Job, Provider]:
        provider = Provider(lora_fine_tune=ok(ACCEPTED))
        service = JobService(store, make_provider(provider), settings)
        job = await preview(service, OWNER)
        starter = TrainingStarter(store, service, cards)
        who = Requester(user_id=OWNER, guild_id=10)
        await store.drop_preview(job.id)
        photos = [PreviewPhoto(f"photo{i + 1}.jpg", data) for i, data in enumerate(IMAGES)]
        await store.save_preview(job.id, photos, card_in_dms=in_dms, expires_at=store.now() + timedelta(minutes=10))
        await starter.start(job.id, who)
        return await store.require_job(job.id), provider

    return run


async def test_the_card_goes_to_the_channel_and_its_links_to_the_provider(start) -> None:
    cards = ScriptedCards()
    job, provider = await start(cards)
    assert cards.calls == [("post", CHANNEL, len(IMAGES))]
    assert (job.card_channel_id, job.card_message_id) == (CHANNEL, 4242)
    assert job.state is JobState.DEPLOYING_GPU and provider.body()["images"] == URLS


@pytest.mark.parametrize("refusal", [CannotPost("403 50013"), MessageGone("404 10003")])
async def test_a_channel_that_refuses_the_card_sends_it_to_the_owners_dms(start, refusal: DeliveryError) -> None:
    cards = ScriptedCards(errors={"post": refusal})
    job, _ = await start(cards)
    assert [call[0] for call in cards.calls] == ["post", "dm"]
    assert job.card_channel_id == DM_CHANNEL and job.state is JobState.DEPLOYING_GPU


async def test_a_card_meant_for_dms_is_never_tried_in_the_channel(start) -> None:
    cards = ScriptedCards()
    job, _ = await start(cards, in_dms=True)
    assert cards.calls == [("dm", OWNER, len(IMAGES))] and job.card_channel_id == DM_CHANNEL


async def test_nowhere_to_post_the_card_fails_the_job_before_the_provider(store: SqliteStore, start) -> None:
    cards = ScriptedCards(errors={"post": CannotPost("403 50013"), "dm": DmsClosed("403 50007")})
    with pytest.raises(UserError, match="your DMs are closed"):
        await start(cards)
    (job,) = await store.jobs_for_owner(OWNER, limit=5)
    assert job.state is JobState.FAILED and job.training_id is None


async def test_a_card_discord_did_not_take_fails_the_job_and_says_nothing_was_sent(store: SqliteStore, start) -> None:
    cards = ScriptedCards(errors={"dm": DiscordUnavailable("503")})
    with pytest.raises(UserError, match="nothing was sent"):
        await start(cards, in_dms=True)
    (job,) = await store.jobs_for_owner(OWNER, limit=5)
    assert job.state is JobState.FAILED
