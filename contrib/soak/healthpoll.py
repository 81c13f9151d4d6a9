#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
healthpoll.py: polls exrelay's GET /health every 100 ms for contrib/soak/soak.py, in a process of
its own (so the soak's busy client loop cannot delay it). Each answer ("ok" or "draining", any
status) appends "MONOTONIC_TIME STATUS" to OUTFILE; a failed poll appends "MONOTONIC_TIME fail
REASON". Runs until SIGTERM, or DEADLINE seconds at most.

Usage: healthpoll.py PORT OUTFILE DEADLINE
"""

import signal
import socket
import sys
import time


def poll(port, timeout=2.0):
    """One GET /health; returns the status line's code as text, or raises OSError/ValueError."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
        data = b""
        deadline = time.monotonic() + timeout
        while b"\r\n" not in data and time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            piece = s.recv(256)
            if not piece:
                break
            data += piece
    parts = data.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ValueError("no status line: %r" % data[:60])
    return parts[1].decode()


def main():
    """Polls until SIGTERM or the deadline."""
    port, out, limit = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    end = time.monotonic() + limit
    with open(out, "a", buffering=1) as f:
        nxt = time.monotonic()
        while not stop and time.monotonic() < end:
            try:
                f.write("%.4f %s\n" % (time.monotonic(), poll(port)))
            except (OSError, ValueError) as e:
                f.write("%.4f fail %s\n" % (time.monotonic(), type(e).__name__))
            nxt += 0.1
            time.sleep(max(0.0, nxt - time.monotonic()))
            if nxt < time.monotonic() - 1.0:
                nxt = time.monotonic()


if __name__ == "__main__":
    main()
