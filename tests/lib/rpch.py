# SPDX-License-Identifier: BSD-2-Clause
"""
rpch.py: client-side helpers for exrelay's integration tests (Python 3 standard library only).

What is here:
  * RTS PDUs of RPC over HTTP v2 ([MS-RPCH] 2.2.3.5 / 2.2.4): builders for CONN/A1 (76 bytes),
    CONN/B1 (104 bytes), CONN/A3 (28), CONN/C2 (44), Echo and Ping (20 each), and a generic
    parser with checks for A3 and C2. All integers are little-endian (data representation 0x10).
  * The deterministic byte pattern used by the Exchange stand-in ("source" mode and `?len=N`):
    `Pattern` generates it at memcpy speed, `PatternVerifier` checks a stream of it byte for byte
    without storing it.
  * NTLM tokens for leg 1 and leg 3 (`ntlm_type1`, `ntlm_type3`): real NEGOTIATE and NTLMv2
    AUTHENTICATE messages from ntlm.py, which the stand-in verifies against per-user passwords.
  * `HttpConn`: a raw HTTP/1.x client over one socket (optionally TLS) where every read has a
    deadline: send heads and bodies byte for byte, read response heads (1xx included), exact byte
    counts, chunked bodies chunk by chunk.

The stand-in (tests/standin/exchange.py) imports this module too, so both ends share one definition
of the PDUs and of the pattern.
"""

import base64
import hashlib
import os
import socket
import struct
import time

import ntlm

# ----------------------------------------------------------------------------------------------
# RTS PDUs
# ----------------------------------------------------------------------------------------------

PTYPE_RTS = 20
PFC_FIRST_LAST = 0x03          # PFC_FIRST_FRAG | PFC_LAST_FRAG
DREP = b"\x10\x00\x00\x00"     # little-endian integers, ASCII, IEEE floats

# RTS header flags ([MS-RPCH] 2.2.3.5.1 RTS_FLAG_*)
RTS_FLAG_NONE = 0x0000
RTS_FLAG_PING = 0x0001
RTS_FLAG_OTHER_CMD = 0x0002
RTS_FLAG_RECYCLE_CHANNEL = 0x0004
RTS_FLAG_IN_CHANNEL = 0x0008
RTS_FLAG_OUT_CHANNEL = 0x0010
RTS_FLAG_EOF = 0x0020
RTS_FLAG_ECHO = 0x0040

# RTS command types ([MS-RPCH] 2.2.3.5)
CMD_RECEIVE_WINDOW_SIZE = 0x0
CMD_FLOW_CONTROL_ACK = 0x1
CMD_CONNECTION_TIMEOUT = 0x2
CMD_COOKIE = 0x3
CMD_CHANNEL_LIFETIME = 0x4
CMD_CLIENT_KEEPALIVE = 0x5
CMD_VERSION = 0x6
CMD_EMPTY = 0x7
CMD_PADDING = 0x8
CMD_NEGATIVE_ANCE = 0x9
CMD_ANCE = 0xA
CMD_CLIENT_ADDRESS = 0xB
CMD_ASSOCIATION_GROUP_ID = 0xC
CMD_DESTINATION = 0xD
CMD_PING_TRAFFIC_SENT_NOTIFY = 0xE

# Fixed payload sizes of the commands (Padding and ClientAddress are variable, handled apart).
_CMD_SIZE = {
    CMD_RECEIVE_WINDOW_SIZE: 4, CMD_FLOW_CONTROL_ACK: 24, CMD_CONNECTION_TIMEOUT: 4,
    CMD_COOKIE: 16, CMD_CHANNEL_LIFETIME: 4, CMD_CLIENT_KEEPALIVE: 4, CMD_VERSION: 4,
    CMD_EMPTY: 0, CMD_NEGATIVE_ANCE: 0, CMD_ANCE: 0, CMD_ASSOCIATION_GROUP_ID: 16,
    CMD_DESTINATION: 4, CMD_PING_TRAFFIC_SENT_NOTIFY: 4,
}

# Sizes the protocol fixes for the first messages.
A1_LEN, B1_LEN, A3_LEN, C2_LEN, ECHO_LEN, PING_LEN = 76, 104, 28, 44, 20, 20
COOKIE_OFFSET = 32             # VirtualConnectionCookie: bytes 32..47 of A1 and B1


