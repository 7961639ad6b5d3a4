"""A small TCP probe for the packet-path bench, run inside network namespaces with the system's
``python3`` (no third-party imports).

``netprobe.py server PORT`` answers on PORT: a connection's first byte says what it is (``T``:
throughput, read until EOF; ``L``: latency, echo every byte; ``C``: connection rate, close at
once).  ``netprobe.py client MODE HOST PORT SECONDS`` prints one JSON object:
``{"bytes_per_s": ...}``, ``{"rtt_us_median": ..., "rtt_us_p99": ...}`` or
``{"connects_per_s": ...}``.  Every new connection walks the firewall's rules (later packets of
it are conntrack's "established"), so the connection rate is where ACLs cost.
"""

from __future__ import annotations

import json
import socket
import statistics
import sys
import threading
import time

CHUNK = 256 * 1024


def _serve_one(conn: socket.socket) -> None:
    with conn:
        mode = conn.recv(1)
        if mode == b"T":
            while conn.recv(CHUNK):
                pass
        elif mode == b"L":
            while True:
                got = conn.recv(1)
                if not got:
                    break
                conn.sendall(got)


def server(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(512)
        while True:
            conn, _ = sock.accept()
            threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def client(mode: str, host: str, port: int, seconds: float) -> dict[str, float]:
    if mode == "throughput":
        data = b"x" * CHUNK
        with _connect(host, port) as sock:
            sock.sendall(b"T")
            sent, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                sock.sendall(data)
                sent += len(data)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(1)  # EOF: the server read everything
            return {"bytes_per_s": sent / (time.perf_counter() - t0)}
    if mode == "latency":
        rtts = []
        with _connect(host, port) as sock:
            sock.sendall(b"L")
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                sock.sendall(b"p")
                sock.recv(1)
                rtts.append((time.perf_counter() - t0) * 1e6)
        rtts.sort()
        return {"rtt_us_median": statistics.median(rtts),
                "rtt_us_p99": rtts[int(len(rtts) * 0.99)]}  # fmt: skip
    if mode == "connect":
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            with _connect(host, port) as sock:
                sock.sendall(b"C")
                sock.recv(1)  # EOF
            count += 1
        return {"connects_per_s": count / (time.perf_counter() - t0)}
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]))
    else:
        print(json.dumps(client(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))))
