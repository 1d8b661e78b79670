"""What the benchmarks share: sizes on the command line, and incompressible test data."""

import os
import platform
import subprocess
import sys
import sysconfig
import time
import tomllib
from pathlib import Path

import blake3

_BLOCK = 16 * 2**20
_UNITS = {"K": 10**3, "M": 10**6, "G": 10**9}


def build_in_place(tree: Path) -> None:
    """Build a checkout's C modules next to their sources, as an editable install does: a
    git worktree of another revision imports shoal from there. Revisions with a setup.py
    build with it (the Rust part too); older ones list plain C modules in pyproject.toml."""
    if (tree / "setup.py").exists():
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree, check=True,
                       capture_output=True, text=True)
        return
    modules = tomllib.loads((tree / "pyproject.toml").read_text()).get("tool", {}).get("setuptools", {}).get("ext-modules", [])
    include = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for module in modules:
        target = tree / (module["name"].replace(".", "/") + suffix)
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", f"-I{include}", *module["sources"], "-o", str(target)],
                       cwd=tree, check=True, capture_output=True, text=True)


def parse_size(text: str) -> int:
    """"2G", "200M", "60MB" or plain bytes; K/M/G are powers of 1000."""
    text = text.strip().upper().rstrip("B")
    if text and text[-1] in _UNITS:
        return int(float(text[:-1]) * _UNITS[text[-1]])
    return int(text)


def write_random(path: Path, size: int, seed: bytes) -> None:
    """Write `size` incompressible bytes: BLAKE3's output stream for `seed`."""
    xof = blake3.blake3(seed)
    with open(path, "wb") as f:
        for offset in range(0, size, _BLOCK):
            f.write(xof.digest(length=min(_BLOCK, size - offset), seek=offset))


def cpu_model() -> str:
    """The processor's name, for the machine line of a report."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_cpu() -> tuple[float, float]:
    """CPU seconds the whole machine has spent busy since boot, (user, system), from
    /proc/stat: every process and kernel thread, so both daemons, rsync's two ends
    and the kernel's writeback all count. Idle, I/O wait and steal do not."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice) / tick, (system + irq + softirq) / tick


def cpu_since(start: tuple[float, float]) -> tuple[float, float]:
    """The machine's (user, system) CPU seconds spent since `start`, a machine_cpu()."""
    now = machine_cpu()
    return now[0] - start[0], now[1] - start[1]


#: Free memory this kernel has handed back to the host (a VM's free page reporting), in KiB.
REPORTED_KIB = Path("/sys/module/page_reporting/parameters/reported_kib")
#: Free page reporting walks the free lists every 2 s: this long without a change, it is done.
SETTLED_AFTER = 3.0
SETTLE_LIMIT = 30.0


def settle_free_memory() -> None:
    """Wait until the kernel has handed the memory freed lately back to the host (at
    once on a machine that does not report free memory).

    On such a VM a page handed back costs a fault in the host when next touched, and
    memory freed in the last seconds (a `drop_caches` of what the previous command left
    cached) is not handed back yet: a command started right away runs on it cheaply,
    by as much as the previous command left. rsync + sync of the 1 GiB folder took
    2.5-2.9 s right after dropping its predecessor's copy and 3.3-3.5 s once the
    reporting had settled (bench/JOURNAL.md, the pass of 2026-12-07 from 12:26). Settled, every timed
    command starts from the same state: that of a machine that has been idle."""
    if not REPORTED_KIB.exists():
        return
    started = changed = time.monotonic()
    last = REPORTED_KIB.read_text()
    while (now := time.monotonic()) - changed < SETTLED_AFTER and now - started < SETTLE_LIMIT:
        time.sleep(0.1)
        current = REPORTED_KIB.read_text()
        if current != last:
            last, changed = current, time.monotonic()


def fetch_workers(daemon: int) -> dict[int, list[str]]:
    """The fetch worker processes `daemon` runs now, each with its /proc/PID/stat fields after the name."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == daemon and b"shoal.daemon.worker" in (entry / "cmdline").read_bytes():
                found[int(entry.name)] = fields
        except OSError:
            continue
    return found


def print_failures(failures: list[str]) -> None:
    """The FAILURES block that ends a report, when anything went wrong."""
    if failures:
        print()
        print("FAILURES:")
        for f in failures:
            print(f"- {f}")
