# SPDX-License-Identifier: BSD-2-Clause
"""
ntlm.py: NTLM (NTLMv2) for exrelay's integration tests, client and server side, Python 3 standard
library only. Used by the test clients (tests/lib/rpch.py, the t_* scripts) and by the Exchange
stand-in (tests/standin/exchange.py), so both ends share one implementation.

Follows [MS-NLMP] (Microsoft Open Specifications, "NT LAN Manager (NTLM) Authentication Protocol"):
  * §2.2.1.1 NEGOTIATE_MESSAGE, §2.2.1.2 CHALLENGE_MESSAGE, §2.2.1.3 AUTHENTICATE_MESSAGE: signature
    "NTLMSSP\\0", message type, then security buffers (Len u16, MaxLen u16, BufferOffset u32, all
    little-endian) pointing into the payload; names in UTF-16LE when NTLMSSP_NEGOTIATE_UNICODE is set.
  * §2.2.2.1 AV_PAIR (AvId u16, AvLen u16, Value), the TargetInfo list ended by MsvAvEOL.
  * §2.2.2.7 NTLMv2_CLIENT_CHALLENGE, §3.3.2 NTOWFv2 / LMOWFv2 and the NTLMv2 response computation
    (NTProofStr = HMAC_MD5(ResponseKeyNT, ServerChallenge || temp)).
  * §3.1.5.1.2 (client): with channel bindings, the client adds MsvAvChannelBindings, the MD5 hash of
    a gss_channel_bindings_struct; a server with Extended Protection compares it (§3.2.5.1.2).
  * RFC 5929 §4.1 tls-server-end-point: the hash of the server's DER certificate, SHA-256 when the
    certificate's signature algorithm uses MD5 or SHA-1, else that algorithm's own hash.
  * RFC 2743 §1.1.6 / RFC 4121 §4.1.1.2 channel bindings layout: initiator address type (u32) and
    address (length u32 + bytes), acceptor the same, application data (length u32 + bytes); all u32
    little-endian here as Windows' SSPI and MIT krb5 hash them.

hashlib's md4 is gone from Python builds on OpenSSL 3 (legacy provider off), so MD4 (RFC 1320) is
implemented here in pure Python.
"""

import base64
import hashlib
import hmac
import os
import struct

SIGNATURE = b"NTLMSSP\x00"
NEGOTIATE, CHALLENGE, AUTHENTICATE = 1, 2, 3

# NegotiateFlags ([MS-NLMP] §2.2.2.5)
NEGOTIATE_UNICODE = 0x00000001
NEGOTIATE_OEM = 0x00000002
REQUEST_TARGET = 0x00000004
NEGOTIATE_SIGN = 0x00000010
NEGOTIATE_SEAL = 0x00000020
NEGOTIATE_NTLM = 0x00000200
NEGOTIATE_ALWAYS_SIGN = 0x00008000
TARGET_TYPE_DOMAIN = 0x00010000
NEGOTIATE_EXTENDED_SESSIONSECURITY = 0x00080000
NEGOTIATE_TARGET_INFO = 0x00800000
NEGOTIATE_VERSION = 0x02000000
NEGOTIATE_128 = 0x20000000
NEGOTIATE_KEY_EXCH = 0x40000000
NEGOTIATE_56 = 0x80000000

CLIENT_FLAGS = (NEGOTIATE_UNICODE | REQUEST_TARGET | NEGOTIATE_NTLM | NEGOTIATE_ALWAYS_SIGN
                | NEGOTIATE_EXTENDED_SESSIONSECURITY | NEGOTIATE_TARGET_INFO | NEGOTIATE_128 | NEGOTIATE_56)

# AV_PAIR ids ([MS-NLMP] §2.2.2.1)
MSV_AV_EOL = 0x0000
MSV_AV_NB_COMPUTER_NAME = 0x0001
MSV_AV_NB_DOMAIN_NAME = 0x0002
MSV_AV_DNS_COMPUTER_NAME = 0x0003
MSV_AV_DNS_DOMAIN_NAME = 0x0004
MSV_AV_DNS_TREE_NAME = 0x0005
MSV_AV_FLAGS = 0x0006
MSV_AV_TIMESTAMP = 0x0007
MSV_AV_SINGLE_HOST = 0x0008
MSV_AV_TARGET_NAME = 0x0009
MSV_AV_CHANNEL_BINDINGS = 0x000A

# The stand-in's accounts when none are given on its command line (tests use these names).
DEFAULT_USERS = {"alice": "Secret1", "bob": "Secret2", "carol": "Secret3", "dave": "Secret4"}


