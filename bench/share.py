"""Measure `Library.share` against the in-process hashing ceiling, and its memory.

Generates incompressible data (a few large files plus many small ones, 2 GB by
default) and a separate folder of 100,000 small files, then prints one table:

* ceiling: the same chunker and BLAKE3 over the same files, read from the page
  cache the same way the scanner reads them, on one thread and on two;
* first share and unchanged re-share of the data, and share / ceiling (bar >= 0.7),
  --runs times (default 3: the ceiling, then a first share into a fresh index, in
  turn), judged on the median, since single ratios of a second's work swing by a
  fifth on a noisy machine;
* first share and unchanged re-share of the 100,000 small files (bar <= 0.05x);
* peak RSS while sharing (bar <= 200 MB), from VmHWM after resetting it.

    .venv/bin/python bench/share.py [--size 2G] [--small-files 100000] [--runs 3] [--dir DIR]

With --cold it measures instead a first share from a cold page cache against
reading every file (`find DIR -type f -print0 | xargs -0 cat > /dev/null`),
both after `sync; echo 3 > /proc/sys/vm/drop_caches`, on bench/fetch.py's
mixed folder (checkpoints, two shards and --images small files; the issue's
1 GiB folder by default), then the unchanged re-share (warm). Each share runs
in a fresh process and index; --against REV alternates runs with a git
worktree of REV (its shoal on PYTHONPATH), as this machine is noisy:

    .venv/bin/python bench/share.py --cold [--size 1G] [--images 10000] [--runs 3] [--against REV]
"""

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import blake3
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from data import build_in_place, cpu_model, parse_size, write_random
from fetch import LARGE_FILES as LARGE_FILES_MIXED
from fetch import drop_caches, tree_bytes
from fetch import make_dataset as make_mixed

from shoal.daemon.library.datasets import Library, ShareResult
from shoal.protocol.format.chunking import DEFAULT_PARAMS, make_chunker
from shoal.protocol.format.hashing import chunk_id

LARGE_FILES = 4
LARGE_SHARE = 0.9
SMALL_FILE_SIZE = 16 * 1024
TINY_FILE_SIZE = 1024
FILES_PER_DIR = 1000
BAR_RATIO = 0.7
BAR_RESHARE = 0.05
BAR_RSS = 200 * 10**6
BAR_COLD = 1.3
REPO = Path(__file__).resolve().parent.parent



