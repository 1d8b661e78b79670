"""What a fetch says about the trusted peers it asked: by name, offline since when, and what to run."""

import time

from shoal.daemon.fetch.reach import looking, no_peer, offline, settled, waiting
from shoal.daemon.model import PeerReach

ID = "A" * 7 + "-" + "B" * 7


def ten_42() -> float:
    """Today at 10:42, taken when the test runs: a module constant goes stale when a suite crosses midnight."""
    return time.mktime(time.localtime()[:3] + (10, 42, 0, 0, 0, -1))


def test_peers_are_settled_once_none_is_still_being_tried() -> None:
    online, gone = PeerReach(ID, "laptop", "online"), PeerReach(ID, "gpu-box", "offline", ten_42())
    assert settled([]) and settled([online, gone])
    assert not settled([online, PeerReach(ID, "nas", "trying")])


def test_an_offline_peer_is_named_with_since_when_or_why() -> None:
    assert offline(PeerReach(ID, "gpu-box", "offline", ten_42(), "connection refused")) == "gpu-box is offline since 10:42"
    assert offline(PeerReach(ID, "nas", "offline", None, "connection refused")) == "nas is offline: connection refused"
    yesterday = offline(PeerReach(ID, "nas", "offline", ten_42() - 86400))
    assert yesterday.startswith("nas is offline since ") and yesterday.endswith(" 10:42") and len(yesterday) > 30


def test_progress_lines_name_the_peers() -> None:
    peers = [PeerReach(ID, "laptop", "online"), PeerReach(ID, "gpu-box", "offline", ten_42())]
    assert looking("resnet50", peers) == "looking for resnet50 on 2 trusted peers…"
    assert looking("resnet50", peers[:1]) == "looking for resnet50 on 1 trusted peer…"
    assert looking("resnet50", []).startswith("looking for resnet50: this daemon trusts no peer yet")
    assert waiting("resnet50@3", peers) == "waiting for a peer that has resnet50@3 (gpu-box is offline since 10:42)"
    assert waiting("resnet50@3", peers[:1]) == "waiting for a peer that has resnet50@3"


def test_the_no_peer_error_names_who_was_asked_and_what_to_run() -> None:
    peers = [
        PeerReach(ID, "laptop", "online"), PeerReach(ID, "desk", "online"),
        PeerReach(ID, "gpu-box", "offline", ten_42()),
    ]
    assert no_peer("nosuch", "nosuch", peers, None) == (
        "no trusted peer has nosuch (laptop and desk do not have it; gpu-box is offline since 10:42);"
        " `shoal peers` shows who is online, `shoal ls --remote` what they share;"
        " `shoal fetch nosuch --timeout 60` waits longer for a peer"
    )
    assert "waited 5s; " in no_peer("ds@3", "ds", peers[:1], 5.0)
    assert no_peer("ds", "ds", [], None).startswith("no peer has ds: this daemon trusts no peer yet; trust one with")
