"""The trust store: trusted and pending peers in home/peers.toml."""

import os
import tomllib

import pytest

from shoal.daemon.net import trust as trust_mod
from shoal.daemon.net.trust import PendingPeer, TrustedPeer, TrustStore, canonical_peer_id
from shoal.errors import ConfigError, UnknownPeer, UsageError
from shoal.protocol.format.identity import PeerId


def new_id() -> str:
    return str(PeerId.from_public_key(os.urandom(32)))


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path, clock):
    return TrustStore.open(tmp_path, clock=clock)


def test_a_trusted_peer_is_kept_across_reopening(tmp_path, store, clock):
    peer_id = new_id()
    peer = store.trust(peer_id, "alice", ["192.168.1.20:7453"])
    assert peer == TrustedPeer(peer_id, "alice", ("192.168.1.20:7453",), int(clock.now))
    assert store.is_trusted(peer_id)
    again = TrustStore.open(tmp_path)
    assert again.is_trusted(peer_id)
    assert again.get(peer_id) == peer
    assert again.list().trusted == (peer,)


def test_ids_typed_loosely_are_stored_canonically(store):
    peer_id = new_id()
    typed = peer_id.replace("-", " ").lower()
    assert store.trust(typed).peer_id == peer_id
    assert canonical_peer_id(typed) == peer_id
    assert store.is_trusted(typed)


def test_the_default_name_is_the_short_id(store):
    peer_id = new_id()
    assert store.trust(peer_id).name == PeerId.parse(peer_id).short()


def test_trusting_again_renames_and_replaces_addresses_but_keeps_the_date(store, clock):
    peer_id = new_id()
    store.trust(peer_id, "a", ["10.0.0.1:1"])
    clock.now += 100
    peer = store.trust(peer_id, "b", ["10.0.0.2:2", "10.0.0.1:1"])
    assert peer.name == "b"
    assert peer.addresses == ("10.0.0.2:2", "10.0.0.1:1")
    assert peer.added == 1_700_000_000


@pytest.mark.parametrize("bad", ["", "x" * 65, "tab\there"])
def test_bad_names_are_refused(store, bad):
    with pytest.raises(UsageError):
        store.trust(new_id(), bad)


def test_bad_ids_and_addresses_are_usage_errors(store):
    with pytest.raises(UsageError, match="shoal id"):
        store.trust("ABCDEFG")
    with pytest.raises(ConfigError, match="HOST:PORT"):
        store.trust(new_id(), addresses=["nowhere"])
    assert store.list().trusted == ()


def test_untrust_accepts_the_id_the_name_or_a_unique_prefix(store):
    ids = [new_id() for _ in range(3)]
    store.trust(ids[0], "alice")
    store.trust(ids[1], "bob")
    store.trust(ids[2], "carol")
    assert store.untrust(ids[0]).name == "alice"
    assert store.untrust("bob").peer_id == ids[1]
    assert store.untrust(ids[2][:9].lower()).name == "carol"
    assert store.list().trusted == ()


def test_untrust_refuses_unknown_and_ambiguous_references(store):
    first, second = new_id(), new_id()
    store.trust(first, "alice")
    store.trust(second, "alice")
    with pytest.raises(UsageError, match="matches 2"):
        store.untrust("alice")
    with pytest.raises(UnknownPeer, match="shoal peers"):
        store.untrust("zed")
    with pytest.raises(UnknownPeer):
        store.untrust(first[:2])
    assert len(store.list().trusted) == 2


def test_pending_peers_are_recorded_and_trusting_one_adopts_what_it_announced(tmp_path, store, clock):
    peer_id = new_id()
    seen = store.record_pending(peer_id, ("10.0.0.9:7453",))
    assert seen == PendingPeer(peer_id, ("10.0.0.9:7453",), int(clock.now), int(clock.now))
    clock.now += 30
    later = store.record_pending(peer_id)
    assert later.first_seen == 1_700_000_000
    assert later.addresses == ("10.0.0.9:7453",), "a connection from it tells no address and forgets none"
    assert TrustStore.open(tmp_path).list().pending[0].addresses == ("10.0.0.9:7453",)
    trusted = store.trust(peer_id, "dora")
    assert (trusted.addresses, trusted.announced) == ((), ("10.0.0.9:7453",))
    assert trusted.dial_addresses() == ("10.0.0.9:7453",)
    assert store.list().pending == ()
    assert store.record_pending(peer_id, ("10.0.0.9:7453",)) is None, "trusted peers are never pending"


