"""Events: what the daemon tells the control clients that subscribed to a topic.

Made before the services that publish and before the control server that
subscribes connections, so neither has to exist for the other to be built.
It also keeps the last events, so a client that connects late (the TUI's
Events tab) can show what happened before it came.
"""

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from shoal.protocol.control import Event, MessageDecoder, encode_message
from shoal.protocol.errors import LocalProtocolError

log = logging.getLogger(__name__)

#: Events queued for one subscriber before it counts as too slow and is dropped.
EVENT_BUFFER = 256
#: Events kept for `recent`.
HISTORY = 200

#: Sends an event to the control clients subscribed to its topic (`Events.publish`).
Publish = Callable[[str, dict[str, Any]], None]


@dataclass(eq=False)
class Subscription:
    """One connection's queue of encoded events, and the topics it wants."""

    topics: frozenset[str]
    channel: trio.MemorySendChannel[bytes]
    #: Abandons the connection: what happens to a subscriber too slow to keep up.
    drop: Callable[[], None]
    #: Set once every queued event was sent (or the connection is gone).
    flushed: trio.Event = field(default_factory=trio.Event)


class Events:
    """The topics on offer and the subscriptions to them."""

    def __init__(self, topics: Iterable[str] = (), *, buffer: int = EVENT_BUFFER, history: int = HISTORY) -> None:
        self.topics = frozenset(topics)
        #: Events one subscriber may have queued.
        self.buffer = buffer
        #: Names this daemon run: `seq` restarts at 1 in each, so a client must not compare across runs.
        self.run = secrets.token_hex(8)
        self._subscriptions: set[Subscription] = set()
        self._seq = 0
        #: (time, frame) of the last events: frames, so a publisher changing its map later changes nothing here.
        self._history: deque[tuple[int, bytes]] = deque(maxlen=history)

    @property
    def subscriber_count(self) -> int:
        """Connections currently subscribed."""
        return len(self._subscriptions)

    def publish(self, topic: str, data: dict[str, Any]) -> None:
        """Queue an event for every subscriber of `topic`; never blocks.

        A subscriber whose queue is full is disconnected: one stuck client must not
        hold back the daemon or the other clients.
        """
        if topic not in self.topics:
            raise LocalProtocolError(f"unknown event topic {topic!r}")
        self._seq += 1
        kept = not is_passing(topic, data)
        receivers = [sub for sub in self._subscriptions if topic in sub.topics]
        if not receivers and not kept:
            return
        frame = encode_message(Event(topic, data, self._seq))
        if kept:
            self._history.append((int(time.time()), frame))
        for sub in receivers:
            try:
                sub.channel.send_nowait(frame)
            except trio.ClosedResourceError:
                continue  # the server is stopping and this queue only drains now
            except trio.WouldBlock:
                log.warning("dropping a control client that fell %d events behind", self.buffer)
                self.remove(sub)
                sub.drop()

    def recent(self) -> list[dict[str, Any]]:
        """The kept events, oldest first: `{"seq", "time", "topic", "data"}` each."""
        decoder = MessageDecoder()
        entries = []
        for when, frame in self._history:
            decoder.feed(frame)
            event = decoder.next_message()
            assert isinstance(event, Event)
            entries.append({"seq": event.seq, "time": when, "topic": event.topic, "data": event.data})
        return entries

    def add(self, subscription: Subscription) -> None:
        """Start queueing events for `subscription`."""
        self._subscriptions.add(subscription)

    def remove(self, subscription: Subscription) -> None:
        """Stop queueing events for `subscription` and end its queue."""
        self._subscriptions.discard(subscription)
        subscription.channel.close()

    async def flush(self) -> None:
        """End every queue and wait until each subscriber was sent what it holds."""
        subscriptions = list(self._subscriptions)
        for sub in subscriptions:
            sub.channel.close()
        for sub in subscriptions:
            await sub.flushed.wait()


def is_passing(topic: str, data: dict[str, Any]) -> bool:
    """Whether an event reports a passing state rather than something that happened.

    A transfer's progress ticks and a watch's trips through settling, waiting and
    sharing come every second or so while anything moves: kept, they would crowd
    every other event out of the history within minutes. `status` and `watches`
    show the state they report.
    """
    if topic == "transfers":
        return data.get("event") == "progress"
    if topic == "watches":
        return data.get("change") == "state" and (data.get("watch") or {}).get("state") != "error"
    return False
