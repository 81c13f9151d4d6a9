#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_standin.py: self-test of the Exchange stand-in and of the Apache harness (TAP), no exrelay.

Talks to tests/standin/exchange.py directly: echo requests, the RPC over HTTP v2 handshake,
IN->OUT echo latency, 100-continue, NTLM on one connection and across connections, MD4 and NTLMv2
against published vectors, Basic and NTLMv2 logins checked against per-user passwords, Negotiate
carrying bare NTLM, Extended Protection (channel binding ok, missing, wrong; RFC 5929 hash choice),
NotificationWait chunks, sink (64 MiB upload, sha256) and source (64 MiB, verified byte for byte),
the 503 error mode and a few framing knobs; then starts Apache through the harness and checks that
a PROXY v1 header sets REMOTE_ADDR. Run: cd tests && python3 integration/t_standin.py
"""

import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import ok, is_, diag, done, free_port, start_standin, start_apache, wait_for, tmpdir  # noqa: E402
import rpch  # noqa: E402
import ntlm  # noqa: E402

T0 = time.monotonic()
MiB = 1 << 20
ex = start_standin(ping_interval=0, notify_interval=30, extra_args=["--user", "erin:Erin-pw:1"])
diag("stand-in on port %d, log %s" % (ex.port, ex.log))


def connect():
    """A fresh raw connection to the stand-in."""
    return rpch.HttpConn("127.0.0.1", ex.port, timeout=10)


def check_pairing_after_short_out():
    """The stand-in's IN/OUT pairing (in-process, no socket): an IN channel whose thread sleeps
    through a whole OUT channel (attached, C2 sent, detached: a short source stream) must still
    count as paired, not wait 30 s for a partner that came and went (seen once in a 60-minute soak)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "standin"))
    import exchange  # noqa: E402
    reg, cookie = exchange.Registry(), b"c" * 16
    vc, base = reg.attach_in(cookie, "in-conn")
    ok(not reg.paired(vc, base), "pairing: an IN channel alone is not paired")
    out_vc = reg.attach(cookie, "out", "out-conn")
    reg.mark_c2(out_vc)
    ok(reg.paired(vc, base), "pairing: paired once C2 went out on the OUT channel")
    reg.detach(out_vc, "out", "out-conn")
    t = time.monotonic()
    ok(reg.wait(lambda: reg.paired(vc, base), 2.0) and time.monotonic() - t < 1.0,
       "pairing: still paired after the OUT channel ended before the IN thread looked")
    vc2, base2 = reg.attach_in(b"d" * 16, "in-conn-2")
    ok(not reg.wait(lambda: reg.paired(vc2, base2), 0.05), "pairing: another cookie's C2 does not pair it")


def check_echo_requests():
    """Echo requests: both methods, Content-Length 4 and 0, keep-alive on one connection."""
    with connect() as c:
        resp, body = c.request("RPC_IN_DATA", "/rpc/rpcproxy.dll?exchange.example.com:6001",
                               [("Host", "mail.example.com"), ("Content-Length", "4")], b"\0\0\0\0")
        is_((resp.status, resp.reason, len(body)), (200, "Success", 20), "echo: 200 Success with 20 bytes")
        ok(rpch.parse_rts(body)["flags"] == rpch.RTS_FLAG_ECHO, "echo: body is an Echo RTS PDU")
        resp, body = c.request("RPC_OUT_DATA", "/rpc/rpcproxy.dll?exchange.example.com:6001",
                               [("Host", "mail.example.com"), ("Content-Length", "0")])
        is_((resp.status, len(body)), (200, 20), "echo: second request on the same connection (keep-alive)")
    reqs = ex.events("request", method="RPC_OUT_DATA")
    ok(reqs and reqs[-1]["headers"][0] == ["Host", "mail.example.com"], "log keeps header names and order")


