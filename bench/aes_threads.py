"""AES-256-GCM for shoal's records: cryptography's rate in one and two threads, and the
system OpenSSL's, in one run.

shoal seals and opens its 64 KiB records with cryptography's AESGCM, in worker
threads (shoal.daemon.net.record_pump): that scales across cores only if the calls
release the GIL, and is the right choice over a C loop of our own only if the
OpenSSL cryptography bundles is not slower than the system's libcrypto that the C
loop would link. This prints, for records of 65,519 bytes:

* cryptography, one thread: GB/s;
* cryptography, two threads at once: GB/s together, and the speed-up over one;
* the system's OpenSSL (`openssl speed -evp aes-256-gcm -bytes 65536`), one thread.

    .venv/bin/python bench/aes_threads.py [--seconds 2]
"""

import argparse
import os
import re
import shutil
import subprocess
import threading
import time

from cryptography.hazmat.backends.openssl import backend
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from data import cpu_model

RECORD = 65535 - 16


def seal_for(seconds: float, counts: list[int], slot: int) -> None:
    aead = AESGCM(os.urandom(32))
    plaintext = memoryview(os.urandom(RECORD))
    out = bytearray(RECORD + 16)
    nonce = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(64):
            aead.encrypt_into(nonce.to_bytes(12, "big"), plaintext, None, out)
            nonce += 1
    counts[slot] = nonce


def rate(threads: int, seconds: float) -> float:
    """GB/s sealed by `threads` threads together."""
    counts = [0] * threads
    workers = [threading.Thread(target=seal_for, args=(seconds, counts, i)) for i in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) * RECORD / (time.perf_counter() - start) / 1e9


def system_rate(seconds: float) -> tuple[str, float | None]:
    """The system OpenSSL's version and GB/s for 64 KiB AES-256-GCM, if `openssl` is installed."""
    if shutil.which("openssl") is None:
        return "openssl not installed", None
    version = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
    done = subprocess.run(
        ["openssl", "speed", "-evp", "aes-256-gcm", "-bytes", "65536", "-seconds", str(int(seconds))],
        capture_output=True, text=True,
    )
    found = re.search(r"^AES-256-GCM\s+([\d.]+)k", done.stdout, re.MULTILINE)
    return version, float(found.group(1)) * 1000 / 1e9 if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    one = rate(1, args.seconds)
    two = rate(2, args.seconds)
    version, system = system_rate(args.seconds)
    rows = [
        (f"cryptography ({backend.openssl_version_text()}), 1 thread", f"{one:5.2f}"),
        ("cryptography, 2 threads together", f"{two:5.2f}  ({two / one:.2f}x one thread)"),
        (f"system {version.split(' (')[0]}, 1 thread", f"{system:5.2f}" if system is not None else "  n/a"),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs; records of {RECORD} bytes, {args.seconds:.0f} s each")
    print()
    print(f"{'AES-256-GCM sealing':{width}} | GB/s")
    print("-" * width + "-|------")
    for label, value in rows:
        print(f"{label:{width}} | {value}")


if __name__ == "__main__":
    main()
