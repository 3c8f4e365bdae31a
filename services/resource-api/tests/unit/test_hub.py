"""The WebSocket hub: fan-out per user, hand-off from worker threads, slow clients."""

from __future__ import annotations

import asyncio
import threading

from bsopt_api.hub import WS_GOING_AWAY, WS_TRY_AGAIN_LATER, CoachHub


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


async def test_slow_socket_is_closed_1013_instead_of_buffering_forever():
    hub = CoachHub(max_pending=2)
    slow, fast = hub.subscribe("alice"), hub.subscribe("alice")
    for seq in range(1, 4):
        hub.publish("alice", {"seq": seq})
        if seq < 3:
            assert await fast.next() == {"seq": seq}
    assert slow.close_code == WS_TRY_AGAIN_LATER
    assert await slow.next() is None  # queue dropped: the client resumes with ?after=
    assert await fast.next() == {"seq": 3}
    assert hub.publish("alice", {"seq": 4}) == 1


async def test_unsubscribe_forgets_the_socket():
    hub = CoachHub()
    sub = hub.subscribe("alice")
    hub.unsubscribe(sub)
    assert hub.connections() == 0
    assert hub.publish("alice", {"seq": 1}) == 0