def new_cookie():
    """Returns a fresh random 16-byte cookie (a VirtualConnectionCookie or channel cookie)."""
    return os.urandom(16)


def rts_pdu(flags, commands):
    """Builds one RTS PDU from its flags and a list of (command_type, payload_bytes).

    Layout: the 16-byte common header (rpc_vers 5, rpc_vers_minor 0, PTYPE 20, pfc_flags 3,
    drep 10 00 00 00, frag_length, auth_length 0, call_id 0), then Flags (u16), NumberOfCommands
    (u16), then each command as CommandType (u32) followed by its payload.
    """
    body = b"".join(struct.pack("<I", ctype) + payload for ctype, payload in commands)
    frag_length = 16 + 4 + len(body)
    header = struct.pack("<BBBB4sHHI", 5, 0, PTYPE_RTS, PFC_FIRST_LAST, DREP, frag_length, 0, 0)
    return header + struct.pack("<HH", flags, len(commands)) + body


def _u32(v):
    """Packs one little-endian unsigned 32-bit integer."""
    return struct.pack("<I", v)


def conn_a1(vc_cookie, out_cookie=None, receive_window=65536):
    """CONN/A1 (76 bytes, client -> server on OUT): Version, VirtualConnectionCookie,
    OutChannelCookie, ReceiveWindowSize. The virtual connection cookie lands at bytes 32..47."""
    assert len(vc_cookie) == 16
    pdu = rts_pdu(RTS_FLAG_NONE, [
        (CMD_VERSION, _u32(1)),
        (CMD_COOKIE, vc_cookie),
        (CMD_COOKIE, out_cookie or new_cookie()),
        (CMD_RECEIVE_WINDOW_SIZE, _u32(receive_window)),
    ])
    assert len(pdu) == A1_LEN and pdu[COOKIE_OFFSET:COOKIE_OFFSET + 16] == vc_cookie
    return pdu


def conn_b1(vc_cookie, in_cookie=None, channel_lifetime=1073741824, keepalive_ms=300000,
            assoc_group=None):
    """CONN/B1 (104 bytes, client -> server on IN): Version, VirtualConnectionCookie,
    INChannelCookie, ChannelLifetime, ClientKeepalive, AssociationGroupId."""
    assert len(vc_cookie) == 16
    pdu = rts_pdu(RTS_FLAG_NONE, [
        (CMD_VERSION, _u32(1)),
        (CMD_COOKIE, vc_cookie),
        (CMD_COOKIE, in_cookie or new_cookie()),
        (CMD_CHANNEL_LIFETIME, _u32(channel_lifetime)),
        (CMD_CLIENT_KEEPALIVE, _u32(keepalive_ms)),
        (CMD_ASSOCIATION_GROUP_ID, assoc_group or new_cookie()),
    ])
    assert len(pdu) == B1_LEN and pdu[COOKIE_OFFSET:COOKIE_OFFSET + 16] == vc_cookie
    return pdu


def conn_a3(connection_timeout_ms=120000):
    """CONN/A3 (28 bytes, server -> client on OUT): ConnectionTimeout."""
    return rts_pdu(RTS_FLAG_NONE, [(CMD_CONNECTION_TIMEOUT, _u32(connection_timeout_ms))])


def conn_c2(receive_window=65536, connection_timeout_ms=120000):
    """CONN/C2 (44 bytes, server -> client on OUT): Version, ReceiveWindowSize, ConnectionTimeout."""
    return rts_pdu(RTS_FLAG_NONE, [
        (CMD_VERSION, _u32(1)),
        (CMD_RECEIVE_WINDOW_SIZE, _u32(receive_window)),
        (CMD_CONNECTION_TIMEOUT, _u32(connection_timeout_ms)),
    ])


def echo_pdu():
    """The 20-byte Echo RTS PDU (Flags RTS_FLAG_ECHO, no commands): the answer to echo requests."""
    return rts_pdu(RTS_FLAG_ECHO, [])


def ping_pdu():
    """The 20-byte Ping RTS PDU (Flags RTS_FLAG_PING, no commands): keep-alive on a channel."""
    return rts_pdu(RTS_FLAG_PING, [])