class NtlmError(ValueError):
    """A malformed NTLM message (bad signature, type, or a buffer outside the message)."""


# ----------------------------------------------------------------------------------------------
# MD4 (RFC 1320), HMAC-MD5, the one-way functions
# ----------------------------------------------------------------------------------------------

def _rotl(x, n):
    """32-bit rotate left."""
    x &= 0xFFFFFFFF
    return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF


def md4(data):
    """MD4 digest of `data` (RFC 1320 §3), 16 bytes."""
    data = bytes(data)
    bitlen = (8 * len(data)) & 0xFFFFFFFFFFFFFFFF
    data += b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack("<Q", bitlen)
    a, b, c, d = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476
    for off in range(0, len(data), 64):
        x = struct.unpack_from("<16I", data, off)
        aa, bb, cc, dd = a, b, c, d
        # round 1: F(x,y,z) = xy | ~x z
        for i in range(16):
            k, s = i, (3, 7, 11, 19)[i % 4]
            f = (b & c) | (~b & d)
            a, b, c, d = d, _rotl(a + f + x[k], s), b, c
        # round 2: G(x,y,z) = xy | xz | yz, constant 0x5A827999
        for i in range(16):
            k, s = (i % 4) * 4 + i // 4, (3, 5, 9, 13)[i % 4]
            g = (b & c) | (b & d) | (c & d)
            a, b, c, d = d, _rotl(a + g + x[k] + 0x5A827999, s), b, c
        # round 3: H(x,y,z) = x ^ y ^ z, constant 0x6ED9EBA1
        for i in range(16):
            k, s = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)[i], (3, 9, 11, 15)[i % 4]
            h = b ^ c ^ d
            a, b, c, d = d, _rotl(a + h + x[k] + 0x6ED9EBA1, s), b, c
        a, b, c, d = (a + aa) & 0xFFFFFFFF, (b + bb) & 0xFFFFFFFF, (c + cc) & 0xFFFFFFFF, (d + dd) & 0xFFFFFFFF
    return struct.pack("<4I", a, b, c, d)


def hmac_md5(key, data):
    """HMAC-MD5 (RFC 2104), 16 bytes."""
    return hmac.new(key, data, hashlib.md5).digest()


def ntowfv1(password):
    """NTOWFv1 ([MS-NLMP] §3.3.1): MD4(UNICODE(Passwd)); also the key NTOWFv2 starts from."""
    return md4(password.encode("utf-16-le"))


def ntowfv2(password, user, domain):
    """NTOWFv2 = LMOWFv2 ([MS-NLMP] §3.3.2): HMAC_MD5(MD4(UNICODE(Passwd)),
    UNICODE(ConcatenationOf(Uppercase(User), UserDom)))."""
    return hmac_md5(ntowfv1(password), (user.upper() + domain).encode("utf-16-le"))


# ----------------------------------------------------------------------------------------------
# Channel bindings: RFC 5929 tls-server-end-point, RFC 2743 structure, MsvAvChannelBindings
# ----------------------------------------------------------------------------------------------

def _der(data, off):
    """One DER TLV at data[off]: returns (tag, content start, content end)."""
    tag = data[off]
    n = data[off + 1]
    off += 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(data[off:off + k], "big")
        off += k
    return tag, off, off + n


# signatureAlgorithm OIDs (DER content bytes) -> the hash they use
_SIG_HASH = {
    bytes.fromhex("2a864886f70d010104"): "md5",        # md5WithRSAEncryption
    bytes.fromhex("2a864886f70d010105"): "sha1",       # sha1WithRSAEncryption
    bytes.fromhex("2a864886f70d01010e"): "sha224",     # sha224WithRSAEncryption
    bytes.fromhex("2a864886f70d01010b"): "sha256",     # sha256WithRSAEncryption
    bytes.fromhex("2a864886f70d01010c"): "sha384",     # sha384WithRSAEncryption
    bytes.fromhex("2a864886f70d01010d"): "sha512",     # sha512WithRSAEncryption
    bytes.fromhex("2a8648ce3d0401"): "sha1",           # ecdsa-with-SHA1
    bytes.fromhex("2a8648ce3d040301"): "sha224",       # ecdsa-with-SHA224
    bytes.fromhex("2a8648ce3d040302"): "sha256",       # ecdsa-with-SHA256
    bytes.fromhex("2a8648ce3d040303"): "sha384",       # ecdsa-with-SHA384
    bytes.fromhex("2a8648ce3d040304"): "sha512",       # ecdsa-with-SHA512
}