def test_a_peer_that_only_connected_is_pending_with_no_address(store):
    peer_id = new_id()
    assert store.record_pending(peer_id).addresses == ()
    assert store.trust(peer_id).dial_addresses() == ()


def test_trust_addr_replaces_the_addresses_given_before_and_announcements_are_kept(tmp_path, store):
    peer_id = new_id()
    store.trust(peer_id, "eve", ["10.0.0.1:58876"])
    store.record_announced(peer_id, ("10.0.0.1:7453",))
    fixed = store.trust(peer_id, addresses=["10.0.0.1:7453", "10.0.0.1:7453"])
    assert fixed.addresses == ("10.0.0.1:7453",)
    renamed = store.trust(peer_id, "eve2")
    assert renamed.addresses == ("10.0.0.1:7453",), "a trust without --addr keeps the addresses"
    reloaded = TrustStore.open(tmp_path).get(peer_id)
    assert (reloaded.addresses, reloaded.announced) == (("10.0.0.1:7453",), ("10.0.0.1:7453",))


def test_an_older_files_pending_source_address_is_dropped(tmp_path):
    peer_id = new_id()
    (tmp_path / "peers.toml").write_text(
        f'[pending."{peer_id}"]\naddress = "198.18.0.1:58876"\nfirst_seen = 1\nlast_seen = 2\n'
    )
    assert TrustStore.open(tmp_path).list().pending == (PendingPeer(peer_id, (), 1, 2),)


def test_last_seen_is_persisted_at_most_once_a_minute(tmp_path, store, clock):
    peer_id = new_id()
    store.record_pending(peer_id, ("10.0.0.9:7453",))
    clock.now += 10
    store.record_pending(peer_id, ("10.0.0.9:7453",))
    assert TrustStore.open(tmp_path).list().pending[0].last_seen == 1_700_000_000
    assert store.list().pending[0].last_seen == 1_700_000_010, "memory is always current"
    clock.now += trust_mod.LAST_SEEN_PERSIST_INTERVAL
    store.record_pending(peer_id, ("10.0.0.9:7453",))
    assert TrustStore.open(tmp_path).list().pending[0].last_seen == int(clock.now)


def test_a_flood_of_pending_peers_is_capped_oldest_first(store, clock, monkeypatch):
    monkeypatch.setattr(trust_mod, "MAX_PENDING", 5)
    ids = []
    for _ in range(8):
        clock.now += 1
        ids.append(new_id())
        store.record_pending(ids[-1], ("10.0.0.1:1",))
    pending = store.list().pending
    assert [peer.peer_id for peer in pending] == list(reversed(ids[-5:]))


def test_the_file_is_readable_toml_and_writes_leave_no_temporary_files(tmp_path, store):
    peer_id = new_id()
    store.trust(peer_id, "alice", ["10.0.0.1:7453"])
    table = tomllib.loads((tmp_path / "peers.toml").read_text())
    assert table["trusted"][peer_id]["addresses"] == ["10.0.0.1:7453"]
    assert sorted(os.listdir(tmp_path)) == ["peers.toml"]


@pytest.mark.parametrize(
    "text",
    ["[trusted\n", '[trusted."NOT-AN-ID"]\nname = "x"\nadded = 1\n', "[trusted.X]\n"],
)
def test_a_damaged_file_is_reported_not_ignored(tmp_path, text):
    (tmp_path / "peers.toml").write_text(text)
    with pytest.raises(ConfigError, match="peers.toml"):
        TrustStore.open(tmp_path)
