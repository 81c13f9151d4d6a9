#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_relay_upgrade.py: Upgrade / 101 Switching Protocols tunnels through exrelay (TAP).

A small backend written here answers `Upgrade: websocket` requests with 101 and then echoes
every byte, passing a half-close on; exrelay must relay the 101 with its Upgrade and
Connection fields, then carry raw bytes both ways until each side ends. A 101 to a request
that did not ask to upgrade is a broken backend: 502. A refused upgrade (plain 200) is an
ordinary response on a keep-alive connection.
"""

import os
import socket
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import ok, is_, diag, done, start_exrelay  # noqa: E402
import rpch  # noqa: E402


def read_head(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            return None, b""
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def serve(conn):
    """One backend connection: 101 + echo for Upgrade requests, else 200 or a rogue 101."""
    with conn:
        conn.settimeout(10)
        while True:
            head, rest = read_head(conn)
            if head is None:
                return
            lines = head.split("\r\n")
            target = lines[0].split(" ")[1]
            hdrs = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
            if target == "/rogue":
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                return
            if hdrs.get("upgrade") != "websocket" or target == "/refuse":
                body = b"no upgrade\n"
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                continue
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" + rest)
            while True:
                data = conn.recv(65536)
                if not data:
                    conn.sendall(b"bye")
                    conn.shutdown(socket.SHUT_WR)
                    return
                conn.sendall(data)


backend = socket.socket()
backend.bind(("127.0.0.1", 0))
backend.listen(16)
bport = backend.getsockname()[1]


def accept_loop():
    while True:
        try:
            c, _ = backend.accept()
        except OSError:
            return
        threading.Thread(target=serve, args=(c,), daemon=True).start()


threading.Thread(target=accept_loop, daemon=True).start()

relay = start_exrelay("""
global = { drain_timeout = 2; };
listeners = ( { name = "public"; bind = "127.0.0.1:0"; } );
backends = ( { name = "ws"; servers = [ "127.0.0.1:%d" ]; idle_timeout = 10; } );
routes = ( { backend = "ws"; } );
""" % bport)
port = relay.port("public")

# 1. A tunnel: 101 relayed, bytes both ways, half-close passed on.
with rpch.HttpConn("127.0.0.1", port, timeout=10) as c:
    c.send(b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nearly")
    resp = c.read_head()
    is_(resp.status, 101, "101 Switching Protocols reaches the client")
    is_((resp.header("Upgrade"), (resp.header("Connection") or "").lower()), ("websocket", "upgrade"),
        "the 101 keeps Upgrade and Connection: Upgrade")
    is_(c.read_exact(5), b"early", "bytes sent right behind the request head go through the tunnel")
    for i in range(3):
        msg = b"message %d " % i * 100
        c.send(msg)
        is_(c.read_exact(len(msg)), msg, "tunnel round trip %d (%d bytes)" % (i, len(msg)))
    c.sock.shutdown(socket.SHUT_WR)
    is_(c.read_until_close(), b"bye", "the client's half-close reaches the backend, whose reply and end come back")

# 2. A refused upgrade is an ordinary response; the connection stays usable.
with rpch.HttpConn("127.0.0.1", port, timeout=10) as c:
    resp, body = c.request("GET", "/refuse", [("Host", "x"), ("Upgrade", "websocket"), ("Connection", "Upgrade")])
    is_((resp.status, body), (200, b"no upgrade\n"), "a refused upgrade is a plain 200")
    resp, body = c.request("GET", "/again", [("Host", "x")])
    is_(resp.status, 200, "and the connection carries the next request")

# 3. 101 without an Upgrade request: 502.
with rpch.HttpConn("127.0.0.1", port, timeout=10) as c:
    resp, body = c.request("GET", "/rogue", [("Host", "x")])
    is_(resp.status, 502, "a 101 to a request that did not ask to upgrade is refused with 502")

ok(relay.alive(), "exrelay still running")
relay.stop()
is_(relay.returncode, 0, "exrelay exits 0")
ok("runtime error" not in relay.stderr_text() and "Sanitizer" not in relay.stderr_text(), "no sanitizer reports")
backend.close()
done()
