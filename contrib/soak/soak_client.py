# SPDX-License-Identifier: BSD-2-Clause
"""
soak_client.py: the chaos soak's minimal HTTP/1.1 client over asyncio streams (contrib/soak/soak.py):
Client (one connection through HAProxy from a chosen source address, counting bytes in BOOK),
Resp (a response head and who produced it), Cut (the peer ended a message early), and the
request builders req, chunked and sha.
"""

import asyncio
import hashlib
import random
import socket
import struct
import time

from soak_book import BOOK, T_IO


# ----------------------------------------------------------------------------------------------
# A minimal HTTP/1.1 client over asyncio streams
# ----------------------------------------------------------------------------------------------

class Cut(Exception):
    """The peer closed or reset the connection before the framing said the message ended."""


class Resp:
    """A response head: status, headers (lower-case names -> last value), raw."""

    def __init__(self, raw):
        """Parses the head bytes (status line to the blank line)."""
        self.raw = raw
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ValueError("bad status line %r" % lines[0][:80])
        self.status = int(parts[1])
        self.headers = {}
        for line in lines[1:]:
            if line:
                n, _, v = line.partition(":")
                self.headers[n.strip().lower()] = v.strip()

    def h(self, name):
        """The value of header `name` (lower case), or None."""
        return self.headers.get(name)

    @property
    def origin(self):
        """Who produced the response: a stand-in name, "apache", or "relay"."""
        if self.h("x-standin-name"):
            return self.h("x-standin-name")
        if "apache" in (self.h("server") or "").lower():
            return "apache"
        return "relay"


class Client:
    """One TCP connection through HAProxy (or straight to a port), from a chosen source address."""

    def __init__(self, reader, writer, src):
        """Wraps an open stream pair."""
        self.r, self.w, self.src = reader, writer, src

    @classmethod
    async def open(cls, port, src=None, timeout=T_IO):
        """Connects to 127.0.0.1:port from src (random 127.0.0.x when None)."""
        src = src or "127.0.0.%d" % random.randint(2, 250)
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0),
                                                              limit=1 << 20), timeout)
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(r, w, src)

    async def send(self, data):
        """Writes data (bounded wait for the buffer to drain)."""
        self.w.write(data)
        BOOK.bytes_out += len(data)
        await asyncio.wait_for(self.w.drain(), T_IO)

    async def head(self, timeout=T_IO):
        """Reads a final response head (1xx skipped). Cut on EOF."""
        while True:
            try:
                raw = await asyncio.wait_for(self.r.readuntil(b"\r\n\r\n"), timeout)
            except asyncio.IncompleteReadError as e:
                raise Cut("EOF before a response head (%d bytes)" % len(e.partial))
            except ConnectionError as e:
                raise Cut("reset before a response head: %s" % e)
            BOOK.bytes_in += len(raw)
            resp = Resp(raw)
            if resp.status >= 200 or resp.status == 101:
                return resp

    async def exactly(self, n, timeout=T_IO):
        """Reads exactly n bytes; Cut on EOF or reset."""
        try:
            data = await asyncio.wait_for(self.r.readexactly(n), timeout)
        except asyncio.IncompleteReadError as e:
            raise Cut("EOF after %d of %d bytes" % (len(e.partial), n))
        except ConnectionError as e:
            raise Cut("reset: %s" % e)
        BOOK.bytes_in += n
        return data

    async def some(self, n=65536, timeout=T_IO):
        """Reads up to n bytes (b"" at EOF)."""
        try:
            data = await asyncio.wait_for(self.r.read(n), timeout)
        except ConnectionError as e:
            raise Cut("reset: %s" % e)
        BOOK.bytes_in += len(data)
        return data

    async def body(self, resp, method="GET", sink=None, slow=0.0):
        """Reads the body by its framing and returns it (or feeds `sink` and returns b"").
        Cut when the connection ends before the framing does; `slow` sleeps between 8 KiB reads."""
        if method == "HEAD" or resp.status in (204, 304):
            return b""
        out = []

        def take(data):
            if sink:
                sink(data)
            else:
                out.append(data)
        if (resp.h("transfer-encoding") or "").lower() == "chunked":
            while True:
                try:
                    line = await asyncio.wait_for(self.r.readuntil(b"\r\n"), T_IO)
                except asyncio.IncompleteReadError:
                    raise Cut("EOF inside chunked framing")
                except ConnectionError as e:
                    raise Cut("reset in chunked framing: %s" % e)
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while (await self.exactly(2)) != b"\r\n":      # trailers: none expected
                        await asyncio.wait_for(self.r.readuntil(b"\r\n"), T_IO)
                    return b"".join(out)
                take(await self.exactly(size))
                if await self.exactly(2) != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
        cl = resp.h("content-length")
        if cl is None:
            raise ValueError("response without framing (status %d)" % resp.status)
        left = int(cl)
        while left:
            data = await self.exactly(min(left, 8192 if slow else 262144))
            take(data)
            left -= len(data)
            if slow:
                await asyncio.sleep(slow)
        return b"".join(out)

    async def closed(self, timeout=10.0):
        """True when the peer closes (EOF or reset) within timeout, discarding what comes."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                data = await asyncio.wait_for(self.r.read(65536), max(0.01, deadline - time.monotonic()))
                if not data:
                    return True
        except ConnectionError:
            return True
        except asyncio.TimeoutError:
            return False
        return False

    def reset(self):
        """Closes with a TCP RST (SO_LINGER 0)."""
        sock = self.w.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.w.transport.abort()

    def close(self):
        """Closes the connection (FIN)."""
        try:
            self.w.close()
        except Exception:  # noqa: BLE001 - closing never fails the run
            pass


def req(method, target, headers=(), body=b"", version="HTTP/1.1", host="mail.example.com"):
    """Request bytes."""
    hs = [("Host", host)] + list(headers)
    if body and not any(n.lower() in ("content-length", "transfer-encoding") for n, _ in hs):
        hs.append(("Content-Length", str(len(body))))
    return ("%s %s %s\r\n" % (method, target, version) + "".join("%s: %s\r\n" % h for h in hs) + "\r\n").encode() + body


def chunked(body, piece=7000):
    """A body in chunked framing."""
    out = b""
    for i in range(0, len(body), piece):
        out += b"%x\r\n" % len(body[i:i + piece]) + body[i:i + piece] + b"\r\n"
    return out + b"0\r\n\r\n"


def sha(data):
    """SHA-256 hex."""
    return hashlib.sha256(data).hexdigest()