def cert_signature_hash(der):
    """The hash named by a DER certificate's signatureAlgorithm ("sha256", ...), or None when the
    algorithm names none we know (Ed25519, RSASSA-PSS)."""
    _, start, _ = _der(der, 0)                 # Certificate ::= SEQUENCE {
    _, _, tbs_end = _der(der, start)           #   tbsCertificate,
    _, alg, _ = _der(der, tbs_end)             #   signatureAlgorithm AlgorithmIdentifier ::= SEQUENCE {
    tag, oid, oid_end = _der(der, alg)         #     algorithm OBJECT IDENTIFIER, ... }
    if tag != 0x06:
        raise NtlmError("certificate: signatureAlgorithm without an OID")
    return _SIG_HASH.get(der[oid:oid_end])


def tls_server_end_point(der):
    """RFC 5929 §4.1: the certificate's hash with the signature's hash function, except that MD5
    and SHA-1 are replaced by SHA-256 (and so is an algorithm without a single hash)."""
    name = cert_signature_hash(der)
    if name in (None, "md5", "sha1"):
        name = "sha256"
    return hashlib.new(name, der).digest()


def gss_channel_bindings(application_data, initiator=(0, b""), acceptor=(0, b"")):
    """The gss_channel_bindings_struct as hashed for Kerberos and NTLM (RFC 2743 §1.1.6, RFC 4121
    §4.1.1.2): initiator_addrtype, initiator_address length and bytes, acceptor_addrtype, acceptor
    address length and bytes, application_data length and bytes; integers u32 little-endian."""
    return (struct.pack("<II", initiator[0], len(initiator[1])) + initiator[1]
            + struct.pack("<II", acceptor[0], len(acceptor[1])) + acceptor[1]
            + struct.pack("<I", len(application_data)) + application_data)


def channel_binding_hash(der_cert):
    """The 16-byte MsvAvChannelBindings value ([MS-NLMP] §2.2.2.1, §3.1.5.1.2) for a TLS server
    presenting `der_cert`: MD5(gss_channel_bindings_struct) with application data
    "tls-server-end-point:" || RFC 5929 hash of the certificate, address types and lengths 0."""
    return hashlib.md5(gss_channel_bindings(b"tls-server-end-point:" + tls_server_end_point(der_cert))).digest()


# ----------------------------------------------------------------------------------------------
# Messages
# ----------------------------------------------------------------------------------------------

def av_pairs(pairs):
    """Serialises [(AvId, value bytes)] as an AV_PAIR list ended by MsvAvEOL."""
    out = b"".join(struct.pack("<HH", i, len(v)) + v for i, v in pairs if i != MSV_AV_EOL)
    return out + struct.pack("<HH", MSV_AV_EOL, 0)


def parse_av_pairs(data):
    """Parses an AV_PAIR list into [(AvId, value)] (up to MsvAvEOL; NtlmError if it overruns)."""
    out, off = [], 0
    while True:
        if off + 4 > len(data):
            raise NtlmError("AV_PAIR list without MsvAvEOL")
        i, n = struct.unpack_from("<HH", data, off)
        off += 4
        if i == MSV_AV_EOL:
            return out
        if off + n > len(data):
            raise NtlmError("AV_PAIR %d overruns the list" % i)
        out.append((i, bytes(data[off:off + n])))
        off += n


def _fields(header_len, payloads):
    """Lays out payloads after a fixed header of header_len bytes: returns (security buffer
    fields in order, payload bytes). Each field: Len u16, MaxLen u16, BufferOffset u32."""
    fields, body, off = b"", b"", header_len
    for p in payloads:
        fields += struct.pack("<HHI", len(p), len(p), off)
        body += p
        off += len(p)
    return fields, body


def _buffer(msg, off):
    """Reads the security buffer whose descriptor sits at msg[off]: the bytes it points to
    (NtlmError when the descriptor or the data lies outside the message)."""
    if off + 8 > len(msg):
        raise NtlmError("security buffer descriptor at %d outside the message" % off)
    n, _maxlen, start = struct.unpack_from("<HHI", msg, off)
    if start + n > len(msg):
        raise NtlmError("security buffer [%d, %d) outside the message of %d bytes" % (start, start + n, len(msg)))
    return bytes(msg[start:start + n])


def message_type(msg):
    """The MessageType of an NTLM message, or 0 when it is none."""
    if len(msg) >= 12 and msg[:8] == SIGNATURE:
        return struct.unpack_from("<I", msg, 8)[0]
    return 0


