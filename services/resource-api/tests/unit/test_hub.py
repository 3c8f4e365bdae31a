"""The WebSocket hub: fan-out per user, hand-off from worker threads, slow clients
(drop the oldest, then the ``synced: false`` marker), sockets per user."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bsopt_api.hub import WS_GOING_AWAY, WS_TRY_AGAIN_LATER, CoachHub, TooManySockets


async def test_publish_reaches_every_socket_of_the_user_and_no_other():
    hub = CoachHub()
    a1, a2, b = hub.subscribe("alice"), hub.subscribe("alice"), hub.subscribe("bob")
    assert hub.publish("alice", {"seq": 1}) == 2
    assert await a1.next() == {"seq": 1}
    assert await a2.next() == {"seq": 1}
    assert hub.connections("bob") == 1
    hub.close_all()
    assert await b.next() is None  # bob got nothing, then the shutdown close
    assert b.close_code == WS_GOING_AWAY


async def test_publish_threadsafe_hands_over_to_the_loop_in_order():
    hub = CoachHub()
    hub.bind(asyncio.get_running_loop())
    sub = hub.subscribe("alice")

    def worker() -> None:  # like the consumer's handler thread, after commit
        for seq in range(1, 4):
            hub.publish_threadsafe("alice", {"seq": seq})

    thread = threading.Thread(target=worker)
    thread.start()
    got = [await asyncio.wait_for(sub.next(), 2) for _ in range(3)]
    thread.join()
    assert [m["seq"] for m in got] == [1, 2, 3]


def test_publish_threadsafe_without_a_loop_is_dropped_quietly():
    hub = CoachHub()
    hub.publish_threadsafe("alice", {"seq": 1})  # stored messages are replayable: nothing lost


async def test_overflow_drops_the_oldest_and_marks_the_gap_once():
    hub = CoachHub(queue_size=2)
    slow, fast = hub.subscribe("alice"), hub.subscribe("alice")
    hub.publish("alice", {"id": 1})
    assert await slow.next() == {"id": 1}
    assert await fast.next() == {"id": 1}
    for event_id in range(2, 6):
        hub.publish("alice", {"id": event_id})
        assert await fast.next() == {"id": event_id}
    # slow kept the newest two; the marker says what it last got before the gap
    assert await slow.next() == {"type": "synced", "synced": False, "dropped": 2, "last_event_id": 1}
    assert [await slow.next(), await slow.next()] == [{"id": 4}, {"id": 5}]
    assert slow.dropped_total == 2 and fast.dropped_total == 0
    hub.publish("alice", {"id": 6})
    assert await slow.next() == {"id": 6}  # live again, no second marker


def test_sockets_per_user_are_limited():
    hub = CoachHub(max_sockets_per_user=2)
    first = hub.subscribe("alice")
    hub.subscribe("alice")
    with pytest.raises(TooManySockets):
        hub.subscribe("alice")
    hub.subscribe("bob")  # another user's limit is their own
    hub.unsubscribe(first)
    hub.subscribe("alice")


async def test_feed_interruption_closes_1013_at_once():
    hub = CoachHub()
    sub = hub.subscribe("alice")
    hub.publish("alice", {"id": 1})
    hub.close_all(WS_TRY_AGAIN_LATER, "event feed interrupted")
    assert await sub.next() is None  # queue dropped: the client resumes with lastEventId
    assert sub.close_code == WS_TRY_AGAIN_LATER


async def test_unsubscribe_forgets_the_socket():
    hub = CoachHub()
    sub = hub.subscribe("alice")
    hub.unsubscribe(sub)
    assert hub.connections() == 0
    assert hub.publish("alice", {"seq": 1}) == 0
