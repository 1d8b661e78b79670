"""A wake-up for tasks waiting on state shared within the event loop."""

import trio


class Signal:
    """Wakes the tasks waiting for some state to change.

    A condition without a lock: the state it guards is only touched from the
    event loop, so a waiter re-checks it after waking."""

    def __init__(self) -> None:
        self._lot = trio.lowlevel.ParkingLot()

    async def wait(self) -> None:
        await self._lot.park()

    def notify(self) -> None:
        self._lot.unpark_all()
