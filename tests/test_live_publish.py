"""orchestration.live: what a publisher pays and what a subscriber of the events group receives."""
from __future__ import annotations

import asyncio

from channels.layers import get_channel_layer
from prometheus_client import REGISTRY

from orchestration import live
from orchestration.engine.events import run_updated, step_started


def running(model: str) -> dict:
    """A run still going (no metric counts it): `target` tells the events apart."""
    return run_updated(run_id=f"run-{model}", status="running", target=model, kind="chat", api_key="pk-test",
                       team=None)


async def joined_channel(layer) -> str:
    channel = await layer.new_channel()
    await layer.group_add(live.EVENTS_GROUP, channel)
    return channel


def test_events_published_in_one_turn_are_observed_after_the_caller_and_sent_as_one_message_in_order():
    layer = get_channel_layer()
    seen: list[str] = []
    live.observers.append(lambda event: seen.append(event["target"]) if event.get("api_key") == "pk-test" else None)

    async def scenario():
        channel = await joined_channel(layer)
        try:
            for model in ("first", "second", "third"):
                live.publish(running(model))
            seen_by_the_caller = list(seen)  # the caller's own work goes on before any observer runs
            message = await asyncio.wait_for(layer.receive(channel), 2)
            try:
                more = await asyncio.wait_for(layer.receive(channel), 0.2)
            except TimeoutError:
                more = None
        finally:
            await layer.group_discard(live.EVENTS_GROUP, channel)
        return seen_by_the_caller, message, more

    try:
        seen_by_the_caller, message, more = asyncio.run(scenario())
    finally:
        live.observers.pop()

    assert seen_by_the_caller == []
    assert seen == ["first", "second", "third"]
    events = live.events_in(message)
    assert [event["target"] for event in events] == ["first", "second", "third"]
    sequence = [event["oseq"] for event in events]  # stamped by the origin observer before the send
    assert sequence == sorted(sequence) and len(set(sequence)) == 3
    assert more is None  # one message for the three, not one each


def counted_dropped() -> float:
    return REGISTRY.get_sample_value("podium_live_events_dropped_total") or 0.0


def test_a_layer_that_refuses_the_send_costs_the_caller_nothing_and_every_event_is_counted_as_dropped(monkeypatch):
    layer = get_channel_layer()

    async def refuse(group, message):
        raise ConnectionError("the layer is away")

    monkeypatch.setattr(layer, "group_send", refuse)
    monkeypatch.setattr(live, "_nobody_listens", lambda layer: False)
    dropped_before, counted_before = live.stats["dropped"], counted_dropped()

    async def scenario():
        live.publish(running("a"))
        live.publish(running("b"))
        await asyncio.sleep(0.05)  # the next turns: observe, then the send that fails
        return "answered"

    assert asyncio.run(scenario()) == "answered"
    assert live.stats["dropped"] - dropped_before == 2
    assert counted_dropped() - counted_before == 2


def test_a_turn_with_more_events_than_one_message_carries_goes_out_in_several_in_order(monkeypatch):
    layer = get_channel_layer()
    monkeypatch.setattr(live, "MAX_EVENTS_PER_MESSAGE", 2)

    async def scenario():
        channel = await joined_channel(layer)
        try:
            for index in range(5):
                live.publish(running(f"m{index}"))
            messages = [await asyncio.wait_for(layer.receive(channel), 2) for _ in range(3)]
        finally:
            await layer.group_discard(live.EVENTS_GROUP, channel)
        return messages

    messages = asyncio.run(scenario())
    assert [len(live.events_in(message)) for message in messages] == [2, 2, 1]
    assert [event["target"] for message in messages for event in live.events_in(message)] == [
        "m0", "m1", "m2", "m3", "m4"]


def test_from_sync_code_an_event_is_observed_before_publish_returns_and_delivered():
    layer = get_channel_layer()
    seen: list[str] = []
    channel = asyncio.run(joined_channel(layer))  # the in-memory layer keeps groups across loops
    live.observers.append(lambda event: seen.append(event["target"]) if event.get("api_key") == "pk-test" else None)
    try:
        live.publish(running("from-sync"))
        assert seen == ["from-sync"]
        message = asyncio.run(asyncio.wait_for(layer.receive(channel), 2))
    finally:
        live.observers.pop()
        asyncio.run(layer.group_discard(live.EVENTS_GROUP, channel))
    assert [event["target"] for event in live.events_in(message)] == ["from-sync"]


