"""Measure TCP throughput between two lab hosts; stdlib only so it starts fast.

usage: tcp_rate.py recv HOST PORT SECONDS   prints "listening", then after the first byte
                                             counts for SECONDS and prints {"bits_per_second": ...}
       tcp_rate.py send HOST PORT           sends zeros until the receiver hangs up
"""

import json
import socket
import sys
import time

BLOCK = bytes(1 << 20)


def receive(host: str, port: int, seconds: float) -> None:
    with socket.create_server((host, port)) as server:
        print("listening", flush=True)
        connection, _ = server.accept()
    with connection:
        # Timed from the first byte so process start-up and connection set-up do not count.
        connection.recv(1 << 20)
        start = time.monotonic()
        received = 0
        deadline = start + seconds
        while (now := time.monotonic()) < deadline:
            connection.settimeout(deadline - now)
            try:
                chunk = connection.recv(1 << 20)
            except TimeoutError:
                break
            if not chunk:
                break
            received += len(chunk)
        elapsed = time.monotonic() - start
    print(json.dumps({"bits_per_second": received * 8 / elapsed}), flush=True)


def send(host: str, port: int) -> None:
    with socket.create_connection((host, port)) as connection:
        try:
            while True:
                connection.sendall(BLOCK)
        except (BrokenPipeError, ConnectionResetError):
            pass


if __name__ == "__main__":
    if sys.argv[1] == "recv":
        receive(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        send(sys.argv[2], int(sys.argv[3]))
