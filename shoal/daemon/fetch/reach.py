"""What a fetch tells the user about the trusted peers it looks to: each by its trust name,
online or offline (and since when), and what to run next."""

import time
from collections.abc import Sequence

from shoal.daemon.model import PeerReach


def settled(peers: Sequence[PeerReach]) -> bool:
    """Whether every peer has been tried: each is online with its catalog in, or found offline."""
    return all(peer.state != "trying" for peer in peers)


def looking(name: str, peers: Sequence[PeerReach]) -> str:
    """The one progress line while a fetch looks for the dataset."""
    if not peers:
        return f"looking for {name}: this daemon trusts no peer yet (`shoal trust ID --addr HOST:PORT`)"
    return f"looking for {name} on {_count(len(peers))}…"


def waiting(what: str, peers: Sequence[PeerReach]) -> str:
    """The progress line while a fetch has nobody to get data from."""
    gone = [offline(peer) for peer in peers if peer.state == "offline"]
    return f"waiting for a peer that has {what}" + (f" ({'; '.join(gone)})" if gone else "")


def no_peer(what: str, name: str, peers: Sequence[PeerReach], waited: float | None) -> str:
    """Why no trusted peer could give a fetch `what`, and what to run about it."""
    if not peers:
        return (
            f"no peer has {what}: this daemon trusts no peer yet;"
            " trust one with `shoal trust ID --addr HOST:PORT` (`shoal id` prints the ID on that machine)"
        )
    online = [peer.name for peer in peers if peer.state == "online"]
    asked = []
    if online:
        asked.append(f"{_names(online)} {'does' if len(online) == 1 else 'do'} not have it")
    asked += [offline(peer) for peer in peers if peer.state != "online"]
    wait = f"waited {waited:g}s; " if waited is not None else ""
    return (
        f"no trusted peer has {what} ({'; '.join(asked)}); {wait}`shoal peers` shows who is online,"
        f" `shoal ls --remote` what they share; `shoal fetch {name} --timeout 60` waits longer for a peer"
    )


def offline(peer: PeerReach) -> str:
    """"gpu-box is offline since 10:42" and what is known of why."""
    if peer.state == "trying":
        return f"{peer.name} is still being reached"
    since = f" since {_clock(peer.last_seen)}" if peer.last_seen is not None else ""
    why = f": {peer.error}" if peer.error and peer.last_seen is None else ""
    return f"{peer.name} is offline{since}{why}"


def _clock(unix: float) -> str:
    """Hours and minutes today; the date too for an earlier day."""
    then = time.localtime(unix)
    same_day = time.localtime()[:3] == then[:3]
    return time.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M", then)


def _count(n: int) -> str:
    return "1 trusted peer" if n == 1 else f"{n} trusted peers"


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