def check_handshake_and_echo_latency():
    """Full handshake, then a 100-byte write on IN must come back on OUT quickly."""
    vc = rpch.open_virtual_connection(connect)
    r = vc.out_response
    is_((r.status, r.reason, r.header("Content-Type"), r.header("Content-Length")),
        (200, "Success", "application/rpc", "1073741824"), "OUT: 200 Success, application/rpc, 1 GiB")
    ok(True, "handshake: A3 then C2 on OUT after B1 on IN")
    paired = ex.wait_event("paired", cookie=vc.cookie.hex())
    ok(paired and paired[0]["out_conn"] != paired[0]["in_conn"], "log: paired event names both connections")
    payload = os.urandom(100)
    worst = 0.0
    for _ in range(20):
        t = time.monotonic()
        vc.inn.send(payload)
        got = vc.out.read_exact(100, timeout=5)
        worst = max(worst, time.monotonic() - t)
        if got != payload:
            break
    is_(got, payload, "100-byte write on IN echoed on OUT")
    ok(worst < 0.05, "echo latency worst of 20: %.1f ms" % (worst * 1000))
    vc.inn.close()
    closed = ex.wait_event("in_closed", cookie=vc.cookie.hex())
    ok(closed and closed[0]["bytes"] == 104 + 2000 and closed[0]["complete"] is False,
       "IN closed early: in_closed with bytes=B1+data, complete=false")
    vc.out.close()
    ok(ex.wait_event("out_closed", cookie=vc.cookie.hex()), "OUT close logged")


def check_100_continue():
    """Expect: 100-continue: exactly one 100 before the body is read, then the final answer."""
    with connect() as c:
        c.send_request("POST", "/ews/exchange.asmx", [("Host", "mail.example.com"),
                                                      ("Expect", "100-continue"), ("Content-Length", "10")])
        first = c.read_head(timeout=5)
        is_(first.status, 100, "100 Continue arrives before the body is sent")
        c.send(b"0123456789")
        resp = c.read_response(timeout=5)
        body = c.read_body(resp)
        is_((resp.status, len(resp.interim)), (200, 0), "then the final 200, no second 100")
        is_(json.loads(body)["body_bytes"], 10, "body read after the 100")
        c.sock.settimeout(0.2)
        try:
            extra = c.sock.recv(100)
        except socket.timeout:
            extra = b""
        is_(extra, b"", "nothing more on the wire")


def check_ntlm():
    """NTLM: three legs on one connection pass; leg 3 on another connection is refused."""
    with connect() as a:
        resp, _ = a.request("GET", "/auth/whoami", [("Host", "x"), ("Authorization", "NTLM " + rpch.ntlm_type1())])
        is_(resp.status, 401, "NTLM leg 1: 401")
        challenge = resp.header("WWW-Authenticate")
        ok(challenge and challenge.startswith("NTLM "), "NTLM leg 2: challenge in WWW-Authenticate")
        resp, body = a.request("GET", "/auth/whoami",
                               [("Host", "x"), ("Authorization", "NTLM " + rpch.ntlm_type3(challenge, "EX\\bob"))])
        is_((resp.status, json.loads(body)["ntlm_user"]), (200, "EX\\bob"), "NTLM leg 3 on the same connection: 200")
        resp, body = a.request("GET", "/auth/again", [("Host", "x")])
        is_(resp.status, 200, "connection stays authenticated")
    with connect() as b, connect() as c:
        resp, _ = b.request("GET", "/ews/x?auth=ntlm", [("Host", "x"), ("Authorization", "NTLM " + rpch.ntlm_type1())])
        challenge = resp.header("WWW-Authenticate")
        resp, _ = c.request("GET", "/ews/x?auth=ntlm",
                            [("Host", "x"), ("Authorization", "NTLM " + rpch.ntlm_type3(challenge))])
        is_(resp.status, 401, "NTLM leg 3 on another connection: 401")
    ok(ex.wait_event("ntlm_wrong_connection"), "log: ntlm_wrong_connection")


CERTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "certs")


