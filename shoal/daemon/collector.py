"""Python's cycle collector in a daemon: run rarely, since a fetch makes almost no cycles.

A fetch allocates tuples, dataclasses and buffers by the hundred thousand, and
reference counting frees nearly all of them. At CPython's default threshold (a
young collection every 700 allocations more than frees) the receiving daemon of a
2 GB fetch ran 521 young, 47 middle and 4 full collections, 0.48 s with the GIL
held, which found 193 objects; with these settings 12 young and 1 middle, 0.08 s
(gc.callbacks in a /tmp wrapper, AMD EPYC, 2 vCPUs).
"""

import gc

#: A young collection after 10,000 allocations more than frees; the older
#: generations after 10 of the one below, as by default.
THRESHOLDS = (10_000, 10, 10)


def tune_collector() -> None:
    """Move what the daemon made while starting out of the collector's way, and collect less often."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
