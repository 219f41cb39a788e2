"""The outbox worker with a scripted messenger: coalescing, fallbacks, backoff, poison items."""

from __future__ import annotations

from dataclasses import dataclass, field

import discord

from bot.delivery.notifier import Notifier
from bot.jobs.delivery_errors import CannotPost, DiscordUnavailable, DmsClosed, MessageGone
from bot.jobs.model import Job, OutboxDraft, Posted
from bot.jobs.states import Action, Event, EventSource, JobState
from bot.jobs.transitions import plan_transition
from bot.store.sqlite import SqliteStore
from tests.store_helpers import enqueue, pending_outbox_count


@dataclass
class ScriptedMessenger:
    """Records every call; raises the next scripted error for an operation, if any."""

    errors: dict[str, list[Exception]] = field(default_factory=dict)
    calls: list[tuple[str, int, str]] = field(default_factory=list)
    next_id: int = 5000

    def _maybe_fail(self, op: str) -> None:
        queue = self.errors.get(op)
        if queue:
            raise queue.pop(0)

    async def post(
        self, channel_id: int, *, content=None, embed=None, files=(), mention_user=None, nonce_key=None, **_ui
    ):
        self.calls.append(("post", channel_id, content or (embed.title if embed else "")))
        self._maybe_fail("post")
        self.next_id += 1
        return Posted(channel_id, self.next_id)

    async def edit(self, channel_id: int, message_id: int, *, embed: discord.Embed, view=None) -> None:
        self.calls.append(("edit", message_id, embed.description or ""))
        self._maybe_fail("edit")

    async def dm(self, user_id: int, *, content=None, embed=None, files=(), nonce_key=None, **_ui):
        self.calls.append(("dm", user_id, content or ""))
        self._maybe_fail("dm")
        self.next_id += 1
        return Posted(777, self.next_id)

    def ops(self, name: str) -> list[tuple[str, int, str]]:
        return [call for call in self.calls if call[0] == name]


async def running_job(store: SqliteStore, owner: int = 1) -> Job:
    job = await store.create_job(owner_id=owner, guild_id=1, channel_id=2, name="n", params={}, image_count=5)
    await store.apply_event(job.id, Event(Action.SUBMIT, EventSource.USER), plan_transition)
    await store.set_card(job.id, 2, 900 + job.id)
    accepted = Event(Action.ACCEPTED, EventSource.SYSTEM, status="deploying_gpu", training_id=f"T{job.id}")
    return (await store.apply_event(job.id, accepted, plan_transition)).after


def webhook(word: str) -> Event:
    return Event(Action.PROVIDER_STATUS, EventSource.WEBHOOK, status=word)


async def test_a_burst_of_changes_makes_one_edit_per_interval(store: SqliteStore, clock) -> None:
    messenger = ScriptedMessenger()
    notifier = Notifier(store, messenger, edit_interval=5)  # type: ignore[arg-type]
    job = await running_job(store)
    assert await notifier.deliver_due() == 1
    for word in ("training_started", "training_success", "trained_model_compressing"):
        await store.apply_event(job.id, webhook(word), plan_transition)
    assert await notifier.deliver_due() == 0  # too soon after the last edit: postponed, not sent
    clock.advance(5)
    assert await notifier.deliver_due() == 1
    edits = messenger.ops("edit")
    assert len(edits) == 2 and "Compressing" in edits[-1][2]


async def test_a_deleted_card_is_posted_again(store: SqliteStore) -> None:
    messenger = ScriptedMessenger(errors={"edit": [MessageGone("404 10008")]})
    notifier = Notifier(store, messenger, edit_interval=0)  # type: ignore[arg-type]
    job = await running_job(store)
    await notifier.deliver_due()
    assert messenger.ops("post") and (await store.require_job(job.id)).card_message_id == messenger.next_id
    assert await pending_outbox_count(store) == 0


async def test_closed_dms_fall_back_to_a_channel_mention_and_are_remembered(store: SqliteStore) -> None:
    messenger = ScriptedMessenger(errors={"dm": [DmsClosed("403 50007")]})
    notifier = Notifier(store, messenger, edit_interval=0)  # type: ignore[arg-type]
    job = await running_job(store)
    await store.apply_event(job.id, webhook("model_ready"), plan_transition)
    await notifier.deliver_due()
    mentions = [call for call in messenger.ops("post") if "<@1>" in call[2]]
    assert len(mentions) == 1 and mentions[0][1] == job.channel_id
    assert await store.dms_closed(1)
    second = await running_job(store)
    await store.apply_event(second.id, webhook("model_ready"), plan_transition)
    await notifier.deliver_due()
    assert len(messenger.ops("dm")) == 1  # no second attempt at a closed DM