def check_md4_vectors():
    """Pure-Python MD4 against RFC 1320 §A.5, NTOWFv1 against [MS-NLMP] §4.2.2.1.2."""
    vectors = [(b"", "31d6cfe0d16ae931b73c59d7e0c089c0"), (b"a", "bde52cb31de33e46245e05fbdbd6fb24"),
               (b"abc", "a448017aaf21d8525fc10ae87aa6729d"), (b"message digest", "d9130a8164549fe818874806e1c7014b"),
               (b"abcdefghijklmnopqrstuvwxyz", "d79e1c308aa5bbcdeea8ed63df412da9"),
               (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "043f8582f241db351ce627e153e7f0e4"),
               (b"1234567890" * 8, "e33b4ddc9c38f2199c3e7b164fcc0536")]
    is_([ntlm.md4(m).hex() for m, _ in vectors], [h for _, h in vectors], "MD4: the 7 test vectors of RFC 1320")
    is_(ntlm.ntowfv1("Password").hex(), "a4f49c406510bdcab6824ee7c30fd852", "NTOWFv1('Password'), MS-NLMP 4.2.2.1.2")


def check_ntlmv2_vectors():
    """NTLMv2 against [MS-NLMP] §4.2.4: User/Domain/Password, server challenge 0123456789abcdef,
    client challenge aa*8, time 0, AV pairs NbDomainName "Domain", NbComputerName "Server"."""
    key = ntlm.ntowfv2("Password", "User", "Domain")
    is_(key.hex(), "0c868a403bfd7a93a3001ef22ef02e3f", "NTOWFv2, MS-NLMP 4.2.4.1.1")
    av = ntlm.av_pairs([(ntlm.MSV_AV_NB_DOMAIN_NAME, "Domain".encode("utf-16-le")),
                        (ntlm.MSV_AV_NB_COMPUTER_NAME, "Server".encode("utf-16-le"))])
    nt, lm, sbk = ntlm.ntlmv2_response(key, bytes.fromhex("0123456789abcdef"), b"\xaa" * 8, 0, av)
    is_(nt[:16].hex(), "68cd0ab851e51c96aabc927bebef6a1c", "NTProofStr, MS-NLMP 4.2.4.2.2")
    is_(lm.hex(), "86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa", "LMv2 response, MS-NLMP 4.2.4.2.1")
    is_(sbk.hex(), "8de40ccadbc14a82f15cb0ad0de95ca3", "SessionBaseKey, MS-NLMP 4.2.4.1.2")
    # the server side accepts exactly that response and nothing else
    auth = {"user": "User", "domain": "Domain", "nt": nt}
    ok(ntlm.verify_ntlmv2(auth, bytes.fromhex("0123456789abcdef"), "Password") is not None,
       "verify_ntlmv2 accepts the MS-NLMP 4.2.4 response")
    ok(ntlm.verify_ntlmv2(auth, bytes.fromhex("0123456789abcdef"), "password") is None,
       "verify_ntlmv2 refuses it for another password")


