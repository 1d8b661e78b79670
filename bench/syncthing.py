"""Syncthing as a second reference: its scan and transfer beside shoal's share and fetch, one run.

Generates bench/fetch.py's dataset and, from a cold page cache each time, times:

* `cat` of every file (the disk's pace);
* shoal: A's first `share`, then B's full `shoal fetch` into an empty folder;
* Syncthing (the Debian package, `apt-get install syncthing`): A's first scan of
  the folder (send-only), then B (receive-only) pulling it into an empty folder,
  until B's folder is idle with nothing needed, plus `sync` (shoal's fetch ends
  with syncfs).

Syncthing runs on loopback only: static 127.0.0.1 addresses, global and local
discovery, relays, NAT traversal, STUN, usage reporting, crash reports and
upgrades all off; low CPU priority off, as shoal runs at normal priority. Each
timed step also reports the whole machine's CPU (/proc/stat, user + system).
Each copy is compared byte for byte with the source after the timed part.

    .venv/bin/python bench/syncthing.py [--size 2G] [--small-files N]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from data import cpu_model, cpu_since, machine_cpu, parse_size, print_failures
from fetch import DATASET, Daemon, compare_trees, drop_caches, free_port, make_dataset, tree_bytes, wait_remote
from switch import link

FOLDER = "bench"
#: Seconds between polls of Syncthing's REST API: short against the transfer, light on the CPU.
POLL = 0.1

_OPTIONS = {
    "globalAnnounceEnabled": "false",
    "localAnnounceEnabled": "false",
    "relaysEnabled": "false",
    "natEnabled": "false",
    "startBrowser": "false",
    "urAccepted": "-1",
    "autoUpgradeIntervalH": "0",
    "crashReportingEnabled": "false",
    "stunKeepaliveStartS": "0",
    "setLowPriority": "false",
}


class Syncthing:
    """One Syncthing instance with its own home, GUI/REST port and listen port on 127.0.0.1."""

    def __init__(self, label: str, home: Path) -> None:
        self.label = label
        self.home = home
        out = subprocess.run(["syncthing", "generate", f"--home={home}", "--no-default-folder"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=True).stdout
        self.id = next(line.split(": ", 1)[1].strip() for line in out.splitlines() if "Device ID:" in line)
        self.gui_port, self.port = free_port(), free_port()
        self.apikey = ""
        self.proc: subprocess.Popen | None = None

    def configure(self, peer: "Syncthing", path: Path, kind: str) -> None:
        """Options for a quiet loopback run; `peer` at its static address, paused; the folder, paused."""
        conf = self.home / "config.xml"
        tree = ET.parse(conf)
        root = tree.getroot()
        options = root.find("options")
        assert options is not None
        for key, value in _OPTIONS.items():
            element = options.find(key)
            if element is None:
                element = ET.SubElement(options, key)
            element.text = value
        listen = options.find("listenAddress")
        assert listen is not None
        listen.text = f"tcp://127.0.0.1:{self.port}"
        gui = root.find("gui")
        assert gui is not None
        gui.find("address").text = f"127.0.0.1:{self.gui_port}"  # type: ignore[union-attr]
        self.apikey = gui.find("apikey").text or ""  # type: ignore[union-attr]
        device = ET.SubElement(root, "device", id=peer.id, name=peer.label, compression="never")
        ET.SubElement(device, "address").text = f"tcp://127.0.0.1:{peer.port}"
        ET.SubElement(device, "paused").text = "true"
        folder = ET.SubElement(root, "folder", id=FOLDER, label=FOLDER, path=str(path), type=kind,
                               rescanIntervalS="0", fsWatcherEnabled="false")
        ET.SubElement(folder, "device", id=self.id)
        ET.SubElement(folder, "device", id=peer.id)
        ET.SubElement(folder, "paused").text = "true"
        tree.write(conf)

    def start(self) -> None:
        env = {**os.environ, "STNOUPGRADE": "1", "STNORESTART": "1"}
        self.proc = subprocess.Popen(
            ["syncthing", "serve", f"--home={self.home}", "--no-browser", "--no-restart"],
            stdout=open(self.home / "log.txt", "wb"), stderr=subprocess.STDOUT, env=env,  # noqa: SIM115
        )
        wait_for(lambda: self._ping(), 30, f"Syncthing {self.label} did not answer on 127.0.0.1:{self.gui_port}")

    def _ping(self) -> bool:
        try:
            return self.rest("GET", "/rest/system/ping").get("ping") == "pong"
        except OSError:
            return False

    def rest(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.gui_port}{path}", data=data, method=method,
                                         headers={"X-API-Key": self.apikey, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            text = reply.read()
        return json.loads(text) if text.strip() else {}

    def resume_folder(self) -> None:
        self.rest("PATCH", f"/rest/config/folders/{FOLDER}", {"paused": False})

    def resume_device(self, peer: "Syncthing") -> None:
        self.rest("PATCH", f"/rest/config/devices/{peer.id}", {"paused": False})

    def status(self) -> dict:
        return self.rest("GET", f"/rest/db/status?folder={FOLDER}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.rest("POST", "/rest/system/shutdown")
            self.proc.wait(20)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def wait_for(ready: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        time.sleep(POLL)


def timed(step: Callable[[], None], drop: bool) -> tuple[float, float]:
    """(seconds, machine CPU seconds) of `step`, from a cold page cache."""
    drop_caches(drop)
    cpu = machine_cpu()
    start = time.perf_counter()
    step()
    return time.perf_counter() - start, sum(cpu_since(cpu))


def syncthing_run(work: Path, data: Path, files: int, drop: bool) -> dict[str, tuple[float, float]]:
    dest = work / "dest-syncthing"
    dest.mkdir()
    a, b = Syncthing("A", work / "st-a"), Syncthing("B", work / "st-b")
    a.configure(b, data, "sendonly")
    b.configure(a, dest, "receiveonly")
    out: dict[str, tuple[float, float]] = {}
    try:
        a.start()

        def scan() -> None:
            a.resume_folder()
            wait_for(lambda: _idle_with(a.status(), files), 3600, "Syncthing A never finished its scan")

        out["scan"] = timed(scan, drop)
        b.start()
        b.resume_folder()
        a.resume_device(b)

        def pull() -> None:
            b.resume_device(a)
            wait_for(lambda: _idle_with(b.status(), files), 3600, "Syncthing B never finished pulling")
            os.sync()

        out["transfer"] = timed(pull, drop)
    finally:
        a.stop()
        b.stop()
    check_copy("Syncthing", data, dest)
    return out


def check_copy(tool: str, data: Path, dest: Path) -> None:
    problems = compare_trees(data, dest)
    if problems:
        raise RuntimeError(f"{tool}'s copy differs from the source: " + "; ".join(problems[:10]))


def _idle_with(status: dict, files: int) -> bool:
    return status.get("state") == "idle" and status.get("localFiles") == files and status.get("needFiles") == 0


def shoal_run(work: Path, data: Path, drop: bool) -> dict[str, tuple[float, float]]:
    a, b = Daemon("A", work / "shoal" / "a"), Daemon("B", work / "shoal" / "b")
    dest = work / "dest-shoal"
    out: dict[str, tuple[float, float]] = {}
    try:
        a.start()
        b.start()
        link([a, b])
        out["share"] = timed(lambda: a.run("share", str(data), "--name", DATASET, "--no-keep", timeout=3600), drop)
        wait_remote(b, 1)
        out["fetch"] = timed(lambda: b.run("fetch", DATASET, str(dest), timeout=3600), drop)
    finally:
        a.stop()
        b.stop()
    check_copy("shoal", data, dest)
    return out


def cat_all(data: Path) -> None:
    subprocess.run(["sh", "-c", 'find "$1" -type f -print0 | xargs -0 cat > /dev/null', "-", str(data)], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2G", help="dataset size, e.g. 2G, 1G (default 2G)")
    parser.add_argument("--small-files", type=int, metavar="N", help="small files (default ~10,000 per 2 GB)")
    parser.add_argument("--no-drop-caches", action="store_true")
    args = parser.parse_args()
    if shutil.which("syncthing") is None:
        print("syncthing is not installed: apt-get install syncthing", file=sys.stderr)
        return 1
    drop = not args.no_drop_caches and os.geteuid() == 0
    # Short: shoal's control socket paths must stay under 108 bytes.
    work = Path(tempfile.mkdtemp(prefix="shoal-st-", dir="/tmp"))
    failures: list[str] = []
    rows: dict[str, tuple[float, float]] = {}
    try:
        data = work / "data"
        make_dataset(data, parse_size(args.size), args.small_files)
        files, size = tree_bytes(data)
        rows["cat every file"] = timed(lambda: cat_all(data), drop)
        runs: list[tuple[str, Callable[[], dict[str, tuple[float, float]]]]] = [
            ("shoal", lambda: shoal_run(work, data, drop)),
            ("Syncthing", lambda: syncthing_run(work, data, files, drop)),
        ]
        for label, run in runs:
            print(f"{label} ...", file=sys.stderr)
            try:
                steps = run()
                rows.update({f"{label} {step}": figures for step, figures in steps.items()})
            except (RuntimeError, OSError) as e:
                failures.append(f"{label}: {e}")
        version = subprocess.run(["syncthing", "--version"], capture_output=True, text=True).stdout.split()[1]
        print(f"shoal and Syncthing {version} on {cpu_model()} x {os.cpu_count()}, loopback; {files} files,"
              f" {size / 1e9:.2f} GB; page cache " + ("dropped before each step" if drop else "NOT dropped"))
        print(f"{'step':<22} {'time':>9} {'MB/s':>7} {'machine CPU':>12}")
        for step, (seconds, cpu) in rows.items():
            print(f"{step:<22} {seconds:>7.2f} s {size / seconds / 1e6:>7.0f} {cpu:>10.2f} s")
        print("shoal fetch ends with syncfs; the Syncthing transfer is timed until B is idle with nothing needed,"
              " then `sync`")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_failures(failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
