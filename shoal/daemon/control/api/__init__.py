"""The control methods: what `shoal` commands and the TUI ask the daemon to do.

One handler class per area, each holding only the services its methods use:

- daemon: id, status, events, shutdown, config.reload, gc
- datasets: share, unshare, audience, subset, verify
- history: ls, log, diff
- peers: peers, trust, untrust
- transfers: fetch, browse, resolve, transfer.cancel|pause|resume
- sync: watch, unwatch, watches, subscription.add|remove|list

Every handler takes the request's params and a progress sender and returns the
result map; the normative description of each is in SPEC.md, "Control socket".
`subscribe` is built into the control server, because it belongs to the connection;
the topics it offers are TOPICS below.
"""

from typing import Protocol

from shoal.daemon.control.server import Handler

#: Event topics: a dataset got a new version; the trust store changed; the
#: configuration was reloaded; the daemon is about to stop; a watch was added,
#: removed or changed state; a subscription changed.
TOPICS = ("datasets", "peers", "transfers", "config", "daemon", "watches", "subscriptions")


class Area(Protocol):
    """A group of control methods."""

    def methods(self) -> dict[str, Handler]:
        """Method name to handler."""
        ...


def method_table(*areas: Area) -> dict[str, Handler]:
    """Every area's methods by name; two areas claiming one name is a programming error."""
    table: dict[str, Handler] = {}
    for area in areas:
        for name, handler in area.methods().items():
            if name in table:
                raise ValueError(f"control method {name!r} is defined twice")
            table[name] = handler
    return table