def check_ntlm_messages():
    """The messages on the wire: stand-in's CHALLENGE (type 2 with TargetInfo), the client's
    AUTHENTICATE (type 3): security buffers inside the message, UTF-16LE names, NTLMv2 blob."""
    with connect() as c:
        resp, _ = c.request("GET", "/auth/x", [("Host", "x"), ("Authorization", "NTLM " + rpch.ntlm_type1())])
        t1 = base64.b64decode(rpch.ntlm_type1())
        is_((t1[:8], ntlm.message_type(t1), struct.unpack_from("<I", t1, 12)[0] & ntlm.NEGOTIATE_UNICODE),
            (b"NTLMSSP\0", 1, 1), "NEGOTIATE: signature, type 1, NEGOTIATE_UNICODE")
        raw = ntlm.challenge_from_header(resp.header("WWW-Authenticate"))
        ch = ntlm.parse_challenge(raw)
        names = {i for i, _ in ch["av"]}
        ok(ntlm.message_type(raw) == 2 and len(ch["server_challenge"]) == 8 and ch["flags"] & ntlm.NEGOTIATE_TARGET_INFO
           and {ntlm.MSV_AV_NB_DOMAIN_NAME, ntlm.MSV_AV_NB_COMPUTER_NAME, ntlm.MSV_AV_TIMESTAMP} <= names,
           "CHALLENGE: type 2, 8-byte server challenge, TargetInfo with names and MsvAvTimestamp (%s)" % sorted(names))
        t3 = ntlm.authenticate_message(raw, "EXAMPLE\\alice", "Secret1", channel_binding=b"\x11" * 16)
        bufs = [struct.unpack_from("<HHI", t3, off) for off in (12, 20, 28, 36, 44, 52)]
        ok(all(n == m and o + n <= len(t3) for n, m, o in bufs), "AUTHENTICATE: six security buffers inside the message")
        a = ntlm.parse_authenticate(t3)
        is_((a["domain"], a["user"], a["workstation"], bool(a["flags"] & ntlm.NEGOTIATE_UNICODE)),
            ("EXAMPLE", "alice", "WS01", True), "AUTHENTICATE: UTF-16LE domain, user, workstation")
        is_(t3[bufs[3][2]:bufs[3][2] + bufs[3][0]], "alice".encode("utf-16-le"), "AUTHENTICATE: user bytes are UTF-16LE")
        av = dict(ntlm.parse_av_pairs(a["nt"][16 + 28:]))
        ok(a["nt"][16:18] == b"\x01\x01" and av.get(ntlm.MSV_AV_CHANNEL_BINDINGS) == b"\x11" * 16
           and av.get(ntlm.MSV_AV_TIMESTAMP) and a["lm"] == bytes(24),
           "AUTHENTICATE: NTLMv2 blob with the server's pairs, MsvAvChannelBindings; LM Z(24) under MsvAvTimestamp")
        bad = bytearray(t3)
        struct.pack_into("<I", bad, 40, len(t3))                 # user buffer offset at the end
        try:
            ntlm.parse_authenticate(bytes(bad))
            ok(False, "a buffer pointing outside the message is refused")
        except ntlm.NtlmError:
            ok(True, "a buffer pointing outside the message is refused")


def check_basic():
    """Basic: right password 200 (auth_ok), wrong password or unknown user 401 with a Basic
    realm of the host (auth_fail), required on ?auth=basic."""
    with connect() as c:
        resp, body = c.request("GET", "/owa/?x", [("Host", "mail.example.com:443"),
                                                   ("Authorization", ntlm.basic("EXAMPLE\\alice", "Secret1"))])
        info = json.loads(body) if resp.status == 200 else {}
        is_((resp.status, info.get("auth_user"), info.get("auth_scheme")), (200, "EXAMPLE\\alice", "Basic"),
            "Basic, right password: 200 as EXAMPLE\\alice")
        ok(ex.wait_event("auth_ok", user="EXAMPLE\\alice", scheme="Basic"), "log: auth_ok {user, scheme=Basic}")
        resp, _ = c.request("GET", "/owa/", [("Host", "mail.example.com:443"),
                                             ("Authorization", ntlm.basic("alice", "Secret2"))])
        is_((resp.status, resp.header("WWW-Authenticate")), (401, 'Basic realm="mail.example.com"'),
            "Basic, wrong password: 401 with Basic realm of the host")
        ok(ex.wait_event("auth_fail", user="alice", scheme="Basic", reason="bad_password"),
           "log: auth_fail reason bad_password")
        resp, _ = c.request("GET", "/ews/x", [("Host", "mail.example.com"),
                                              ("Authorization", ntlm.basic("mallory@example.com", "Secret1"))])
        is_(resp.status, 401, "Basic, unknown user: 401 (keep-alive kept)")
        ok(ex.wait_event("auth_fail", user="mallory@example.com", reason="unknown_user"), "log: auth_fail unknown_user")
        resp, _ = c.request("GET", "/x?auth=basic", [("Host", "mail.example.com")])
        is_((resp.status, resp.header("WWW-Authenticate")), (401, 'Basic realm="mail.example.com"'),
            "?auth=basic without credentials: 401 Basic")
        resp, _ = c.request("GET", "/x", [("Host", "mail.example.com")])
        is_(resp.status, 200, "anonymous request without the knob: 200")
    # --user adds an account
    with connect() as c:
        resp, _ = c.request("GET", "/x", [("Host", "x"), ("Authorization", ntlm.basic("erin", "Erin-pw:1"))])
        is_(resp.status, 200, "--user erin:Erin-pw:1 (password with a colon) logs in")


