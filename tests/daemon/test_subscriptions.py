"""The subscription manager's own state: its file, and how it waits."""

import time
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.daemon.library.datasets import Library
from shoal.daemon.sync.subscriptions import SUBSCRIPTIONS_FILE, Subscription, Subscriptions, SubscriptionStore
from shoal.errors import ConfigError

pytestmark = pytest.mark.trio

KEY = Ed25519PrivateKey.from_private_bytes(b"\x33" * 32)


async def test_the_file_keeps_every_field(tmp_path: Path) -> None:
    store = SubscriptionStore(tmp_path / SUBSCRIPTIONS_FILE)
    subs = [
        Subscription("resnet.v2", "/data/r", 100, "ab" * 32, 200, (
            {"path": "a.yaml", "change": "edited", "kept_as": "a.yaml.shoal-conflict-3"},
            {"path": "b", "change": "deleted", "kept_as": None},
        )),
        Subscription("fresh", "/data/f", 300),
    ]
    store.save(subs)
    assert store.load() == subs


async def test_a_damaged_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / SUBSCRIPTIONS_FILE
    path.write_text('[subscriptions."bad/name"]\ndest = "/x"\nadded = 1\n')
    with pytest.raises(ConfigError, match="is damaged .*; fix or remove it"):
        SubscriptionStore(path).load()
    path.write_text("not toml [")
    with pytest.raises(ConfigError, match="cannot read .*; fix or remove it"):
        SubscriptionStore(path).load()


class _NoPeers:
    """No peer ever offers anything; counts how often the manager looks."""

    def __init__(self) -> None:
        self.looks = 0

    def offers(self, name: str) -> list:
        self.looks += 1
        return []

    async def wait_for_change(self) -> None:
        await trio.sleep_forever()


class _NoTransfers:
    active: dict = {}


async def test_a_due_retry_without_a_peer_waits_instead_of_spinning(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    SubscriptionStore(home / SUBSCRIPTIONS_FILE).save([Subscription("ds", str(tmp_path / "d"), 1)])
    library = Library.open(home, KEY)
    peers = _NoPeers()
    try:
        manager = Subscriptions(home, library, peers, None, _NoTransfers(), lambda topic, data: None, b"\0" * 32)  # type: ignore[arg-type]
        live = manager._live["ds"]
        live.failures, live.next_try = 1, time.monotonic() - 1  # a retry is due; the peer has left
        with trio.move_on_after(0.5):
            await manager.run()
    finally:
        library.close()
    assert peers.looks <= 3
