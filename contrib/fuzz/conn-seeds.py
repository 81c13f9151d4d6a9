#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Writes seed inputs for tests/fuzz/fuzz_conn.c (its script format, see the file's header)
into the folder given as argument: ordinary exchanges that the fuzzer then mutates."""
import os
import struct
import sys


def data(op, b):
    """A data event: op 0 (client) or 1 (backend), with its length split over two bytes."""
    out = b""
    while b:
        piece, b = b[:8191], b[8191:]
        out += bytes([op | ((len(piece) >> 8) << 3), len(piece) & 0xFF]) + piece
    return out


def c(b):
    return data(0, b)


def s(b):
    return data(1, b)


CLIENT_SHUT, BACKEND_SHUT, CLIENT_CLOSE, BACKEND_CLOSE, EXPIRE = b"\x02", b"\x03", b"\x04", b"\x05", b"\x06"
REFUSE, TOGGLE_READ = b"\x07", b"\x87"
GET = b"GET /owa/ HTTP/1.1\r\nHost: h\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
PP1 = b"PROXY TCP4 203.0.113.7 192.0.2.1 5555 443\r\n"
PP2 = (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11" + struct.pack(">H", 12 + 8) + bytes([203, 0, 113, 7, 192, 0, 2, 1])
       + struct.pack(">HH", 5555, 443) + b"\x20\x00\x05\x01\x00\x00\x00\x00")
RPC_IN = (b"RPC_IN_DATA /rpc/rpcproxy.dll?ex:6001 HTTP/1.1\r\nHost: h\r\nContent-Length: 1073741824\r\n\r\n"
          + bytes(32) + bytes(range(16)) + bytes(56))
SEEDS = {
    "get": b"\x00" + c(GET) + s(OK),
    "get-chunked": b"\x00" + c(GET) + s(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    "get-close": b"\x00" + c(GET) + s(b"HTTP/1.0 200 OK\r\n\r\nbody") + BACKEND_SHUT,
    "keepalive-2": b"\x00" + c(GET) + s(OK) + c(b"GET /x HTTP/1.1\r\nHost: other\r\n\r\n") + s(OK),
    "pipelined": b"\x00" + c(GET + GET) + s(OK) + s(OK),
    "post": b"\x00" + c(b"POST /ews/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello") + s(OK),
    "post-chunked": b"\x00" + c(b"POST /mapi/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n") + s(OK),
    "expect": b"\x00" + c(b"POST /ews/ HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
              + s(b"HTTP/1.1 100 Continue\r\n\r\n") + c(b"abc") + s(OK),
    "rpc-in": b"\x00" + c(RPC_IN) + s(b"HTTP/1.1 503 RPC Error\r\nContent-Length: 0\r\n\r\n") + CLIENT_CLOSE,
    "rpc-out": b"\x00" + c(b"RPC_OUT_DATA /rpc/rpcproxy.dll?ex:6001 HTTP/1.1\r\nHost: h\r\nContent-Length: 76\r\n\r\n" + bytes(76))
               + s(b"HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\nContent-Length: 1073741824\r\n\r\n" + bytes(28)),
    "upgrade": b"\x00" + c(b"GET /ews/ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
               + s(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n") + c(b"ping") + s(b"pong"),
    "http10": b"\x00" + c(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") + s(OK),
    "apache-route": b"\x00" + c(b"HEAD /index.html HTTP/1.1\r\nHost: h\r\n\r\n") + s(OK),
    "switch-backend": b"\x00" + c(GET) + s(OK) + c(b"GET /x HTTP/1.1\r\nHost: other\r\n\r\n") + s(OK) + c(GET) + s(OK),
    "bad-head": b"\x00" + c(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
    "proxyshell": b"\x00" + c(b"GET /autodiscover/autodiscover.json?@x.com/mapi/nspi/?&Email=autodiscover/autodiscover.json%3f@x.com HTTP/1.1\r\nHost: h\r\n\r\n"),
    "basic-401": b"\x00" + c(b"GET /owa/ HTTP/1.1\r\nHost: h\r\nAuthorization: Basic dXNlcjpwYXNz\r\n\r\n")
                 + s(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"),
    "timeout-head": b"\x00" + c(b"GET / HT") + EXPIRE,
    "timeout-response": b"\x00" + c(GET) + EXPIRE,
    "timeout-idle": b"\x00" + c(GET) + s(OK) + EXPIRE,
    "refused": b"\x00" + REFUSE + c(GET) + s(OK),
    "backend-cut": b"\x00" + c(GET) + s(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc") + BACKEND_CLOSE,
    "client-shut": b"\x00" + c(GET) + CLIENT_SHUT + s(OK),
    "slow-reader": b"\x00" + TOGGLE_READ + c(GET) + s(b"HTTP/1.1 200 OK\r\nContent-Length: 30000\r\n\r\n" + bytes(30000)) + TOGGLE_READ,
    "pp1": b"\x01" + c(PP1 + GET) + s(OK),
    "pp2": b"\x01" + c(PP2 + GET) + s(OK),
    "pp-optional": b"\x02" + c(GET) + s(OK),
    "pp-untrusted": b"\x09" + c(PP1 + GET),
    "health-path": b"\x03" + c(b"GET /hc HTTP/1.1\r\nHost: h\r\n\r\n"),
    "admin-metrics": b"\x04" + c(b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n"),
    "admin-health": b"\x04" + c(b"HEAD /health HTTP/1.0\r\n\r\n"),
}

if __name__ == "__main__":
    os.makedirs(sys.argv[1], exist_ok=True)
    for name, blob in SEEDS.items():
        with open(os.path.join(sys.argv[1], name), "wb") as f:
            f.write(blob)