def check_ntlmv2_logins():
    """NTLMv2 through the stand-in: right password 200 and the connection stays authenticated;
    wrong password, unknown user 401; Negotiate carrying bare NTLM."""
    with connect() as c:
        r1, r3, body = rpch.ntlm_login(c, "GET", "/ews/exchange.asmx", "EXAMPLE\\bob", "Secret2", headers=[("Host", "x")])
        info = json.loads(body) if r3 is not None and r3.status == 200 else {}
        is_((r1.status, r3 and r3.status, info.get("auth_user"), info.get("auth_scheme")),
            (401, 200, "EXAMPLE\\bob", "NTLM"), "NTLMv2, right password: 200 as EXAMPLE\\bob")
        ok(ex.wait_event("auth_ok", user="EXAMPLE\\bob", scheme="NTLM"), "log: auth_ok {user, scheme=NTLM}")
        resp, body = c.request("GET", "/auth/again", [("Host", "x")])
        is_((resp.status, json.loads(body).get("ntlm_user") if resp.status == 200 else None), (200, "EXAMPLE\\bob"),
            "NTLM: the connection stays authenticated")
    with connect() as c:
        _, r3, _ = rpch.ntlm_login(c, "GET", "/ews/x", "EXAMPLE\\bob", "Secret1", headers=[("Host", "x")])
        is_((r3 and r3.status, r3 and r3.header("WWW-Authenticate")), (401, "NTLM"), "NTLMv2, wrong password: 401 NTLM")
        ok(ex.wait_event("auth_fail", user="EXAMPLE\\bob", scheme="NTLM", reason="bad_password"),
           "log: auth_fail reason bad_password")
        resp, _ = c.request("GET", "/auth/x", [("Host", "x")])
        is_(resp.status, 401, "after a failed AUTHENTICATE the connection is not authenticated")
        _, r3, _ = rpch.ntlm_login(c, "GET", "/ews/x", "EXAMPLE\\nobody", "Secret1", headers=[("Host", "x")])
        is_(r3 and r3.status, 401, "NTLMv2, unknown user: 401")
        ok(ex.wait_event("auth_fail", user="EXAMPLE\\nobody", reason="unknown_user"), "log: auth_fail unknown_user")
    with connect() as c:
        r1, r3, body = rpch.ntlm_login(c, "POST", "/rpc/rpcproxy.dll?x:6001", "carol@example.com", "Secret3",
                                       scheme="Negotiate", headers=[("Host", "x"), ("Content-Length", "0")])
        ok(r1.header("WWW-Authenticate", "").startswith("Negotiate "), "Negotiate leg 1: challenge under Negotiate")
        is_(r3 and r3.status, 200, "Negotiate carrying bare NTLM (UPN user): 200 (RPC echo)")
        ok(ex.wait_event("auth_ok", user="carol@example.com", scheme="Negotiate"), "log: auth_ok scheme=Negotiate")