def parse_rts(data):
    """Parses one RTS PDU; returns a dict with flags, frag_length and commands [(type, payload)].

    Raises ValueError when the bytes are not a well-formed RTS PDU (wrong version, type,
    data representation, length, or a truncated command).
    """
    data = bytes(data)
    if len(data) < 20:
        raise ValueError("RTS PDU shorter than 20 bytes")
    vers, minor, ptype, pfc, drep, frag_len, auth_len, call_id = struct.unpack_from("<BBBB4sHHI", data)
    if (vers, minor, ptype) != (5, 0, PTYPE_RTS):
        raise ValueError("not an RTS PDU: vers %d.%d ptype %d" % (vers, minor, ptype))
    if drep[0] != 0x10 or auth_len != 0:
        raise ValueError("unexpected drep/auth_length")
    if frag_len != len(data):
        raise ValueError("frag_length %d but %d bytes" % (frag_len, len(data)))
    flags, ncmd = struct.unpack_from("<HH", data, 16)
    pos, cmds = 20, []
    for _ in range(ncmd):
        if pos + 4 > len(data):
            raise ValueError("truncated command")
        (ctype,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if ctype == CMD_PADDING:
            (count,) = struct.unpack_from("<I", data, pos)
            size = 4 + count
        elif ctype == CMD_CLIENT_ADDRESS:
            (atype,) = struct.unpack_from("<I", data, pos)
            size = 4 + (4 if atype == 0 else 16) + 12
        elif ctype in _CMD_SIZE:
            size = _CMD_SIZE[ctype]
        else:
            raise ValueError("unknown RTS command %d" % ctype)
        if pos + size > len(data):
            raise ValueError("truncated command payload")
        cmds.append((ctype, data[pos:pos + size]))
        pos += size
    if pos != len(data):
        raise ValueError("%d trailing bytes after commands" % (len(data) - pos))
    return {"flags": flags, "frag_length": frag_len, "call_id": call_id, "commands": cmds}


def parse_a3(data):
    """Checks a CONN/A3 PDU (28 bytes) and returns its ConnectionTimeout in milliseconds."""
    if len(data) != A3_LEN:
        raise ValueError("CONN/A3 must be 28 bytes, got %d" % len(data))
    pdu = parse_rts(data)
    types = [c for c, _ in pdu["commands"]]
    if types != [CMD_CONNECTION_TIMEOUT]:
        raise ValueError("CONN/A3 commands %r" % types)
    return struct.unpack("<I", pdu["commands"][0][1])[0]


def parse_c2(data):
    """Checks a CONN/C2 PDU (44 bytes); returns dict version, receive_window, connection_timeout."""
    if len(data) != C2_LEN:
        raise ValueError("CONN/C2 must be 44 bytes, got %d" % len(data))
    pdu = parse_rts(data)
    types = [c for c, _ in pdu["commands"]]
    if types != [CMD_VERSION, CMD_RECEIVE_WINDOW_SIZE, CMD_CONNECTION_TIMEOUT]:
        raise ValueError("CONN/C2 commands %r" % types)
    vals = [struct.unpack("<I", p)[0] for _, p in pdu["commands"]]
    return {"version": vals[0], "receive_window": vals[1], "connection_timeout": vals[2]}


def cookie_of(pdu):
    """Returns the VirtualConnectionCookie (bytes 32..47) of a CONN/A1 or CONN/B1 PDU."""
    return bytes(pdu[COOKIE_OFFSET:COOKIE_OFFSET + 16])


# ----------------------------------------------------------------------------------------------
# Deterministic pattern
# ----------------------------------------------------------------------------------------------

PATTERN_BLOCK = 65536
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_BASE_CACHE = {}


def _pattern_base(seed):
    """The 64 KiB base block of a seed: SHA-256 in counter mode over ("exrelay-pattern", seed, i)."""
    base = _BASE_CACHE.get(seed)
    if base is None:
        prefix = b"exrelay-pattern" + struct.pack("<Q", seed & _MASK64)
        base = b"".join(hashlib.sha256(prefix + struct.pack("<I", i)).digest()
                        for i in range(PATTERN_BLOCK // 32))
        _BASE_CACHE[seed] = base
    return base


class Pattern:
    """The deterministic byte stream used by the stand-in's "source" mode and `?len=N` bodies.

    The stream is a sequence of 64 KiB blocks. Block k is the seed's 64 KiB base block (SHA-256 in
    counter mode) whose first 8 bytes are replaced by the big-endian u64
    (k * 0x9E3779B97F4A7C15 + seed + 1) mod 2^64, so every block differs from its neighbours and
    a reordered, repeated or dropped block is detected; any byte within a block is checked against
    the base. Generation costs one memcpy per byte.
    """

    def __init__(self, seed=0):
        """Prepares the generator for `seed` (an int)."""
        self.seed = seed
        self.base = _pattern_base(seed)

    def header(self, k):
        """The 8 bytes that open block k."""
        return struct.pack(">Q", (k * _GOLDEN + self.seed + 1) & _MASK64)

    def block(self, k):
        """The whole 64 KiB block k as bytes."""
        return self.header(k) + self.base[8:]

    def chunk(self, offset, n):
        """Returns n bytes of the stream starting at byte `offset` (any alignment)."""
        out = []
        end = offset + n
        while offset < end:
            k, a = divmod(offset, PATTERN_BLOCK)
            b = min(PATTERN_BLOCK, a + (end - offset))
            if a < 8:
                piece = (self.header(k) + self.base[8:b])[a:] if b > 8 else self.header(k)[a:b]
            else:
                piece = self.base[a:b]
            out.append(piece)
            offset += b - a
        return b"".join(out)

    def pieces(self, total, offset=0, piece_size=1 << 20):
        """Yields the stream from `offset` for `total` bytes as memoryviews of at most piece_size.

        One buffer is reused: each yielded view is valid only until the next iteration (made for
        sendall()). Fast path for block-aligned offsets; other offsets fall back to chunk().
        """
        if offset % PATTERN_BLOCK or piece_size % PATTERN_BLOCK:
            end = offset + total
            while offset < end:
                n = min(piece_size, end - offset)
                yield memoryview(self.chunk(offset, n))
                offset += n
            return
        nblocks = piece_size // PATTERN_BLOCK
        buf = bytearray(self.base * nblocks)
        view = memoryview(buf)
        k0 = offset // PATTERN_BLOCK
        sent = 0
        while sent < total:
            for i in range(nblocks):
                struct.pack_into(">Q", buf, i * PATTERN_BLOCK, ((k0 + i) * _GOLDEN + self.seed + 1) & _MASK64)
            n = min(piece_size, total - sent)
            yield view[:n]
            sent += n
            k0 += nblocks


class PatternVerifier:
    """Checks a received stream against Pattern(seed) chunk by chunk, without storing it.

    update(data) returns False from the first mismatch on; .offset counts bytes checked,
    .mismatch_at is the stream offset of the first wrong byte (None while all matched).
    """

    def __init__(self, seed=0, offset=0):
        """Starts verifying the stream of `seed` at stream position `offset`."""
        self.pattern = Pattern(seed)
        self.offset = offset
        self.mismatch_at = None

    def update(self, data):
        """Checks the next bytes of the stream; returns True while everything matched.

        Compares block segment by block segment against the base block and the block headers
        (slices of bytes: memcpy + memcmp), without building the expected stream.
        """
        if self.mismatch_at is not None:
            return False
        data = bytes(data)
        p, pos, n = self.pattern, 0, len(data)
        while pos < n:
            k, a = divmod(self.offset + pos, PATTERN_BLOCK)
            b = min(PATTERN_BLOCK, a + (n - pos))
            if a < 8:
                h = min(b, 8)
                good = data[pos:pos + h - a] == p.header(k)[a:h] and \
                    data[pos + h - a:pos + b - a] == p.base[h:b]
            else:
                good = data[pos:pos + b - a] == p.base[a:b]
            if not good:
                want = p.chunk(self.offset + pos, b - a)
                for i in range(b - a):          # locate the first wrong byte for the report
                    if data[pos + i] != want[i]:
                        self.mismatch_at = self.offset + pos + i
                        break
                return False
            pos += b - a
        self.offset += n
        return True

    @property
    def ok(self):
        """True while no mismatch was seen."""
        return self.mismatch_at is None


# ----------------------------------------------------------------------------------------------
# NTLM tokens (real NTLMv2 messages, built by ntlm.py)
# ----------------------------------------------------------------------------------------------

NTLM_SIG = ntlm.SIGNATURE


def ntlm_type1():
    """Returns the value of an `Authorization: NTLM ...` header for leg 1 (without the scheme):
    a NEGOTIATE_MESSAGE ([MS-NLMP] §2.2.1.1)."""
    return ntlm.b64(ntlm.negotiate_message())


def ntlm_nonce(www_authenticate):
    """Extracts the 8-byte server challenge from a `WWW-Authenticate: NTLM <b64>` value."""
    return ntlm.parse_challenge(ntlm.challenge_from_header(www_authenticate))["server_challenge"]


def ntlm_type3(www_authenticate, user="EXAMPLE\\alice", password=None, channel_binding=None):
    """Returns the leg-3 token (without the scheme) answering the challenge header value given:
    an AUTHENTICATE_MESSAGE with an NTLMv2 response for `user` ("DOMAIN\\name" or "name").
    `password` defaults to the account's password in ntlm.DEFAULT_USERS (the stand-in's default
    set); `channel_binding` (16 bytes, ntlm.channel_binding_hash()) adds MsvAvChannelBindings."""
    if password is None:
        password = ntlm.DEFAULT_USERS[ntlm.split_user(user)[1].partition("@")[0].lower()]
    return ntlm.b64(ntlm.authenticate_message(ntlm.challenge_from_header(www_authenticate), user, password,
                                              channel_binding=channel_binding))


def ntlm_login(conn, method, target, user, password=None, scheme="NTLM", headers=(), channel_binding=None,
               timeout=10):
    """Runs NTLM legs 1 and 3 of `method target` on HttpConn `conn` (the same TCP connection, as
    NTLM requires); `headers` go on both legs. Returns (leg-1 Response, leg-3 Response, leg-3 body);
    when leg 1 is not a 401 with a `scheme` challenge, leg 3 is not sent and (resp1, None, None)
    comes back. channel_binding: 16 bytes, or True to compute it from the certificate `conn` sees."""
    resp1, _ = conn.request(method, target, list(headers) + [("Authorization", "%s %s" % (scheme, ntlm_type1()))],
                            timeout=timeout)
    challenge = [v for n, v in resp1.headers if n.lower() == "www-authenticate"
                 and v.lower().startswith(scheme.lower() + " ")]
    if resp1.status != 401 or not challenge:
        return resp1, None, None
    if channel_binding is True:
        channel_binding = ntlm.channel_binding_hash(conn.sock.getpeercert(binary_form=True))
    token = ntlm_type3(challenge[0], user, password, channel_binding)
    resp3, body = conn.request(method, target, list(headers) + [("Authorization", "%s %s" % (scheme, token))],
                               timeout=timeout)
    return resp1, resp3, body


# ----------------------------------------------------------------------------------------------
# Raw HTTP client
# ----------------------------------------------------------------------------------------------

class Response:
    """One response head: version, status (int), reason, headers [(name, value)] as received."""

    def __init__(self, version, status, reason, headers, raw):
        """Stores the parsed parts and the raw head bytes (status line to the blank line)."""
        self.version, self.status, self.reason, self.headers, self.raw = version, status, reason, headers, raw
        self.interim = []          # 1xx heads that preceded this final head (read_response)

    def header(self, name, default=None):
        """The first value of header `name` (case-insensitive), or default."""
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return default

    def header_all(self, name):
        """All values of header `name` (case-insensitive), in order."""
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def __repr__(self):
        """Short form for diagnostics."""
        return "<Response %s %d %s>" % (self.version, self.status, self.reason)


class HttpConn:
    """A raw HTTP/1.x client over one TCP (optionally TLS) connection.

    Nothing is normalised: heads are sent exactly as built, so tests control case, order and
    framing. Every read takes a timeout (seconds) and raises socket.timeout when the deadline
    passes; EOFError when the peer closed before the expected bytes arrived.
    """

    def __init__(self, host, port, timeout=10.0, tls=None, server_hostname=None, nodelay=True):
        """Connects (deadline `timeout`); `tls` is an ssl.SSLContext to wrap the socket in, or None."""
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=server_hostname or host)
        self.buf = bytearray()
        self.timeout = timeout
        self.eof = False

    # -- sending --------------------------------------------------------------------------------

    @staticmethod
    def build_request(method, target, headers=(), body=b"", version="HTTP/1.1"):
        """Returns request bytes: request line, headers exactly as given, blank line, body."""
        head = "%s %s %s\r\n" % (method, target, version)
        head += "".join("%s: %s\r\n" % (n, v) for n, v in headers) + "\r\n"
        return head.encode("latin-1") + bytes(body)

    def send(self, data):
        """Sends raw bytes (all of them)."""
        self.sock.sendall(data)

    def send_request(self, method, target, headers=(), body=b"", version="HTTP/1.1"):
        """Builds and sends a request (see build_request)."""
        self.send(self.build_request(method, target, headers, body, version))

    def request(self, method, target, headers=(), body=b"", version="HTTP/1.1", timeout=None):
        """Sends a request and reads the whole response; returns (Response, body bytes)."""
        self.send_request(method, target, headers, body, version)
        resp = self.read_response(timeout)
        return resp, self.read_body(resp, timeout, method=method)

    # -- reading --------------------------------------------------------------------------------

    def _deadline(self, timeout):
        """Absolute deadline for a read with `timeout` seconds (None: the connection default)."""
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _fill(self, deadline, want=65536):
        """Receives more bytes into the buffer before the deadline; returns False on EOF."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("read deadline passed")
        self.sock.settimeout(remaining)
        data = self.sock.recv(want)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_head(self, timeout=None):
        """Reads one response head (a 1xx one included) and returns a Response."""
        deadline = self._deadline(timeout)
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            if not self._fill(deadline):
                raise EOFError("connection closed before a complete response head (%r)" % bytes(self.buf[:200]))
        raw = bytes(self.buf[:i + 4])
        del self.buf[:i + 4]
        lines = raw[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ValueError("bad status line %r" % lines[0])
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name, value.strip(" \t")))
        return Response(parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "", headers, raw)

    def _left(self, deadline):
        """Seconds left until deadline (socket.timeout when none are)."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("read deadline passed")
        return left

    def read_response(self, timeout=None):
        """Reads heads until a final (non-1xx, or 101) one; earlier 1xx heads go to .interim.
        The timeout bounds the whole response head, interim ones included."""
        interim = []
        deadline = self._deadline(timeout)
        while True:
            resp = self.read_head(self._left(deadline))
            if 100 <= resp.status < 200 and resp.status != 101:
                interim.append(resp)
                continue
            resp.interim = interim
            return resp

    def read_some(self, maxn=1 << 20, timeout=None):
        """Returns up to maxn bytes as soon as any are available; b"" at EOF."""
        if not self.buf:
            if not self._fill(self._deadline(timeout), maxn):
                return b""
        data = bytes(self.buf[:maxn])
        del self.buf[:maxn]
        return data

    def read_exact(self, n, timeout=None):
        """Returns exactly n bytes, read before the deadline; EOFError if the peer closes first."""
        deadline = self._deadline(timeout)
        while len(self.buf) < n:
            if not self._fill(deadline, max(65536, min(n - len(self.buf), 1 << 20))):
                raise EOFError("EOF after %d of %d bytes" % (len(self.buf), n))
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def iter_exact(self, n, timeout=None, bufsize=1 << 20):
        """Yields exactly n bytes in pieces as they arrive (for large bodies: nothing accumulates).

        The deadline applies to the whole transfer. EOFError if the peer closes early.
        """
        deadline = self._deadline(timeout)
        if self.buf:
            first = bytes(self.buf[:n])
            del self.buf[:len(first)]
            n -= len(first)
            yield first
        while n > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("read deadline passed with %d bytes to go" % n)
            self.sock.settimeout(remaining)
            data = self.sock.recv(min(n, bufsize))
            if not data:
                self.eof = True
                raise EOFError("EOF with %d bytes to go" % n)
            n -= len(data)
            yield data

    def read_line(self, timeout=None, limit=65536):
        """Reads one CRLF-terminated line (returned without the CRLF)."""
        deadline = self._deadline(timeout)
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > limit:
                raise ValueError("line too long")
            if not self._fill(deadline):
                raise EOFError("EOF inside a line")

    def read_chunk(self, timeout=None):
        """Reads one chunk of a chunked body; returns its data, or None after the last chunk
        (the trailer section is read and dropped)."""
        size_line = self.read_line(timeout)
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while self.read_line(timeout):
                pass
            return None
        data = self.read_exact(size, timeout)
        if self.read_exact(2, timeout) != b"\r\n":
            raise ValueError("chunk not followed by CRLF")
        return data

    def read_until_close(self, timeout=None):
        """Returns everything until the peer closes."""
        deadline = self._deadline(timeout)
        while self._fill(deadline):
            pass
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def read_body(self, resp, timeout=None, method=None):
        """Reads the body of `resp` by its framing (HEAD/1xx/204/304: none; chunked; length;
        otherwise until close) and returns it whole."""
        if method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
            return b""
        te = resp.header("Transfer-Encoding")
        if te is not None and te.lower() == "chunked":
            parts = []
            deadline = self._deadline(timeout)          # for the whole body, not per chunk
            while True:
                chunk = self.read_chunk(self._left(deadline))
                if chunk is None:
                    return b"".join(parts)
                parts.append(chunk)
        cl = resp.header("Content-Length")
        if cl is not None:
            return self.read_exact(int(cl), timeout)
        return self.read_until_close(timeout)

    def wait_closed(self, timeout=None):
        """Waits for EOF from the peer, discarding any bytes; returns True if it closed in time."""
        try:
            self.read_until_close(timeout)
            return True
        except (socket.timeout, TimeoutError):
            return False
        except OSError:
            return True          # reset counts as closed

    def close(self):
        """Closes the socket (errors ignored)."""
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        """Context manager: returns self."""
        return self

    def __exit__(self, *exc):
        """Context manager: closes the connection."""
        self.close()


def rpc_in_request(target="/rpc/rpcproxy.dll?exchange.example.com:6001", length=1073741824, headers=()):
    """Head bytes of an RPC_IN_DATA channel request (add the B1 PDU and the stream after it)."""
    base = [("Host", "mail.example.com"), ("Accept", "application/rpc"),
            ("User-Agent", "MSRPC"), ("Cache-Control", "no-cache"),
            ("Connection", "Keep-Alive"), ("Content-Length", str(length))]
    return HttpConn.build_request("RPC_IN_DATA", target, base + list(headers))


def rpc_out_request(target="/rpc/rpcproxy.dll?exchange.example.com:6001", length=A1_LEN, headers=()):
    """Head bytes of an RPC_OUT_DATA channel request (add the A1 PDU after it)."""
    base = [("Host", "mail.example.com"), ("Accept", "application/rpc"),
            ("User-Agent", "MSRPC"), ("Cache-Control", "no-cache"),
            ("Connection", "Keep-Alive"), ("Content-Length", str(length))]
    return HttpConn.build_request("RPC_OUT_DATA", target, base + list(headers))


def open_virtual_connection(connect, target="/rpc/rpcproxy.dll?exchange.example.com:6001",
                            in_query="", out_query="", timeout=10.0, in_length=1073741824,
                            in_headers=(), out_headers=()):
    """Performs the RPC over HTTP v2 handshake on two fresh connections.

    `connect()` must return a new HttpConn (directly to the stand-in or through the proxy).
    Sends OUT (RPC_OUT_DATA + A1), reads `200` + A3, sends IN (RPC_IN_DATA + B1), reads C2 on OUT.
    `in_query`/`out_query` are appended to the target with "&" (e.g. "mode=sink", "source=N").
    Returns a VirtualConnection: .inn, .out (HttpConn), .out_response, .cookie, .a1, .b1.
    """
    vc = VirtualConnection()
    vc.cookie = new_cookie()
    vc.a1, vc.b1 = conn_a1(vc.cookie), conn_b1(vc.cookie)
    vc.out = connect()
    vc.out.send(rpc_out_request(target + ("&" + out_query if out_query else ""), headers=out_headers)
                + vc.a1)
    vc.out_response = vc.out.read_response(timeout)
    if vc.out_response.status != 200:
        raise ValueError("OUT channel answered %r" % vc.out_response)
    parse_a3(vc.out.read_exact(A3_LEN, timeout))
    vc.inn = connect()
    vc.inn.send(rpc_in_request(target + ("&" + in_query if in_query else ""), in_length, in_headers)
                + vc.b1)
    parse_c2(vc.out.read_exact(C2_LEN, timeout))
    return vc


class VirtualConnection:
    """Client side of one RPC over HTTP virtual connection (see open_virtual_connection)."""

    inn = out = out_response = cookie = a1 = b1 = None

    def echoes(self, n=1000, timeout=5.0):
        """Writes n random bytes on IN; True when the same bytes come back on OUT (the stand-in's
        echo mode, with no Ping in between: ping_interval=0)."""
        data = os.urandom(n)
        self.inn.send(data)
        return self.out.read_exact(n, timeout) == data

    def close(self):
        """Closes both channels."""
        for c in (self.inn, self.out):
            if c is not None:
                c.close()
