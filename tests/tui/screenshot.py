"""Write docs/tui.svg: the main screen over demo data. Run: .venv/bin/python tests/tui/screenshot.py"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tui_fakes import demo_client

from shoal.tui.app import make_app

OUT = Path(__file__).resolve().parents[2] / "docs" / "tui.svg"


async def main(tab: str) -> None:
    client = demo_client()
    app = make_app(client)
    async with app.run_test(size=(120, 32)) as pilot:
        while app.table("datasets").row_count < 5:
            await pilot.pause(0.01)
        gpu_a, nas = (client.peers[i]["peer_id"] for i in (0, 4))
        client.event("datasets", name="eval-suite", version=client.local[2]["head"])
        client.event("transfers", id=1, event="started", name="robot-trajectories", dest="/scratch/robot-trajectories")
        for done in (0, 1):  # two progress ticks a second apart, so per-peer rates show
            client.event("transfers", id=1, event="progress", name="robot-trajectories", phase="chunks",
                         bytes_total=48_000_000_000, bytes_done=19_400_000_000 + done * 230_000_000,
                         rate=230_000_000, eta=124.0,
                         peers={nas: {"received": 12_000_000_000 + done * 150_000_000, "dropped": None},
                                gpu_a: {"received": 7_400_000_000 + done * 80_000_000, "dropped": None}})
            await pilot.pause(1.0)
        client.event("transfers", id=2, event="started", name="speech-commands", dest="/scratch/speech-commands")
        client.event("transfers", id=2, event="done", name="speech-commands", dest="/scratch/speech-commands",
                     bytes_received=2_300_000_000, bytes_reused=0, version=client.remote[2]["head"])
        client.event("peers", change="online", peer={**client.peers[1], "online": True})
        await pilot.press(tab)
        await pilot.pause(0.5)
        OUT.parent.mkdir(exist_ok=True)
        app.save_screenshot(OUT.name, path=str(OUT.parent))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "2"))