def openssl_cert(d, name, key_args, digest):
    """A self-signed certificate made by openssl (DER bytes), or None if openssl refused."""
    pem = os.path.join(d, name + ".pem")
    r = subprocess.run(["openssl", "req", "-x509", "-new", "-nodes", "-subj", "/CN=%s" % name, "-days", "2",
                        "-" + digest, "-keyout", os.path.join(d, name + ".key"), "-out", pem] + key_args,
                       capture_output=True, timeout=60)
    if r.returncode != 0:
        diag("openssl refused %s: %s" % (name, r.stderr.decode(errors="replace")[-300:]))
        return None
    with open(pem) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def check_channel_binding_hash():
    """RFC 5929 §4.1 hash choice against hashlib over openssl's DER: MD5 and SHA-1 signed
    certificates hash with SHA-256, SHA-384/SHA-512 signed ones with their own hash; the
    binding is MD5 of the RFC 2743 structure (five u32 then the application data)."""
    d = tmpdir("exrelay-cb-")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    cases = [("md5", ["-newkey", "rsa:1024"], "sha256"), ("sha1", ec, "sha256"), ("sha256", ec, "sha256"),
             ("sha384", ec, "sha384"), ("sha512", ec, "sha512")]
    for digest, key, want in cases:
        der = openssl_cert(d, "cb-" + digest, key, digest)
        ok(der is not None and ntlm.tls_server_end_point(der) == hashlib.new(want, der).digest(),
           "tls-server-end-point of a %s-signed certificate is its %s hash" % (digest, want))
    der = open(os.path.join(d, "cb-sha384.pem")).read()
    der = ssl.PEM_cert_to_DER_cert(der)
    app = b"tls-server-end-point:" + hashlib.sha384(der).digest()
    struct_bytes = bytes(16) + struct.pack("<I", len(app)) + app
    is_(ntlm.channel_binding_hash(der), hashlib.md5(struct_bytes).digest(),
        "MsvAvChannelBindings = MD5(Z(16) || u32 len || 'tls-server-end-point:' || hash)")


