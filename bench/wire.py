"""Micro-benchmark of the peer wire hot path: 80 KiB DATA messages through two Connections.

Run: .venv/bin/python bench/wire.py [--rounds N]

Prints MB/s (10^6 bytes of DATA payload per second) for the sending side
(validate + encode + frame + encrypt) and the receiving side (decrypt + deframe
+ decode + request bookkeeping), each with the batching an I/O loop would use.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.protocol.wire.channel import Role
from shoal.protocol.wire.connection import NEED_DATA, Connection, MessageReceived, PeerAuthenticated
from shoal.protocol.wire.messages import MAX_CHUNK_IDS, PROTOCOL_VERSION, Data, End, GetChunks, Hello

PAYLOAD_SIZE = 80 * 1024
READ_SIZE = 64 * 1024


def drain(conn: Connection) -> list[object]:
    events = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, PeerAuthenticated):
            conn.accept()
    return events


def transfer(src: Connection, dst: Connection) -> list[object]:
    dst.receive_data(src.data_to_send())
    return drain(dst)


def connected_pair() -> tuple[Connection, Connection]:
    """(server, client) after handshake, authentication and HELLO."""
    client = Connection(Role.INITIATOR, Ed25519PrivateKey.generate())
    server = Connection(Role.RESPONDER, Ed25519PrivateKey.generate())
    client.start()
    transfer(client, server)
    transfer(server, client)
    transfer(client, server)
    server.send(Hello(PROTOCOL_VERSION, "bench", None))
    transfer(server, client)
    client.send(Hello(PROTOCOL_VERSION, "bench", None))
    transfer(client, server)
    return server, client


def request_round(server: Connection, client: Connection) -> tuple[int, tuple[bytes, ...]]:
    req = client.new_request_id()
    ids = tuple(os.urandom(32) for _ in range(MAX_CHUNK_IDS))
    client.send(GetChunks(req, ids))
    transfer(client, server)
    return req, ids


def send_round(server: Connection, req: int, ids: tuple[bytes, ...], payload: bytes, batch: int) -> tuple[float, list[bytes]]:
    """Seconds to queue and encrypt one DATA per id (plus END), and the wire bytes."""
    wire = []
    start = time.perf_counter()
    for i, object_id in enumerate(ids, start=1):
        server.send(Data(req, object_id, payload))
        if i % batch == 0:
            wire.append(server.data_to_send())
    server.send(End(req, ()))
    wire.append(server.data_to_send())
    return time.perf_counter() - start, wire


def receive_round(client: Connection, wire: bytes, read_size: int) -> float:
    """Seconds to decrypt and decode `wire` fed in `read_size` pieces, as socket reads would."""
    view = memoryview(wire)
    received = 0
    start = time.perf_counter()
    for offset in range(0, len(view), read_size):
        client.receive_data(view[offset : offset + read_size])
        received += sum(isinstance(e, MessageReceived) for e in drain(client))
    elapsed = time.perf_counter() - start
    if received != MAX_CHUNK_IDS + 1:
        raise RuntimeError(f"expected {MAX_CHUNK_IDS + 1} messages, got {received}")
    return elapsed


def measure(rounds: int, batch: int, read_size: int) -> tuple[float, float]:
    """(send MB/s, receive MB/s) over `rounds` requests of 256 chunks."""
    server, client = connected_pair()
    payload = os.urandom(PAYLOAD_SIZE)
    send_time = receive_time = 0.0
    for _ in range(rounds):
        req, ids = request_round(server, client)
        seconds, wire = send_round(server, req, ids, payload, batch)
        send_time += seconds
        receive_time += receive_round(client, b"".join(wire), read_size)
    total = rounds * MAX_CHUNK_IDS * PAYLOAD_SIZE / 1e6
    return total / send_time, total / receive_time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="requests of 256 chunks per row (default 20)")
    args = parser.parse_args(argv)
    rows: list[tuple[str, Callable[[], tuple[float, float]]]] = [
        ("drain per message, 64 KiB reads", lambda: measure(args.rounds, 1, READ_SIZE)),
        ("drain per 16 messages, 256 KiB reads", lambda: measure(args.rounds, 16, 4 * READ_SIZE)),
    ]
    print(f"DATA payload {PAYLOAD_SIZE // 1024} KiB, {args.rounds} x {MAX_CHUNK_IDS} messages per row")
    print(f"{'batching':<38} {'encode+encrypt MB/s':>20} {'decrypt+decode MB/s':>20}")
    for label, run in rows:
        send_rate, receive_rate = run()
        print(f"{label:<38} {send_rate:>20,.0f} {receive_rate:>20,.0f}")


if __name__ == "__main__":
    main()
