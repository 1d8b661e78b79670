"""Run one Discovery and report what it sees as JSON lines on stdout; meant for a netns lab host.

usage: discovery_probe.py PEER_ID PORT

Announces PEER_ID at PORT on every non-loopback IPv4 address, then prints
{"event": "ready", "addresses": [...]} once announced, {"event": "sighting",
"peer_id": ..., "addresses": ["host:port", ...]} and {"event": "lost", "peer_id": ...}
as they arrive, and {"event": "stopped"} after a clean shutdown on SIGTERM.
"""

import json
import signal
import sys

import trio

from shoal.daemon.net.discovery import WILDCARD, Discovery, Lost, Sighting, announce_addresses, local_ipv4_addresses


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def report(sightings: trio.MemoryReceiveChannel[Sighting | Lost]) -> None:
    async for item in sightings:
        if isinstance(item, Sighting):
            emit("sighting", peer_id=item.peer_id, addresses=list(item.addresses))
        else:
            emit("lost", peer_id=item.peer_id)


async def main(peer_id: str, port: int) -> None:
    addresses = announce_addresses(WILDCARD, local_ipv4_addresses())
    discovery = Discovery(peer_id, port, addresses)
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(discovery.run)
            emit("ready", addresses=list(addresses))
            nursery.start_soon(report, discovery.sightings())
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    emit("stopped")


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
