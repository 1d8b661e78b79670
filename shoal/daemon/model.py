"""Names and records that several of the daemon's parts share."""

from dataclasses import dataclass

import msgpack

from shoal.protocol.format.objects import DRAW_EXACT, SAMPLE_ALL, Subset, VersionRecord

#: The selection key of a complete version (no patterns, no subset), as fetch/selection.py keys them.
FULL = msgpack.packb([[], None], use_bin_type=True)

#: The folder at a destination's root where a fetch assembles files before renaming them into place.
PARTIAL_DIR = ".shoal-partial"


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """A version of a dataset, as listed by `ls` and `log`."""

    name: str
    seq: int
    id: bytes
    root: bytes
    parents: tuple[bytes, ...]
    author: bytes
    time: int
    message: str
    size: int
    files: int
    subsets: tuple[Subset, ...] = ()

    def to_json(self) -> dict:
        return {
            "subsets": {s.name: subset_json(s) for s in self.subsets},
            "name": self.name,
            "seq": self.seq,
            "id": self.id.hex(),
            "root": self.root.hex(),
            "parents": [p.hex() for p in self.parents],
            "author": self.author.hex(),
            "time": self.time,
            "message": self.message,
            "size": self.size,
            "files": self.files,
        }

    @classmethod
    def from_record(cls, version_id: bytes, record: VersionRecord) -> "VersionInfo":
        return cls(
            record.name, record.seq, version_id, record.root, record.parents, record.author,
            record.time, record.message, record.size, record.files, record.subsets,
        )


@dataclass(frozen=True, slots=True)
class VersionQuery:
    """A version asked for by name and version text ("latest", a seq number or an id prefix).

    What resolving needs, without the destination and selection a fetch adds:
    `resolve`, `diff` and `browse` look versions up without fetching them.
    """

    name: str
    version: str | None = None
    #: Seconds to wait for a peer offering the dataset.
    timeout: float = 30.0
    #: Ask only this peer (a full id or a prefix of one).
    from_peer: str | None = None
    #: Give up as soon as every trusted peer has been tried, rather than wait out `timeout`:
    #: for a user who gave no --timeout, a name no peer shares should fail at once.
    fail_fast: bool = False


@dataclass(frozen=True, slots=True)
class PeerReach:
    """Where a trusted peer stands, for messages that name it."""

    peer_id: str
    #: Its trust name, the way every message names it.
    name: str
    #: "online" (its catalog is in), "trying" (dialling it, or its catalog is on its way) or "offline".
    state: str
    #: Unix time it was last connected, while this daemon ran; None if never.
    last_seen: float | None = None
    #: Why the last attempt to reach it failed, if it did.
    error: str | None = None


def subset_json(subset: Subset) -> dict:
    """A subset as the control API shows it: include patterns, sample fraction, seed, and how the
    sample is drawn: "exact" (round(sample × files) files), "per-file" (each file on its own,
    records from before the exact draw) or "all"."""
    draw = "all" if subset.sample == SAMPLE_ALL else "exact" if subset.draw == DRAW_EXACT else "per-file"
    return {"include": list(subset.include), "sample": subset.sample / SAMPLE_ALL, "seed": subset.seed, "draw": draw}