async def test_an_outage_backs_off_and_stops_the_pass(store: SqliteStore, clock) -> None:
    messenger = ScriptedMessenger(errors={"edit": [DiscordUnavailable("503")]})
    notifier = Notifier(store, messenger, edit_interval=0)  # type: ignore[arg-type]
    await running_job(store)
    await running_job(store, owner=2)
    assert await notifier.deliver_due() == 0
    assert len(messenger.ops("edit")) == 1  # the second item waits for the next pass
    assert await pending_outbox_count(store) == 2
    assert await store.retry_outbox_now() >= 1  # Discord back: everything due now
    assert await notifier.deliver_due() == 2


async def test_items_left_untried_by_an_outage_are_handed_back_at_once(store: SqliteStore) -> None:
    messenger = ScriptedMessenger(errors={"edit": [DiscordUnavailable("503")]})
    notifier = Notifier(store, messenger, edit_interval=0, owner="a")  # type: ignore[arg-type]
    await running_job(store)
    await running_job(store, owner=2)
    await notifier.deliver_due()
    other = Notifier(store, ScriptedMessenger(), edit_interval=0, owner="b")  # type: ignore[arg-type]
    assert await other.deliver_due() == 1  # not left leased to "a" until its lease ran out


async def test_two_processes_sharing_the_outbox_never_deliver_one_item_twice(store: SqliteStore, clock) -> None:
    first, second = ScriptedMessenger(), ScriptedMessenger()
    a = Notifier(store, first, edit_interval=0, owner="a")  # type: ignore[arg-type]
    b = Notifier(store, second, edit_interval=0, owner="b")  # type: ignore[arg-type]
    for owner in range(1, 7):
        await running_job(store, owner=owner)
    leased = await store.claim_outbox("a", lease=a.lease, limit=3)  # "a" is busy with three of them
    assert await b.deliver_due() == 3
    assert await b.deliver_due() == 0
    for item in leased:
        assert await a.deliver(item)
    assert len(first.ops("edit")) + len(second.ops("edit")) == 6
    assert {call[1] for call in first.ops("edit")}.isdisjoint({call[1] for call in second.ops("edit")})


async def test_a_dead_process_s_items_are_delivered_by_another_when_the_lease_ends(store: SqliteStore, clock) -> None:
    await running_job(store)
    (item,) = await store.claim_outbox("dead", lease=Notifier(store, ScriptedMessenger()).lease)  # type: ignore[arg-type]
    survivor = Notifier(store, messenger := ScriptedMessenger(), edit_interval=0, owner="b")  # type: ignore[arg-type]
    assert await survivor.deliver_due() == 0
    clock.advance(survivor.lease.total_seconds())
    assert await survivor.deliver_due() == 1
    assert [call[1] for call in messenger.ops("edit")] == [900 + item.job_id]


async def test_one_poison_item_does_not_block_the_others(store: SqliteStore) -> None:
    messenger = ScriptedMessenger(errors={"edit": [RuntimeError("bug")]})
    notifier = Notifier(store, messenger, edit_interval=0)  # type: ignore[arg-type]
    await running_job(store)
    await running_job(store, owner=2)
    assert await notifier.deliver_due() == 1
    row = await store.db.fetchone("SELECT attempts, last_error FROM outbox WHERE delivered_at IS NULL")
    assert tuple(row) == (1, "RuntimeError")


async def test_a_job_without_a_card_gets_no_card_item(store: SqliteStore) -> None:
    job = await store.create_job(owner_id=1, guild_id=1, channel_id=2, name="n", params={}, image_count=5)
    await store.apply_event(job.id, Event(Action.SUBMIT, EventSource.USER), plan_transition)
    result = await store.apply_event(job.id, Event(Action.FAIL, EventSource.SYSTEM, detail="x"), plan_transition)
    assert result.after.state is JobState.FAILED
    keys = [draft.dedupe_key for draft in result.plan.outbox]
    assert keys == [f"dm:{job.id}:failed"]


async def test_items_of_a_deleted_job_are_dropped(store: SqliteStore) -> None:
    messenger = ScriptedMessenger()
    notifier = Notifier(store, messenger, edit_interval=0)  # type: ignore[arg-type]
    await enqueue(store, None, OutboxDraft("dm", "dm:orphan", {"state": "model_ready"}))
    await notifier.deliver_due()
    assert messenger.calls == [] and await pending_outbox_count(store) == 0