def test_messages_of_other_kinds_carry_no_events_and_an_earlier_versions_single_event_is_read():
    old = running("old")
    assert live.events_in({"type": "podium.event", "event": old}) == [old]
    assert live.events_in({"type": "podium.event"}) == []
    assert live.events_in({"type": "dashboard.frame", "text": "{}"}) == []
    assert live.events_in({"type": "podium.events", "events": "not a list"}) == []
    new = running("new")
    assert live.events_in({"type": "podium.events", "events": [new, "junk"]}) == [new]


def test_sent_returns_once_the_loops_events_are_handed_to_the_layer(monkeypatch):
    """What a Celery task's run loop awaits before it ends, so that its last events are not lost with it."""
    layer = get_channel_layer()
    handed: list[str] = []

    async def slow_send(group, message):
        await asyncio.sleep(0.05)
        handed.extend(event["target"] for event in live.events_in(message))

    monkeypatch.setattr(layer, "group_send", slow_send)
    monkeypatch.setattr(live, "_nobody_listens", lambda layer: False)

    async def a_run_that_ends():
        loop = asyncio.get_running_loop()
        loop.call_soon(live.publish, running("last"))  # as the durable sink's thread hands it over
        await live.sent()
        return list(handed)

    assert asyncio.run(a_run_that_ends()) == ["last"]


def test_turns_published_while_a_send_is_under_way_follow_it_in_order_in_one_later_message(monkeypatch):
    """One sender per loop: a slow layer never lets a later turn's message overtake an earlier one."""
    layer = get_channel_layer()
    messages: list[list[str]] = []

    async def slow_send(group, message):
        await asyncio.sleep(0.05)
        messages.append([event["target"] for event in live.events_in(message)])

    monkeypatch.setattr(layer, "group_send", slow_send)
    monkeypatch.setattr(live, "_nobody_listens", lambda layer: False)

    async def three_turns():
        for index in range(3):
            live.publish(running(f"turn{index}"))
            await asyncio.sleep(0.001)  # the next turn: the first send is still under way
        await live.sent()

    asyncio.run(three_turns())
    assert [target for message in messages for target in message] == ["turn0", "turn1", "turn2"]
    assert messages[0] == ["turn0"] and len(messages) == 2  # what came during the first send went in one


def a_long_prompt(name: str, chars: int) -> dict:
    """A workflow span's step.started carrying a long prompt (a span: no model metric counts it)."""
    step = {"run_id": f"run-{name}", "step_id": name, "parent_id": None, "key": name, "node_id": name,
            "node_type": "sequence", "model": "", "provider": ""}
    return step_started(step=step, ts=0, prompt=[{"role": "user", "content": "x" * chars}])


def test_large_events_are_split_by_size_and_an_event_the_layer_cannot_encode_costs_only_itself(monkeypatch):
    layer = get_channel_layer()
    sent_messages: list[list[str]] = []

    async def picky_send(group, message):
        names = [event["run_id"].removeprefix("run-") for event in live.events_in(message)]
        if "unencodable" in names:
            raise TypeError("can not serialize 'object' object")
        sent_messages.append(names)

    monkeypatch.setattr(layer, "group_send", picky_send)
    monkeypatch.setattr(live, "_nobody_listens", lambda layer: False)
    monkeypatch.setattr(live, "MAX_MESSAGE_CHARS", 10_000)
    dropped_before = live.stats["dropped"]

    async def scenario():
        # two prompts of 6,000 characters do not fit in one message of 10,000
        for event in (a_long_prompt("big-1", 6_000), a_long_prompt("big-2", 6_000), running("unencodable"),
                      running("small")):
            live.publish(event)
        await live.sent()

    asyncio.run(scenario())
    assert sent_messages == [["big-1"], ["big-2"], ["small"]]  # the bad one alone was dropped
    assert live.stats["dropped"] - dropped_before == 1


def test_while_the_layer_is_away_a_send_gives_up_on_the_whole_backlog_at_once(monkeypatch):
    """One timeout, not one per message: events piling up during an outage never wait in a growing queue."""
    layer = get_channel_layer()
    calls = []

    async def unreachable(group, message):
        calls.append(len(live.events_in(message)))
        raise ConnectionError("Redis is away")

    monkeypatch.setattr(layer, "group_send", unreachable)
    monkeypatch.setattr(live, "_nobody_listens", lambda layer: False)
    monkeypatch.setattr(live, "MAX_EVENTS_PER_MESSAGE", 2)
    dropped_before = live.stats["dropped"]

    async def scenario():
        for index in range(7):
            live.publish(running(f"lost{index}"))
        await live.sent()

    asyncio.run(scenario())
    assert calls == [2]  # the first message failed; the other three were not tried
    assert live.stats["dropped"] - dropped_before == 7