def negotiate_message(flags=CLIENT_FLAGS, domain="", workstation=""):
    """NEGOTIATE_MESSAGE (type 1, [MS-NLMP] §2.2.1.1): signature, type, flags, DomainNameFields,
    WorkstationFields (OEM, empty unless given)."""
    fields, body = _fields(32, [domain.encode("ascii"), workstation.encode("ascii")])
    return SIGNATURE + struct.pack("<II", NEGOTIATE, flags) + fields + body


def challenge_message(server_challenge, target_info, target_name="EXAMPLE", flags=None):
    """CHALLENGE_MESSAGE (type 2, [MS-NLMP] §2.2.1.2): TargetNameFields, NegotiateFlags,
    ServerChallenge (8 bytes at offset 24), Reserved, TargetInfoFields, Version; payload UTF-16LE."""
    if flags is None:
        flags = (NEGOTIATE_UNICODE | REQUEST_TARGET | NEGOTIATE_NTLM | NEGOTIATE_ALWAYS_SIGN | TARGET_TYPE_DOMAIN
                 | NEGOTIATE_EXTENDED_SESSIONSECURITY | NEGOTIATE_TARGET_INFO | NEGOTIATE_VERSION
                 | NEGOTIATE_128 | NEGOTIATE_56)
    name = target_name.encode("utf-16-le")
    header = 56                                    # up to and including the 8-byte Version
    version = bytes([10, 0]) + struct.pack("<H", 17763) + b"\x00\x00\x00\x0f"
    return (SIGNATURE + struct.pack("<I", CHALLENGE)
            + struct.pack("<HHI", len(name), len(name), header) + struct.pack("<I", flags)
            + server_challenge + bytes(8)
            + struct.pack("<HHI", len(target_info), len(target_info), header + len(name))
            + version + name + target_info)


def parse_challenge(msg):
    """Parses a CHALLENGE_MESSAGE: dict with flags, server_challenge, target_name, target_info
    (raw bytes) and av (parsed pairs)."""
    if message_type(msg) != CHALLENGE or len(msg) < 48:
        raise NtlmError("not an NTLM CHALLENGE_MESSAGE")
    flags = struct.unpack_from("<I", msg, 20)[0]
    info = _buffer(msg, 40)
    name = _buffer(msg, 12)
    return {"flags": flags, "server_challenge": bytes(msg[24:32]),
            "target_name": name.decode("utf-16-le" if flags & NEGOTIATE_UNICODE else "latin-1", "replace"),
            "target_info": info, "av": parse_av_pairs(info)}


def split_user(user):
    """"DOMAIN\\user" -> ("DOMAIN", "user"); "user@example.com" and "user" keep an empty domain."""
    if "\\" in user:
        d, _, u = user.partition("\\")
        return d, u
    return "", user


def ntlmv2_response(response_key, server_challenge, client_challenge, timestamp, av):
    """NTLMv2 ([MS-NLMP] §3.3.2): returns (NtChallengeResponse, LmChallengeResponse,
    SessionBaseKey) for the NTLMv2_CLIENT_CHALLENGE built from `timestamp` (FILETIME, u64) and
    the AV_PAIR bytes `av` (ServerName: the list as the client sends it, MsvAvEOL included)."""
    temp = (b"\x01\x01" + bytes(6) + struct.pack("<Q", timestamp) + client_challenge + bytes(4)
            + av + bytes(4))
    proof = hmac_md5(response_key, server_challenge + temp)
    lm = hmac_md5(response_key, server_challenge + client_challenge) + client_challenge
    return proof + temp, lm, hmac_md5(response_key, proof)


def filetime_now():
    """Current time as a Windows FILETIME (100 ns ticks since 1601-01-01)."""
    import time
    return int((time.time() + 11644473600) * 10_000_000)