async def test_cannot_post_on_a_card_edit_gives_up_on_that_edit(store: SqliteStore) -> None:
    messenger = ScriptedMessenger(errors={"edit": [CannotPost("403 50013")]})
    notifier = Notifier(store, messenger, edit_interval=0)  # type: ignore[arg-type]
    await running_job(store)
    await notifier.deliver_due()
    assert await pending_outbox_count(store) == 0


# -- the card never lags behind the DM ------------------------------------------------------------


async def test_the_card_shows_the_outcome_before_the_dm_is_sent(store: SqliteStore, clock) -> None:
    messenger = ScriptedMessenger()
    notifier = Notifier(store, messenger, edit_interval=30)  # type: ignore[arg-type]
    job = await running_job(store)
    assert await notifier.deliver_due() == 1
    await store.apply_event(job.id, webhook("training_started"), plan_transition)
    assert await notifier.deliver_due() == 0  # a non-terminal edit still waits out the interval
    await store.apply_event(job.id, webhook("model_ready"), plan_transition)
    clock.advance(1)
    assert await notifier.deliver_due() == 2  # the postponed card edit, then the DM
    assert [call[0] for call in messenger.calls] == ["edit", "edit", "dm"]
    assert "ready" in messenger.calls[1][2].lower()
    assert await pending_outbox_count(store) == 0
    clock.advance(60)
    assert await notifier.deliver_due() == 0 and len(messenger.calls) == 3  # nothing sent twice


async def test_a_terminal_edit_is_not_delayed_by_the_interval(store: SqliteStore, clock) -> None:
    messenger = ScriptedMessenger()
    notifier = Notifier(store, messenger, edit_interval=30)  # type: ignore[arg-type]
    job = await running_job(store)
    await notifier.deliver_due()
    await store.apply_event(job.id, webhook("training_started"), plan_transition)
    await notifier.deliver_due()
    assert len(messenger.ops("edit")) == 1  # coalesced: postponed until the interval is over
    await store.apply_event(job.id, webhook("training_failed"), plan_transition)
    card = await store.pending_card_item(job.id)
    assert card is not None and card.next_attempt_at > store.now()
    assert await notifier.deliver(card)  # on its own, without the DM: still not postponed
    assert len(messenger.ops("edit")) == 2 and await store.pending_card_item(job.id) is None


async def test_the_dm_waits_while_discord_cannot_take_the_card_edit(store: SqliteStore, clock) -> None:
    messenger = ScriptedMessenger()
    notifier = Notifier(store, messenger, edit_interval=30)  # type: ignore[arg-type]
    job = await running_job(store)
    await notifier.deliver_due()
    await store.apply_event(job.id, webhook("training_started"), plan_transition)
    await store.apply_event(job.id, webhook("model_ready"), plan_transition)
    messenger.errors["edit"] = [DiscordUnavailable("503")]
    assert await notifier.deliver_due() == 0
    assert messenger.ops("dm") == [] and await pending_outbox_count(store) == 2
    assert await store.retry_outbox_now() >= 1  # Discord is back
    assert await notifier.deliver_due() == 2
    assert [call[0] for call in messenger.calls] == ["edit", "edit", "edit", "dm"]


async def test_the_dm_still_goes_when_the_card_cannot_be_edited(store: SqliteStore) -> None:
    messenger = ScriptedMessenger()
    notifier = Notifier(store, messenger, edit_interval=30)  # type: ignore[arg-type]
    job = await running_job(store)
    await notifier.deliver_due()
    await store.apply_event(job.id, webhook("training_started"), plan_transition)
    await store.apply_event(job.id, webhook("model_ready"), plan_transition)
    messenger.errors["edit"] = [CannotPost("403 50013")]
    await notifier.deliver_due()
    assert [call[0] for call in messenger.calls] == ["edit", "edit", "dm"]
    assert await pending_outbox_count(store) == 0  # the edit was given up, the DM delivered


async def test_the_dm_still_goes_when_the_card_edit_hits_a_bug(store: SqliteStore) -> None:
    messenger = ScriptedMessenger()
    notifier = Notifier(store, messenger, edit_interval=30)  # type: ignore[arg-type]
    job = await running_job(store)
    await notifier.deliver_due()
    await store.apply_event(job.id, webhook("training_started"), plan_transition)
    await notifier.deliver_due()  # postponed: the interval is not over
    await store.apply_event(job.id, webhook("model_ready"), plan_transition)
    messenger.errors["edit"] = [RuntimeError("bug")]
    await notifier.deliver_due()
    assert [call[0] for call in messenger.calls] == ["edit", "edit", "dm"]
    assert await store.pending_card_item(job.id) is not None  # retried in its own turn