def make_dataset(root: Path, size: int) -> list[Path]:
    large = int(size * LARGE_SHARE) // LARGE_FILES
    paths = []
    for i in range(LARGE_FILES):
        paths.append(root / f"shard-{i}.bin")
        write_random(paths[-1], large, b"large %d" % i)
    small_total = size - large * LARGE_FILES
    xof = blake3.blake3(b"small files")
    for i in range(small_total // SMALL_FILE_SIZE):
        folder = root / "samples" / f"{i // FILES_PER_DIR:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(folder / f"{i:06d}.bin")
        paths[-1].write_bytes(xof.digest(length=SMALL_FILE_SIZE, seek=i * SMALL_FILE_SIZE))
    return paths


def make_small_files(root: Path, count: int) -> None:
    xof = blake3.blake3(b"tiny files")
    for i in range(count):
        folder = root / f"{i // FILES_PER_DIR:04d}"
        if i % FILES_PER_DIR == 0:
            folder.mkdir(parents=True)
        (folder / f"{i:06d}.txt").write_bytes(xof.digest(length=TINY_FILE_SIZE, seek=i * TINY_FILE_SIZE))


def hash_files(paths: list[Path]) -> None:
    """What the scanner does per file, minus the index: chunk the stream and hash each chunk."""
    chunker = make_chunker(DEFAULT_PARAMS)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            for chunk in chunker.cut_stream(f):
                chunk_id(chunk.data)


def ceiling(paths: list[Path], threads: int) -> float:
    """Seconds to hash `paths` on `threads` threads, files dealt largest first to the least loaded."""
    shares: list[list[Path]] = [[] for _ in range(threads)]
    loads = [0] * threads
    for path in sorted(paths, key=lambda p: p.stat().st_size, reverse=True):
        i = loads.index(min(loads))
        shares[i].append(path)
        loads[i] += path.stat().st_size
    workers = [threading.Thread(target=hash_files, args=(s,)) for s in shares]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - start


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def timed_share(library: Library, path: Path) -> tuple[float, int, ShareResult]:
    """(seconds, peak RSS in bytes during the share, ShareResult)."""
    reset_peak_rss()
    start = time.perf_counter()
    result = trio.run(library.share, path)
    return time.perf_counter() - start, peak_rss(), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, help="bytes of data, e.g. 2G, 200M (default 2G; 1G with --cold)")
    parser.add_argument("--small-files", type=int, default=100_000, help="files in the small-file folder")
    parser.add_argument("--dir", type=Path, help="work directory (default: a new temporary one, removed after)")
    parser.add_argument("--cold", action="store_true", help="cold first share against `cat` of every file")
    parser.add_argument("--images", type=int, default=10_000, help="with --cold: small files in the mixed folder")
    parser.add_argument("--runs", type=int, default=3,
                        help="rounds of ceiling and first share (default 3); with --cold: runs per variant")
    parser.add_argument("--against", metavar="REV", help="with --cold: alternate with a git worktree of REV")
    parser.add_argument("--share-once", nargs=2, type=Path, metavar=("HOME", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be 1 or more")
    if args.share_once:
        share_once(*args.share_once)
        return
    if args.size is None:
        args.size = parse_size("1G" if args.cold else "2G")

    work = Path(tempfile.mkdtemp(prefix="shoal-bench-", dir=args.dir))
    try:
        if args.cold:
            run_cold(work, args)
        else:
            run(work, args.size, args.small_files, args.runs)
    finally:
        shutil.rmtree(work)


# --- cold first share against cat ----------------------------------------------


def share_once(home: Path, data: Path) -> None:
    """In a fresh process: drop the page cache, share `data` into a new index, share it again; print JSON."""
    import shoal

    library = Library.open(home, Ed25519PrivateKey.generate())
    drop_caches(True)
    first, rss, result = timed_share(library, data)
    again, _, unchanged = timed_share(library, data)
    assert result.created and unchanged.files_rehashed == 0
    library.close()
    print(json.dumps({"first": first, "again": again, "rss": rss, "files": result.files_rehashed,
                      "shoal": str(Path(shoal.__file__).parent.parent)}))


def cat_all(data: Path) -> float:
    """Seconds to read every file from a cold page cache, the way a user would measure it."""
    drop_caches(True)
    start = time.perf_counter()
    subprocess.run(f"find {shlex.quote(str(data))} -type f -print0 | xargs -0 cat > /dev/null", shell=True, check=True)
    return time.perf_counter() - start


def cold_share(tree: Path, home: Path, data: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    home.mkdir()
    argv = [sys.executable, str(Path(__file__).resolve()), "--share-once", str(home), str(data)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tree, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"share failed with {tree}: {proc.stderr[-2000:]}")
    shutil.rmtree(home)
    out = json.loads(proc.stdout.splitlines()[-1])
    if Path(out["shoal"]).resolve() != tree.resolve():
        raise RuntimeError(f"the share imported shoal from {out['shoal']}, not {tree}")
    return out


def spread(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}..{max(values):.{digits}f})"


def run_cold(work: Path, args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        raise SystemExit("--cold drops the page cache: run it as root")
    data = work / "data"
    info = make_mixed(data, args.size, args.images)
    files, size = tree_bytes(data)
    variants = [("tree", REPO)]
    if args.against:
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(work / "against"), args.against],
                       check=True, capture_output=True)
        build_in_place(work / "against")
        variants.append((args.against, work / "against"))
    try:
        rows = []
        for n in range(args.runs):
            print(f"run {n} ...", file=sys.stderr)
            for label, tree in variants:
                # cat right before each share: on a busy machine a ratio of neighbours is steadier.
                cat = cat_all(data)
                rows.append({"variant": label, "cat": cat, **cold_share(tree, work / f"home-{n}-{label}", data)})
    finally:
        if args.against:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / "against")],
                           capture_output=True)
    print(f"machine: {cpu_model()} x {os.cpu_count()}; command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"data: {files} files, {size / 1e9:.2f} GB ({LARGE_FILES_MIXED} x {info['large'] / 1e6:.0f} MB, "
          f"2 x {info['medium'] / 1e6:.0f} MB, {info['small']} small files); page cache dropped before each cat "
          "and each first share; a cat right before each share; each share in a fresh process and index; median (min..max) of "
          f"{args.runs} interleaved runs")
    print(f"{'variant':<14} {'cat every file':>22} {'first share (cold)':>22} {'share/cat':>20} {'re-share (warm)':>22}"
          f" {'peak RSS MB':>12}")
    for label, _ in variants:
        mine = [r for r in rows if r["variant"] == label]
        ratios = [r["first"] / r["cat"] for r in mine]
        print(f"{label:<14} {spread([r['cat'] for r in mine]) + ' s':>22} {spread([r['first'] for r in mine]) + ' s':>22}"
              f" {spread(ratios):>20} {spread([r['again'] for r in mine], 3) + ' s':>22}"
              f" {max(r['rss'] for r in mine) / 1e6:>12.0f}")
    best = statistics.median(r["first"] / r["cat"] for r in rows if r["variant"] == "tree")
    print(f"first share / cat (tree) = {best:.2f} (bar <= {BAR_COLD}: {verdict(best <= BAR_COLD)})")


def row(label: str, seconds: float, nbytes: int | None = None, note: str = "") -> None:
    rate = f"{nbytes / seconds / 1e6:9.0f} MB/s" if nbytes else " " * 14
    print(f"{label:<44} {seconds:8.2f} s {rate}  {note}")


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def run(work: Path, size: int, small_files: int, runs: int) -> None:
    data, tiny = work / "data", work / "tiny"
    for d in (data, tiny):
        d.mkdir()
    t = time.perf_counter()
    paths = make_dataset(data, size)
    make_small_files(tiny, small_files)
    total = sum(p.stat().st_size for p in paths)
    print(f"data: {total / 1e9:.2f} GB in {len(paths)} files ({LARGE_FILES} large); "
          f"{small_files} files of {TINY_FILE_SIZE} B; generated in {time.perf_counter() - t:.0f} s; "
          f"{os.cpu_count()} CPUs")
    hash_files(paths)  # warm the page cache and the code paths

    # The same split into its two parts, each in a fresh index, to show where time goes.
    small = [p for p in paths if p.parent.parent.name == "samples"]
    small_ceiling = min(ceiling(small, 1), ceiling(small, 2))
    part_home = work / "home-part"
    part_home.mkdir()
    part_library = Library.open(part_home, Ed25519PrivateKey.generate())
    small_share, _, _ = timed_share(part_library, data / "samples")
    part_library.close()
    small_bytes = sum(p.stat().st_size for p in small)

    # Rounds of the ceiling and a first share, each into a fresh index; the last one's index
    # serves the re-share and the small files below.
    rounds: list[tuple[float, float, float]] = []
    rss_first = 0
    for n in range(runs):
        one, two = ceiling(paths, 1), ceiling(paths, 2)
        home = work / f"home-{n}"
        home.mkdir()
        library = Library.open(home, Ed25519PrivateKey.generate())
        first, rss, result = timed_share(library, data)
        assert result.created
        rounds.append((one, two, first))
        rss_first = max(rss_first, rss)
        if n < runs - 1:
            library.close()
    first = statistics.median(r[2] for r in rounds)
    ratio = statistics.median(min(one, two) / share for one, two, share in rounds)
    again, rss_again, unchanged = timed_share(library, data)
    assert not unchanged.created and unchanged.files_rehashed == 0
    tiny_first, rss_tiny, _ = timed_share(library, tiny)
    tiny_again, _, tiny_unchanged = timed_share(library, tiny)
    assert tiny_unchanged.files_rehashed == 0
    library.close()
    rss = max(rss_first, rss_again, rss_tiny)
    index_size = sum(p.stat().st_size for p in home.iterdir())

    print(f"{'':<44} {'time':>10} {'throughput':>14}")
    for n, (one, two, share) in enumerate(rounds, 1):
        row(f"round {n}: ceiling, 1 thread", one, total)
        row(f"round {n}: ceiling, 2 threads", two, total)
        row(f"round {n}: Library.share, first", share, total, f"ratio to the faster ceiling {min(one, two) / share:.2f}")
    row(f"Library.share, first (median of {runs})", first, total,
        f"share/ceiling = {ratio:.2f}, median of the rounds (bar >= {BAR_RATIO}: {verdict(ratio >= BAR_RATIO)})")
    row(f"  its part in {len(small)} files of {SMALL_FILE_SIZE // 1024} KiB: ceiling", small_ceiling, small_bytes,
        f"{len(small) / small_ceiling:.0f} files/s")
    row(f"  its part in {len(small)} files of {SMALL_FILE_SIZE // 1024} KiB: share", small_share, small_bytes,
        f"{len(small) / small_share:.0f} files/s; share/ceiling = {small_ceiling / small_share:.2f}")
    row("Library.share, unchanged re-share", again, None, f"{again / first:.4f}x of first")
    row(f"Library.share, {small_files} small files, first", tiny_first, small_files * TINY_FILE_SIZE,
        f"{small_files / tiny_first:.0f} files/s")
    row(f"Library.share, {small_files} small files, re-share", tiny_again, None,
        f"{tiny_again / tiny_first:.4f}x of first (bar <= {BAR_RESHARE}: {verdict(tiny_again / tiny_first <= BAR_RESHARE)})")
    print(f"peak RSS while sharing: {rss / 1e6:.0f} MB (first {rss_first / 1e6:.0f}, re-share {rss_again / 1e6:.0f},"
          f" small files {rss_tiny / 1e6:.0f}; bar <= {BAR_RSS / 1e6:.0f} MB: {verdict(rss <= BAR_RSS)})")
    print(f"index size: {index_size / 1e6:.1f} MB for {total / 1e9:.2f} GB + {small_files} small files")


if __name__ == "__main__":
    main()