def authenticate_message(challenge, user, password, domain=None, workstation="WS01", channel_binding=None,
                         client_challenge=None, timestamp=None, flags=None):
    """AUTHENTICATE_MESSAGE (type 3, [MS-NLMP] §2.2.1.3) answering `challenge` (the raw
    CHALLENGE_MESSAGE) with an NTLMv2 response.

    `user` may be "DOMAIN\\name" (then `domain` defaults to DOMAIN). The client's AV pairs are the
    server's TargetInfo plus MsvAvTargetName ("HTTP/<target>") and, when `channel_binding` is
    given (16 bytes, see channel_binding_hash()), MsvAvChannelBindings ([MS-NLMP] §3.1.5.1.2).
    When the server's TargetInfo has MsvAvTimestamp, LmChallengeResponse is Z(24) (§3.3.2) and the
    timestamp is the server's. Names are UTF-16LE (NTLMSSP_NEGOTIATE_UNICODE)."""
    ch = parse_challenge(challenge)
    d, u = split_user(user)
    if domain is None:
        domain = d
    client_challenge = client_challenge if client_challenge is not None else os.urandom(8)
    pairs = [(i, v) for i, v in ch["av"] if i not in (MSV_AV_CHANNEL_BINDINGS, MSV_AV_TARGET_NAME)]
    server_ts = dict(pairs).get(MSV_AV_TIMESTAMP)
    if timestamp is None:
        timestamp = struct.unpack("<Q", server_ts)[0] if server_ts else filetime_now()
    if channel_binding is not None:
        pairs.append((MSV_AV_CHANNEL_BINDINGS, bytes(channel_binding)))
    pairs.append((MSV_AV_TARGET_NAME, ("HTTP/" + (dict(pairs).get(MSV_AV_DNS_COMPUTER_NAME, b"").decode(
        "utf-16-le") or "mail.example.com")).encode("utf-16-le")))
    key = ntowfv2(password, u, domain)
    nt, lm, _ = ntlmv2_response(key, ch["server_challenge"], client_challenge, timestamp, av_pairs(pairs))
    if server_ts:
        lm = bytes(24)
    if flags is None:
        flags = CLIENT_FLAGS & ch["flags"] | NEGOTIATE_UNICODE
    payloads = [lm, nt, domain.encode("utf-16-le"), u.encode("utf-16-le"), workstation.encode("utf-16-le"), b""]
    header = 64 + 8                                # six security buffers, flags, Version (no MIC)
    fields, body = _fields(header, payloads)
    version = bytes([10, 0]) + struct.pack("<H", 19041) + b"\x00\x00\x00\x0f"
    return SIGNATURE + struct.pack("<I", AUTHENTICATE) + fields + struct.pack("<I", flags) + version + body


def parse_authenticate(msg):
    """Parses an AUTHENTICATE_MESSAGE: dict with flags, lm, nt (responses), domain, user,
    workstation (decoded per NTLMSSP_NEGOTIATE_UNICODE). NtlmError on any inconsistency."""
    if message_type(msg) != AUTHENTICATE or len(msg) < 64:
        raise NtlmError("not an NTLM AUTHENTICATE_MESSAGE")
    flags = struct.unpack_from("<I", msg, 60)[0]
    enc = "utf-16-le" if flags & NEGOTIATE_UNICODE else "latin-1"
    try:
        names = [_buffer(msg, off).decode(enc) for off in (28, 36, 44)]
    except UnicodeDecodeError as e:
        raise NtlmError("undecodable name: %s" % e)
    return {"flags": flags, "lm": _buffer(msg, 12), "nt": _buffer(msg, 20),
            "domain": names[0], "user": names[1], "workstation": names[2]}


def verify_ntlmv2(auth, server_challenge, password):
    """Server side ([MS-NLMP] §3.2.5.1.2): recomputes NTProofStr from the user's password, the
    names in the message and the client's blob. Returns the client's AV pairs (parsed) when the
    response is right, None when it is wrong; NtlmError for a response that is not NTLMv2."""
    nt = auth["nt"]
    if len(nt) < 16 + 28 + 4 or nt[16:18] != b"\x01\x01":
        raise NtlmError("NtChallengeResponse is not NTLMv2 (%d bytes)" % len(nt))
    key = ntowfv2(password, auth["user"], auth["domain"])
    if not hmac.compare_digest(hmac_md5(key, server_challenge + nt[16:]), nt[:16]):
        return None
    return parse_av_pairs(nt[16 + 28:])


# ----------------------------------------------------------------------------------------------
# HTTP helpers
# ----------------------------------------------------------------------------------------------

def b64(msg):
    """Base64 text of a message (for `Authorization: NTLM <b64>`)."""
    return base64.b64encode(msg).decode()


def challenge_from_header(www_authenticate):
    """The raw CHALLENGE_MESSAGE in a `WWW-Authenticate: NTLM <b64>` (or Negotiate) value."""
    parts = (www_authenticate or "").split(None, 1)
    if len(parts) != 2:
        raise NtlmError("no token in WWW-Authenticate %r" % www_authenticate)
    return base64.b64decode(parts[1])


def basic(user, password):
    """The value of an `Authorization: Basic ...` header."""
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
