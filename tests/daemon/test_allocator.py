"""The daemon's allocator settings: a freed run buffer's pages serve the next one."""

import subprocess
import sys

import pytest

from shoal.daemon.allocator import tune_allocator

#: Run buffers as the puller holds them (a few of up to 4 MiB alive, freed oldest first);
#: prints the page faults each new buffer cost.
PATTERN = """
import resource, sys
from shoal.daemon.allocator import tune_allocator
if sys.argv[1] == "tuned":
    assert tune_allocator()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
live = []
for i in range(400):
    if i == 200:
        before = faults()
    live.append(bytearray((4 << 20) - (i % 7) * 1000))
    if len(live) > 4:
        live.pop(0)
print((faults() - before) / 200)
"""

PAGES_PER_BUFFER = (4 << 20) // 4096


def faults_per_buffer(variant: str) -> float:
    out = subprocess.run([sys.executable, "-c", PATTERN, variant], capture_output=True, text=True, check=True)
    return float(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's; other C libraries keep their own")
def test_freed_run_buffers_are_reused_not_faulted_in_again() -> None:
    plain, tuned = faults_per_buffer("plain"), faults_per_buffer("tuned")
    # glibc's defaults trim or unmap most of each freed buffer (about 300 of its
    # 1,024 pages faulted in again on this project's machine); tuned, a few.
    assert plain > PAGES_PER_BUFFER / 8
    assert tuned < PAGES_PER_BUFFER / 32


def test_tuning_reports_whether_it_applied() -> None:
    assert tune_allocator() is sys.platform.startswith("linux")
