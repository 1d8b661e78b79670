"""`shoal status` start-up cost against the bar: <= 2 x `python -c pass` + the socket round trip.

Starts a daemon in a temporary home, compiles shoal's bytecode first (as an
installed package has it), then times both commands interleaved and prints one
table. Run: .venv/bin/python bench/startup.py [--runs 40]
"""

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHOAL = [sys.executable, "-m", "shoal"]


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True, env=env)
    return (time.perf_counter() - start) * 1000


def round_trip_ms(home: Path, env: dict[str, str]) -> float:
    code = (
        "import statistics, time\n"
        "from shoal.client.blocking import ControlClient\n"
        f"c = ControlClient.connect(__import__('pathlib').Path({str(home / 'control.sock')!r}))\n"
        "xs = []\n"
        "for _ in range(50):\n"
        "    t = time.perf_counter(); c.call('status'); xs.append((time.perf_counter() - t) * 1000)\n"
        "print(statistics.median(xs))\n"
    )
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    compileall.compile_dir(REPO / "shoal", quiet=1)
    home = Path(tempfile.mkdtemp(prefix="shoal-start-", dir="/tmp"))
    (home / "config.toml").write_text('listen = "127.0.0.1:0"\ndiscovery = false\n')
    shoal = [*SHOAL, "--home", str(home)]
    try:
        subprocess.run([*shoal, "daemon", "start"], check=True, capture_output=True, env=env)
        timed([*shoal, "status"], env)
        bare, status = [], []
        for _ in range(args.runs):
            bare.append(timed([sys.executable, "-c", "pass"], env))
            status.append(timed([*shoal, "status"], env))
        rtt = round_trip_ms(home, env)
    finally:
        subprocess.run([*shoal, "daemon", "stop"], capture_output=True, env=env)
        shutil.rmtree(home, ignore_errors=True)
    p, s = statistics.median(bare), statistics.median(status)
    bar = 2 * p + rtt
    print(f"command: {' '.join(sys.argv)}")
    print(f"{'measurement':<34}{'median ms':>10}{'min ms':>9}")
    print(f"{'python -c pass':<34}{p:>10.1f}{min(bare):>9.1f}")
    print(f"{'shoal status (daemon running)':<34}{s:>10.1f}{min(status):>9.1f}")
    print(f"{'status round trip on the socket':<34}{rtt:>10.2f}")
    print(f"bar: status <= 2 x {p:.1f} + {rtt:.2f} = {bar:.1f} ms -> {'ok' if s <= bar else 'MISSED'} ({s / p:.2f}x)")


if __name__ == "__main__":
    main()