def check_extended_protection():
    """A TLS stand-in with --extended-protection: NTLMv2 with the binding of the certificate the
    client sees passes; missing or another certificate's binding: 401; outside the protected
    virtual directories no binding is needed; Basic is not bound."""
    cert, key = os.path.join(CERTS, "mail-ecdsa.pem"), os.path.join(CERTS, "mail-ecdsa.test-key.pem")
    ep = start_standin(tls_cert=cert, tls_key=key, extra_args=["--extended-protection"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE

    def tls():
        return rpch.HttpConn("127.0.0.1", ep.port, timeout=10, tls=ctx, server_hostname="mail.example.com")

    with open(os.path.join(CERTS, "other.pem")) as f:
        other = ntlm.channel_binding_hash(ssl.PEM_cert_to_DER_cert(f.read()))
    for path in ("/owa/", "/rpc/rpcproxy.dll?x:6001", "/mapi/emsmdb/"):
        with tls() as c:
            _, r3, _ = rpch.ntlm_login(c, "GET", path, "EXAMPLE\\alice", "Secret1", headers=[("Host", "x")],
                                       channel_binding=True)
            is_(r3 and r3.status, 200, "EP %s: binding of the certificate the client sees: 200" % path)
    with tls() as c:
        _, r3, _ = rpch.ntlm_login(c, "GET", "/owa/", "EXAMPLE\\alice", "Secret1", headers=[("Host", "x")])
        is_(r3 and r3.status, 401, "EP /owa: no MsvAvChannelBindings: 401")
        _, r3, _ = rpch.ntlm_login(c, "GET", "/owa/", "EXAMPLE\\alice", "Secret1", headers=[("Host", "x")],
                                   channel_binding=bytes(16))
        is_(r3 and r3.status, 401, "EP /owa: all-zero binding (client without bindings): 401")
        _, r3, _ = rpch.ntlm_login(c, "GET", "/ecp/", "EXAMPLE\\alice", "Secret1", headers=[("Host", "x")],
                                   channel_binding=other)
        is_(r3 and r3.status, 401, "EP /ecp: binding of another certificate: 401")
        _, r3, _ = rpch.ntlm_login(c, "GET", "/ews/x", "EXAMPLE\\alice", "Secret1", headers=[("Host", "x")])
        is_(r3 and r3.status, 200, "EP: /ews is not protected, no binding needed: 200")
        resp, _ = c.request("GET", "/owa/", [("Host", "x"), ("Authorization", ntlm.basic("alice", "Secret1"))])
        is_(resp.status, 200, "EP: Basic is not bound: 200")
    reasons = [e.get("reason") for e in ep.events("auth_fail")]
    is_(reasons, ["channel_binding_missing", "channel_binding_missing", "channel_binding_wrong"],
        "log: auth_fail reasons channel_binding_missing (twice), channel_binding_wrong")
    ep.stop()


def check_notification_wait():
    """NotificationWait: chunked, PROCESSING, PENDING every interval, DONE, last chunk."""
    with connect() as c:
        c.send_request("POST", "/mapi/emsmdb/?MailboxId=x@example.com&interval=0.2&pending=3",
                       [("Host", "x"), ("X-RequestType", "NotificationWait"),
                        ("Content-Type", "application/mapi-http"), ("Content-Length", "3")], b"abc")
        resp = c.read_response(timeout=5)
        is_((resp.status, resp.header("Transfer-Encoding")), (200, "chunked"), "NotificationWait: 200 chunked")
        chunks, times = [], []
        while True:
            data = c.read_chunk(timeout=5)
            if data is None:
                break
            chunks.append(data)
            times.append(time.monotonic())
        kinds = [d.split(b"\r\n", 1)[0] for d in chunks]
        is_(kinds, [b"PROCESSING", b"PENDING", b"PENDING", b"PENDING", b"DONE"], "chunk sequence")
        gaps = [b - a for a, b in zip(times, times[1:4])]
        ok(all(0.15 < g < 0.5 for g in gaps), "PENDING chunks about 0.2 s apart: %s" % ["%.2f" % g for g in gaps])
        resp, _ = c.request("GET", "/after", [("Host", "x")])
        is_(resp.status, 200, "connection reusable after the chunked answer")


def check_sink():
    """Sink mode: a 64 MiB upload on IN is counted and hashed; closing early is normal."""
    vc = rpch.open_virtual_connection(connect, in_query="mode=sink")
    h = hashlib.sha256(vc.b1)
    t = time.monotonic()
    for piece in rpch.Pattern(7).pieces(64 * MiB):
        h.update(piece)
        vc.inn.send(piece)
    vc.inn.close()
    ev = ex.wait_event("in_closed", timeout=20, cookie=vc.cookie.hex())
    dt = time.monotonic() - t
    ok(ev and ev[0]["bytes"] == 104 + 64 * MiB, "sink: 64 MiB + B1 counted")
    ok(ev and ev[0]["sha256"] == h.hexdigest() and ev[0]["complete"] is False, "sink: sha256 matches, complete=false")
    diag("sink: %.0f MB/s" % (64 * MiB / dt / 1e6))
    vc.close()


def check_source():
    """Source mode: 64 MiB of the pattern on OUT after C2, verified byte for byte."""
    vc = rpch.open_virtual_connection(connect, out_query="source=%d&seed=3" % (64 * MiB))
    v = rpch.PatternVerifier(3)
    t = time.monotonic()
    for piece in vc.out.iter_exact(64 * MiB, timeout=20):
        if not v.update(piece):
            break
    dt = time.monotonic() - t
    ok(v.ok and v.offset == 64 * MiB, "source: 64 MiB verified (mismatch at %r)" % v.mismatch_at)
    diag("source: %.0f MB/s" % (64 * MiB / dt / 1e6))
    # the verifier must catch a swapped block
    bad = rpch.PatternVerifier(3)
    p = rpch.Pattern(3)
    ok(not bad.update(p.block(1)), "verifier rejects a misordered block")
    ok(ex.wait_event("source_done", bytes=64 * MiB), "log: source_done")
    vc.close()


def check_error_mode():
    """?fail_after=N: the IN channel gets `HTTP/1.0 503 RPC Error: 6ba` mid-stream."""
    vc = rpch.open_virtual_connection(connect, in_query="fail_after=10")
    vc.inn.send(b"x" * 10)
    resp = vc.inn.read_response(timeout=5)
    is_((resp.version, resp.status, resp.reason), ("HTTP/1.0", 503, "RPC Error: 6ba"), "IN error: 503 RPC Error: 6ba")
    ok(vc.inn.wait_closed(timeout=5), "IN closed after the error")
    vc.close()


def check_framing_knobs():
    """Generic knobs: len, chunked, close, status, and a broken (cut) response."""
    with connect() as c:
        resp, body = c.request("GET", "/x?len=100000&seed=1", [("Host", "x")])
        is_(body, rpch.Pattern(1).chunk(0, 100000), "?len=N: pattern body")
        resp, body = c.request("GET", "/x?chunked=1&len=70000", [("Host", "x")])
        is_((resp.header("Transfer-Encoding"), len(body)), ("chunked", 70000), "?chunked=1")
        resp, body = c.request("GET", "/x?status=404&rh=X-Test:%20a%20b", [("Host", "x")])
        is_((resp.status, resp.header("X-Test")), (404, "a b"), "?status= and ?rh=")
        resp, body = c.request("GET", "/x?close=1&len=5000", [("Host", "x")])
        is_((resp.header("Content-Length"), len(body)), (None, 5000), "?close=1: body delimited by close")
    with connect() as c:
        c.send_request("GET", "/x?broken=cut", [("Host", "x")])
        resp = c.read_response(timeout=5)
        is_(len(c.read_until_close(timeout=5)), 10, "?broken=cut: 10 of 1000 bytes, then close")
    with connect() as c:
        c.send(b"GET /x HTTP/1.1\r\nHost : x\r\n\r\n")
        resp = c.read_response(timeout=5)
        is_(resp.status, 400, "stand-in refuses whitespace before a colon")


def check_apache():
    """Apache via the harness: a PROXY v1 header sets REMOTE_ADDR seen by the echo CGI."""
    ap = start_apache(free_port(), proxy_protocol=True)
    with rpch.HttpConn("127.0.0.1", ap.port, timeout=10) as c:
        c.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n")
        resp, body = c.request("POST", "/cgi-bin/echo?x=1", [("Host", "www.example.com"),
                                                               ("X-Custom", "Value"), ("Content-Length", "5")],
                               b"hello")
        is_(resp.status, 200, "Apache: /cgi-bin/echo answers")
        info = json.loads(body) if resp.status == 200 else {}
        is_(info.get("remote_addr"), "203.0.113.7", "Apache: REMOTE_ADDR from the PROXY v1 header")
        is_((info.get("body_bytes"), info.get("body_sha256")), (5, hashlib.sha256(b"hello").hexdigest()),
            "Apache: CGI sees the body")
        is_(info.get("headers", {}).get("X-Custom"), "Value", "Apache: CGI sees request headers")
    lines = wait_for(lambda: [l for l in ap.access_log_lines() if "/cgi-bin/echo" in l], 5)
    ok(lines and lines[0].startswith("203.0.113.7 127.0.0.1 "), "Apache access log: %s" % (lines or ["none"])[0])
    ap.stop()


for check in (check_pairing_after_short_out, check_echo_requests, check_handshake_and_echo_latency, check_100_continue, check_ntlm,
              check_md4_vectors, check_ntlmv2_vectors, check_ntlm_messages, check_basic, check_ntlmv2_logins,
              check_channel_binding_hash, check_extended_protection, check_notification_wait, check_sink, check_source, check_error_mode, check_framing_knobs,
              check_apache):
    try:
        check()
    except Exception as e:
        ok(False, "%s raised %s: %s" % (check.__name__, type(e).__name__, e))
diag("total %.1f s" % (time.monotonic() - T0))
done()
