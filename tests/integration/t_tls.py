#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_tls.py: TLS on exrelay's listeners and toward its backends (TAP).

Listener side: curl and gnutls-cli through a TLS listener, with and without a PROXY v1/v2 header in
front (the header on a raw socket, then the TLS handshake; and header + ClientHello in ONE write);
X-Forwarded-For / X-Forwarded-Proto as the stand-in sees them; SNI choosing the certificate; ECDSA or
RSA chosen by the client's signature algorithms; TLS 1.0/1.1, static-RSA and CBC refused; ALPN
http/1.1; resumption (gnutls-cli --resume, Python session reuse for TLS 1.3 and 1.2); client-initiated
renegotiation refused; the TLS handshake timeout; tls_version and tls_cipher in the json access log;
configuration errors (`exrelay -t`: bad priority, unreadable certificate, mismatched key).
Backend side: the stand-in behind TLS with a CA-signed certificate, a self-signed one (verify on:
502 and a log line naming the failure; verify off: 200), a wrong host name, the `sni` setting used
for verification, a required client certificate, TLS session resumption toward the backend; and the
RPC over HTTP handshake (OUT A1->A3, IN B1->C2, a 100-byte echo) with TLS on both sides.
Run: cd tests && EXRELAY=/path/to/exrelay python3 integration/t_tls.py
"""

import json
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import CA, cert, run_checks, ok, is_, diag, done, skip_all, start_standin, start_exrelay, \
    exrelay_path, tmpdir, wait_for  # noqa: E402
import rpch  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)   # ssl.TLSVersion.TLSv1 / TLSv1_1
T0 = time.monotonic()
HS_TIMEOUT = 2          # timeouts.tls_handshake
PH_TIMEOUT = 6          # timeouts.proxy_header (distinct, so the two cannot be confused)

for tool in ("curl", "gnutls-cli"):
    if not shutil.which(tool):
        skip_all("%s is not installed" % tool)


def certs_group(*names):
    """A listener's `certificates = ( ... )` list, one entry per line."""
    return ",\n".join('      { cert = "%s"; key = "%s"; }' % cert(n) for n in names)


# ----------------------------------------------------------------------------------------------
# Peers and exrelay
# ----------------------------------------------------------------------------------------------

plain = start_standin()
s_ca = start_standin(tls_cert=cert("mail-ecdsa")[0], tls_key=cert("mail-ecdsa")[1])
s_self = start_standin(tls_cert=cert("selfsigned")[0], tls_key=cert("selfsigned")[1])
s_wrong = start_standin(tls_cert=cert("wronghost")[0], tls_key=cert("wronghost")[1])
s_other = start_standin(tls_cert=cert("other")[0], tls_key=cert("other")[1])
s_cc = start_standin(tls_cert=cert("mail-ecdsa")[0], tls_key=cert("mail-ecdsa")[1], require_client_cert=CA)

LOGDIR = tmpdir("exrelay-tls-log-")
ACCESS_LOG = os.path.join(LOGDIR, "access.log")

CONFIG = '''
global = { log_level = "debug"; drain_timeout = 2; };
access_log = { path = "%(alog)s"; format = "json"; };
timeouts = { proxy_header = %(ph)d; tls_handshake = %(hs)d; request_head = 5; client_idle = 10; connect = 3; };
listeners = (
  { name = "tls"; bind = "127.0.0.1:0"; proxy_protocol = "optional"; trusted_proxies = [ "127.0.0.1/32" ];
    tls = { certificates = (
%(certs)s
    ); }; },
  { name = "nopp"; bind = "127.0.0.1:0"; proxy_protocol = "off";
    tls = { certificates = ( { cert = "%(ecert)s"; key = "%(ekey)s"; } ); }; }
);
backends = (
  { name = "plain"; servers = [ "127.0.0.1:%(plain)d" ]; },
  { name = "ca"; servers = [ "127.0.0.1:%(ca)d" ]; tls = { verify = true; ca_file = "%(cafile)s"; }; },
  { name = "selfv"; servers = [ "127.0.0.1:%(self)d" ]; tls = { verify = true; ca_file = "%(cafile)s"; }; },
  { name = "selfnv"; servers = [ "127.0.0.1:%(self)d" ]; tls = { verify = false; }; },
  { name = "wrong"; servers = [ "127.0.0.1:%(wrong)d" ]; tls = { verify = true; ca_file = "%(cafile)s"; }; },
  { name = "sni"; servers = [ "127.0.0.1:%(other)d" ]; tls = { verify = true; ca_file = "%(cafile)s"; sni = "other.example.com"; }; },
  { name = "nosni"; servers = [ "127.0.0.1:%(other)d" ]; tls = { verify = true; ca_file = "%(cafile)s"; }; },
  { name = "cc"; servers = [ "127.0.0.1:%(cc)d" ]; tls = { verify = true; ca_file = "%(cafile)s"; cert = "%(ccert)s"; key = "%(ckey)s"; }; },
  { name = "nocc"; servers = [ "127.0.0.1:%(cc)d" ]; tls = { verify = true; ca_file = "%(cafile)s"; }; }
);
routes = (
  { backend = "ca"; paths = [ "/rpc", "/b/ca" ]; },
  { backend = "selfv"; paths = [ "/b/selfv" ]; },
  { backend = "selfnv"; paths = [ "/b/selfnv" ]; },
  { backend = "wrong"; paths = [ "/b/wrong" ]; },
  { backend = "sni"; paths = [ "/b/sni" ]; },
  { backend = "nosni"; paths = [ "/b/nosni" ]; },
  { backend = "cc"; paths = [ "/b/cc" ]; },
  { backend = "nocc"; paths = [ "/b/nocc" ]; },
  { backend = "plain"; }
);
'''
relay = start_exrelay(CONFIG % dict(
    alog=ACCESS_LOG, ph=PH_TIMEOUT, hs=HS_TIMEOUT,
    certs=certs_group("mail-ecdsa", "mail-rsa", "other"), ecert=cert("mail-ecdsa")[0], ekey=cert("mail-ecdsa")[1],
    plain=plain.port, ca=s_ca.port, self=s_self.port, wrong=s_wrong.port, other=s_other.port, cc=s_cc.port,
    cafile=CA, ccert=cert("client")[0], ckey=cert("client")[1]))
TLS, NOPP = relay.port("tls"), relay.port("nopp")


# ----------------------------------------------------------------------------------------------
# Client helpers
# ----------------------------------------------------------------------------------------------

def client_ctx(check_hostname=True, maxv=None, minv=None, alpn=None):
    """A client SSLContext trusting the test CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(CA)
    ctx.check_hostname = check_hostname
    if maxv:
        ctx.maximum_version = maxv
    if minv:
        ctx.minimum_version = minv
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


class Conn(rpch.HttpConn):
    """rpch.HttpConn over a socket-like object that is already connected (and TLS-wrapped)."""

    def __init__(self, sock, timeout=10.0):
        """Adopts `sock` (an SSLSocket or a BioSocket)."""
        self.sock, self.buf, self.timeout, self.eof = sock, bytearray(), timeout, False


def tls_conn(port=None, sni="mail.example.com", prefix=b"", ctx=None, session=None, timeout=10.0):
    """TCP connect, optionally write `prefix` (a PROXY header) in clear, then a TLS handshake."""
    raw = socket.create_connection(("127.0.0.1", port or TLS), timeout=timeout)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if prefix:
        raw.sendall(prefix)
    s = (ctx or client_ctx()).wrap_socket(raw, server_hostname=sni, session=session)
    return Conn(s, timeout)


class BioSocket:
    """TLS over a raw socket through ssl.MemoryBIO, so the first flight can be sent together with
    a prefix (the PROXY header) in one send() call. Offers what rpch.HttpConn uses."""

    def __init__(self, raw, ctx, sni, prefix, timeout=10.0):
        """Handshakes; the PROXY header and the ClientHello go out in ONE sendall()."""
        self.raw, self.timeout = raw, timeout
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=sni)
        self.first_write = None
        deadline = time.monotonic() + timeout
        for _ in range(100):
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            data = self.out.read()
            if self.first_write is None:
                self.first_write = prefix + data
                raw.sendall(self.first_write)
            elif data:
                raw.sendall(data)
            raw.settimeout(max(0.01, deadline - time.monotonic()))
            got = raw.recv(65536)
            if not got:
                raise EOFError("server closed during the handshake")
            self.inc.write(got)
        else:
            raise RuntimeError("handshake did not finish in 100 rounds")
        self._flush()

    def _flush(self):
        """Sends whatever the TLS object has produced."""
        data = self.out.read()
        if data:
            self.raw.sendall(data)

    def settimeout(self, t):
        """Timeout for the next reads."""
        self.timeout = t

    def recv(self, n):
        """Up to n bytes of plaintext; b"" at EOF."""
        for _ in range(10000):
            try:
                data = self.obj.read(n)
                self._flush()
                return data
            except ssl.SSLWantReadError:
                self._flush()
                self.raw.settimeout(self.timeout)
                got = self.raw.recv(65536)
                if not got:
                    return b""
                self.inc.write(got)
            except ssl.SSLZeroReturnError:
                return b""
        raise RuntimeError("no progress")

    def sendall(self, data):
        """Encrypts and sends all of data."""
        view = memoryview(data)
        while len(view):
            n = self.obj.write(view)
            view = view[n:]
            self._flush()

    def version(self):
        """Negotiated protocol version."""
        return self.obj.version()

    def getpeercert(self):
        """The verified peer certificate (dict)."""
        return self.obj.getpeercert()

    def close(self):
        """Closes the TCP socket."""
        self.raw.close()


def get_json(c, path, headers=()):
    """GET path on Conn c; returns (status, parsed JSON body or None)."""
    resp, body = c.request("GET", path, [("Host", "mail.example.com")] + list(headers), timeout=10)
    try:
        return resp.status, json.loads(body)
    except ValueError:
        return resp.status, None


def hdr(info, name):
    """First value of header `name` in the stand-in's JSON echo (None if absent)."""
    for n, v in (info or {}).get("headers", []):
        if n.lower() == name.lower():
            return v
    return None


def subject_cn(peercert):
    """The commonName of a getpeercert() dict."""
    for rdn in peercert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    return None


def pp_v1(src, sport=40000, dst="192.0.2.1", dport=443):
    """A PROXY v1 TCP4 header."""
    return b"PROXY TCP4 %s %s %d %d\r\n" % (src.encode(), dst.encode(), sport, dport)


def pp_v2(src, sport=40000, dst="192.0.2.1", dport=443):
    """A PROXY v2 PROXY/TCP4 header without TLVs."""
    addr = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">HH", sport, dport)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack(">H", len(addr)) + addr


def run(argv, input_bytes=b"", timeout=15, split=False):
    """Runs a command; returns (exit status, stdout+stderr text), or with `split`
    (exit status, stdout text, stderr text)."""
    try:
        p = subprocess.run(argv, input=input_bytes, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE if split else subprocess.STDOUT, timeout=timeout)
        out = p.stdout.decode("utf-8", "replace")
        if split:
            return p.returncode, out, p.stderr.decode("utf-8", "replace")
        return p.returncode, out
    except subprocess.TimeoutExpired as e:
        out = (e.output or b"").decode("utf-8", "replace") + "\n[timeout]"
        return (None, out, "") if split else (None, out)


def gnutls(priority=None, sni=None, verify_host="mail.example.com", extra=(), request=None, port=None):
    """gnutls-cli against the TLS listener; with `request`, sends it and reads until close."""
    argv = ["gnutls-cli", "--x509cafile", CA, "-p", str(port or TLS)]
    if verify_host:
        argv += ["--verify-hostname", verify_host]
    if sni:
        argv += ["--sni-hostname", sni]
    if priority:
        argv += ["--priority", priority]
    argv += list(extra) + ["127.0.0.1"]
    return run(argv, request or b"")


def stderr_count(pattern):
    """How many lines of exrelay's stderr match the regex."""
    return len(re.findall(pattern, relay.stderr_text(), re.M))


def wait_stderr(pattern, count=1, timeout=5):
    """Waits until exrelay's stderr has `count` lines matching; returns the matches."""
    return wait_for(lambda: (lambda m: m if len(m) >= count else None)(re.findall(pattern, relay.stderr_text(), re.M)),
                    timeout) or []


def access_records():
    """The json access log records written so far."""
    try:
        with open(ACCESS_LOG) as f:
            return [json.loads(l) for l in f if l.endswith("\n")]
    except FileNotFoundError:
        return []


REQ = b"GET %s HTTP/1.1\r\nHost: mail.example.com\r\nConnection: close\r\n\r\n"


# ----------------------------------------------------------------------------------------------
# Listener checks
# ----------------------------------------------------------------------------------------------

def check_curl():
    """curl through the TLS listener, without and with a PROXY v1 header (--haproxy-protocol)."""
    base = ["curl", "-sS", "-v", "--max-time", "10", "--cacert", CA, "--resolve",
            "mail.example.com:%d:127.0.0.1" % TLS, "-w", "\\n%{http_code}"]
    rc, out, err = run(base + ["https://mail.example.com:%d/owa/curl-plain" % TLS], split=True)
    m = re.search(r"^(\{.*\})\s*\n(\d{3})\s*$", out, re.M | re.S)
    info = json.loads(m.group(1)) if m else None
    is_((rc, m and m.group(2)), (0, "200"), "curl: 200 through the TLS listener")
    is_((hdr(info, "X-Forwarded-For"), hdr(info, "X-Forwarded-Proto")), ("127.0.0.1", "https"),
        "curl: backend sees X-Forwarded-For 127.0.0.1, X-Forwarded-Proto https")
    ok(re.search(r"ALPN: server accepted (to use )?http/1\.1", err), "curl: ALPN http/1.1 accepted")
    if not m:
        diag((out + err)[-1500:])
    rc, out, err = run(base + ["--haproxy-protocol", "https://mail.example.com:%d/owa/curl-proxy" % TLS], split=True)
    m = re.search(r"^(\{.*\})\s*\n(\d{3})\s*$", out, re.M | re.S)
    info = json.loads(m.group(1)) if m else None
    is_((rc, m and m.group(2), hdr(info, "X-Forwarded-Proto")), (0, "200", "https"),
        "curl --haproxy-protocol: PROXY v1 then TLS, 200, X-Forwarded-Proto https")


def check_gnutls_cli():
    """gnutls-cli through the TLS listener: a request, the default (ECDSA) certificate, ALPN."""
    rc, out = gnutls(extra=["--alpn", "http/1.1"], request=REQ % b"/owa/gnutls-cli")
    is_((rc, "HTTP/1.1 200" in out), (0, True), "gnutls-cli: 200 through the TLS listener")
    ok('"X-Forwarded-Proto", "https"' in out, "gnutls-cli: backend sees X-Forwarded-Proto https")
    ok("Application protocol: http/1.1" in out, "gnutls-cli: ALPN http/1.1")
    ok(re.search(r"subject `CN=mail\.example\.com'.*EC/ECDSA key", out) and "certificate is trusted" in out,
       "gnutls-cli: default certificate is mail.example.com ECDSA, trusted")


def check_proxy_then_tls():
    """A PROXY header on the raw socket, then TLS: v1 and v2; the stand-in sees the PROXY address."""
    for ver, hdr_bytes, src in (("v1", pp_v1("203.0.113.11"), "203.0.113.11"),
                                ("v2", pp_v2("203.0.113.12"), "203.0.113.12")):
        with tls_conn(prefix=hdr_bytes) as c:
            status, info = get_json(c, "/owa/pp-" + ver)
            is_((status, hdr(info, "X-Forwarded-For"), hdr(info, "X-Forwarded-Proto")), (200, src, "https"),
                "PROXY %s then TLS: X-Forwarded-For %s, X-Forwarded-Proto https" % (ver, src))
    with tls_conn() as c:
        status, info = get_json(c, "/owa/nopp")
        is_((status, hdr(info, "X-Forwarded-For")), (200, "127.0.0.1"), "no PROXY header: X-Forwarded-For is the peer")


def check_proxy_and_hello_one_write():
    """PROXY header and ClientHello in ONE write: the bytes behind the header must reach TLS."""
    for ver, hdr_bytes, src in (("v1", pp_v1("198.51.100.21"), "198.51.100.21"),
                                ("v2", pp_v2("198.51.100.22"), "198.51.100.22")):
        raw = socket.create_connection(("127.0.0.1", TLS), timeout=10)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            bio = BioSocket(raw, client_ctx(), "mail.example.com", hdr_bytes)
            ok(bio.first_write.startswith(hdr_bytes) and len(bio.first_write) > len(hdr_bytes) + 100,
               "one write (%s): %d header bytes + %d ClientHello bytes in one send" % (
                   ver, len(hdr_bytes), len(bio.first_write) - len(hdr_bytes)))
            c = Conn(bio)
            status, info = get_json(c, "/owa/onewrite-" + ver)
            is_((status, hdr(info, "X-Forwarded-For"), hdr(info, "X-Forwarded-Proto")), (200, src, "https"),
                "PROXY %s + ClientHello in one write: handshake done, X-Forwarded-For %s" % (ver, src))
        except (OSError, EOFError, ssl.SSLError, RuntimeError) as e:
            ok(False, "PROXY %s + ClientHello in one write: %s: %s" % (ver, type(e).__name__, e))
            diag(relay.stderr_text()[-1500:])
        finally:
            raw.close()


def check_sni():
    """SNI chooses the certificate; no SNI or an unknown name gets the first (default) one."""
    for sni, want in (("mail.example.com", "mail.example.com"), ("other.example.com", "other.example.com")):
        with tls_conn(sni=sni) as c:
            is_(subject_cn(c.sock.getpeercert()), want, "SNI %s: certificate subject CN=%s (verified)" % (sni, want))
            status, _ = get_json(c, "/owa/sni")
            is_(status, 200, "SNI %s: request answered" % sni)
    ctx = client_ctx(check_hostname=False)
    for sni in (None, "unknown.example.org"):
        with tls_conn(sni=sni, ctx=ctx) as c:
            is_(subject_cn(c.sock.getpeercert()), "mail.example.com", "SNI %s: the first certificate" % sni)
    rc, out = gnutls(sni="other.example.com", verify_host="other.example.com")
    ok(rc == 0 and "subject `CN=other.example.com'" in out and "certificate is trusted" in out,
       "gnutls-cli --sni-hostname other.example.com: CN=other.example.com, trusted")


def check_rsa_vs_ecdsa():
    """ECDSA by default; a client offering only RSA signatures gets the RSA certificate."""
    rc, out = gnutls()
    ok(rc == 0 and re.search(r"subject `CN=mail\.example\.com'.*EC/ECDSA key 256", out), "default: ECDSA certificate")
    for prio in ("NORMAL:-SIGN-ALL:+SIGN-RSA-PSS-RSAE-SHA256:+SIGN-RSA-PSS-RSAE-SHA384:+SIGN-RSA-SHA256",
                 "NORMAL:-VERS-ALL:+VERS-TLS1.2:-SIGN-ALL:+SIGN-RSA-SHA256:+SIGN-RSA-PSS-RSAE-SHA256"):
        rc, out = gnutls(priority=prio)
        ok(rc == 0 and re.search(r"subject `CN=mail\.example\.com'.*RSA key 2048", out) and
           "certificate is trusted" in out, "only RSA signatures (%s): RSA certificate" % prio)
        if rc != 0:
            diag(out[-600:])
    ctx = client_ctx(maxv=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    with tls_conn(ctx=ctx) as c:
        is_(c.sock.cipher()[0], "ECDHE-RSA-AES128-GCM-SHA256", "Python TLS 1.2 ECDHE-RSA only: RSA certificate used")


def check_refused():
    """TLS 1.0, 1.1, static RSA key exchange and CBC suites are refused; TLS 1.2/1.3 work."""
    for name, prio in (("TLS 1.0", "NORMAL:-VERS-ALL:+VERS-TLS1.0"),
                       ("TLS 1.1", "NORMAL:-VERS-ALL:+VERS-TLS1.1"),
                       ("static RSA", "NORMAL:-VERS-ALL:+VERS-TLS1.2:-KX-ALL:+RSA"),
                       ("CBC", "NORMAL:-VERS-ALL:+VERS-TLS1.2:-CIPHER-ALL:+AES-128-CBC"),
                       ("CBC (TLS1.0-1.2)", "NORMAL:-CIPHER-ALL:+AES-256-CBC:+AES-128-CBC:+CAMELLIA-128-CBC")):
        before = stderr_count(r"TLS handshake failed")
        rc, out = gnutls(priority=prio)
        ok(rc not in (0, None) and "Handshake was completed" not in out, "%s refused (gnutls-cli exit %r)" % (name, rc))
        ok(wait_stderr(r"TLS handshake failed", before + 1), "%s: exrelay logged the failed handshake" % name)
    for name, prio, want in (("TLS 1.2", "NORMAL:-VERS-ALL:+VERS-TLS1.2", "TLS1.2"),
                             ("TLS 1.3", "NORMAL:-VERS-ALL:+VERS-TLS1.3", "TLS1.3")):
        rc, out = gnutls(priority=prio)
        ok(rc == 0 and re.search(r"Description: \(%s-X\.509\)-\(ECDHE-[^)]*\)-\([^)]*\)-\((AES-\d+-GCM|CHACHA20-POLY1305)\)"
                                 % re.escape(want), out), "%s accepted with ECDHE and an AEAD cipher" % name)
    for name, v in (("TLS 1.0", ssl.TLSVersion.TLSv1), ("TLS 1.1", ssl.TLSVersion.TLSv1_1)):
        ctx = client_ctx(maxv=v, minv=v)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        before = stderr_count(r"TLS handshake failed")
        try:
            with tls_conn(ctx=ctx) as c:
                ok(False, "Python %s refused (got %s)" % (name, c.sock.version()))
        except ssl.SSLError as e:
            # A TLS-level refusal, and exrelay's: the ClientHello reached it and it said no
            # (a refused TCP connect, or Python unable to offer the version, would not log this).
            ok(wait_stderr(r"TLS handshake failed", before + 1),
               "Python %s refused by exrelay (%s)" % (name, getattr(e, "reason", None) or e))


def check_alpn():
    """ALPN: http/1.1 chosen from h2 + http/1.1; no ALPN offered works too."""
    with tls_conn(ctx=client_ctx(alpn=["h2", "http/1.1"])) as c:
        is_(c.sock.selected_alpn_protocol(), "http/1.1", "ALPN h2,http/1.1 offered: http/1.1 selected")
    with tls_conn(ctx=client_ctx(alpn=["h2"])) as c:
        is_(c.sock.selected_alpn_protocol(), None, "ALPN h2 only: nothing selected, handshake still done")


def check_resumption():
    """Resumption: gnutls-cli --resume (TLS 1.3 and 1.2); Python session reuse."""
    for prio in (None, "NORMAL:-VERS-ALL:+VERS-TLS1.2"):
        rc, out = gnutls(priority=prio, extra=["--resume"])
        ok(rc == 0 and "This is a resumed session" in out, "gnutls-cli --resume (%s): resumed" % (prio or "default"))
    for name, maxv in (("TLS 1.3", None), ("TLS 1.2", ssl.TLSVersion.TLSv1_2)):
        ctx = client_ctx(maxv=maxv)
        with tls_conn(ctx=ctx) as c:
            status, _ = get_json(c, "/owa/resume-1")     # tickets of TLS 1.3 arrive after the handshake
            sess = c.sock.session
            first_reused = c.sock.session_reused
        with tls_conn(ctx=ctx, session=sess) as c:
            status2, _ = get_json(c, "/owa/resume-2")
            is_((first_reused, c.sock.session_reused, status, status2), (False, True, 200, 200),
                "Python %s: second connection resumed the session" % name)
    ok(wait_stderr(r"client=127\.0\.0\.1 TLS1\.[23] \S+ \(resumed\)"), "exrelay logs client sessions as (resumed)")


def check_renegotiation():
    """Client-initiated TLS 1.2 renegotiation: refused, no crash, connection usable or closed."""
    before = stderr_count(r"renegotiat")
    rc, out = gnutls(priority="NORMAL:-VERS-ALL:+VERS-TLS1.2", extra=["--rehandshake"])
    ok("ReHandshake was completed" not in out and ("ReHandshake has failed" in out or "No renegotiation" in out),
       "gnutls-cli --rehandshake: renegotiation refused")
    if "ReHandshake has failed" not in out:
        diag(out[-800:])
    ok(wait_stderr(r"renegotiat.*refused", before + 1), "exrelay logs the refused renegotiation")
    # openssl s_client: renegotiate ("R"), then try a request on the same connection.
    if shutil.which("openssl"):
        hs12 = r"client=127\.0\.0\.1 TLS1\.2 "
        n_before = stderr_count(hs12)
        p = subprocess.Popen(["openssl", "s_client", "-tls1_2", "-CAfile", CA, "-servername", "mail.example.com",
                              "-connect", "127.0.0.1:%d" % TLS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        try:
            out_lines = []
            reader = threading.Thread(target=lambda: out_lines.append(p.stdout.read()), daemon=True)
            reader.start()
            ok(wait_stderr(hs12, n_before + 1), "openssl s_client: TLS 1.2 handshake done")
            n_hs = stderr_count(hs12)
            p.stdin.write(b"R\n")
            p.stdin.flush()
            wait_stderr(r"renegotiat.*refused", before + 2, 5)
            try:
                p.stdin.write(REQ % b"/owa/after-reneg")
                p.stdin.flush()
            except BrokenPipeError:
                pass
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
            reader.join(5)
            text = (out_lines[0] if out_lines else b"").decode("utf-8", "replace")
            usable = "HTTP/1.1 200" in text
            closed = p.returncode is not None
            ok(usable or closed, "openssl s_client R: connection %s" % ("still usable (200)" if usable else "closed"))
            is_(stderr_count(hs12), n_hs, "openssl s_client R: no second handshake on the server")
            diag("s_client after R: %s" % ("answered" if usable else
                                             (re.findall(r".*renegotiation.*", text) or ["closed"])[0]))
        finally:
            if p.poll() is None:
                p.kill()
    ok(relay.alive(), "exrelay still running after renegotiation attempts")
    with tls_conn() as c:
        is_(get_json(c, "/owa/after-reneg-new")[0], 200, "a new connection works")


def check_handshake_timeout():
    """timeouts.tls_handshake: silent clients are closed after it (not after proxy_header)."""
    results = {}

    def silent(name, port, send):
        """Connects, sends `send` (maybe nothing), measures the time until the server closes."""
        t = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=HS_TIMEOUT + 8) as s:
                if send:
                    s.sendall(send)
                try:
                    while s.recv(4096):
                        pass
                except ConnectionResetError:
                    pass
            results[name] = time.monotonic() - t
        except socket.timeout:
            results[name] = None

    # a ClientHello prefix: record header + handshake header of a ClientHello, body missing
    partial = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03])
    threads = [threading.Thread(target=silent, args=a) for a in
               (("nothing, proxy off", NOPP, b""), ("partial ClientHello, proxy optional", TLS, partial),
                ("PROXY header only, proxy optional", TLS, pp_v1("203.0.113.99")))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HS_TIMEOUT + 10)
    for name, dt in sorted(results.items()):
        ok(dt is not None and HS_TIMEOUT - 0.3 <= dt <= HS_TIMEOUT + 1.5,
           "handshake timeout (%s): closed after %s s (tls_handshake %d, proxy_header %d)" % (
               name, "%.2f" % dt if dt is not None else "never", HS_TIMEOUT, PH_TIMEOUT))
    is_(len(results), 3, "all handshake-timeout probes finished")


def check_access_log():
    """The json access log records tls_version and tls_cipher."""
    rc, out = gnutls(priority="NORMAL:-VERS-ALL:+VERS-TLS1.2", request=REQ % b"/owa/log-tls12")
    with tls_conn() as c:
        get_json(c, "/owa/log-tls13")
    recs = wait_for(lambda: (lambda r: r if len(r) == 2 else None)(
        [r for r in access_records() if r.get("target") in ("/owa/log-tls12", "/owa/log-tls13")]), 5) or []
    by = {r["target"]: r for r in recs}
    r12, r13 = by.get("/owa/log-tls12", {}), by.get("/owa/log-tls13", {})
    is_((r12.get("tls_version"), r12.get("status")), ("TLS1.2", 200), "access log: tls_version TLS1.2")
    is_(r13.get("tls_version"), "TLS1.3", "access log: tls_version TLS1.3")
    ok(r12.get("tls_cipher") in ("AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305") and
       r13.get("tls_cipher") in ("AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"),
       "access log: tls_cipher %r / %r" % (r12.get("tls_cipher"), r13.get("tls_cipher")))
    if not recs:
        diag("access log: %r" % access_records()[-3:])


# ----------------------------------------------------------------------------------------------
# Backend checks
# ----------------------------------------------------------------------------------------------

def backend_get(path):
    """One request on a fresh TLS client connection; returns (status, JSON body or None)."""
    with tls_conn() as c:
        return get_json(c, path)


def check_backends():
    """The stand-in behind TLS: CA-signed, self-signed, wrong host name, sni, client certificates."""
    status, info = backend_get("/b/ca/x")
    is_(status, 200, "backend TLS, CA-signed certificate, verify on: 200")
    acc = s_ca.events("accept")
    ok(acc and acc[-1].get("tls") and acc[-1]["tls"].get("version") in ("TLSv1.3", "TLSv1.2"),
       "stand-in saw a TLS connection from exrelay (%s)" % (acc[-1].get("tls") if acc else None))
    is_(hdr(info, "X-Forwarded-Proto"), "https", "backend TLS: X-Forwarded-Proto https")

    n = stderr_count(r"certificate verification failed")
    is_(backend_get("/b/selfv/x")[0], 502, "self-signed backend, verify on: 502")
    lines = wait_stderr(r".*certificate verification failed.*", n + 1)
    ok(lines and re.search(r"issuer is unknown|not trusted|signer", lines[-1], re.I),
       "exrelay names the verification failure: %s" % (lines[-1].strip() if lines else "nothing logged"))
    is_(backend_get("/b/selfnv/x")[0], 200, "self-signed backend, verify = false: 200")

    n = stderr_count(r"certificate verification failed")
    is_(backend_get("/b/wrong/x")[0], 502, "wrong host name (wrong.example.net), verify on: 502")
    lines = wait_stderr(r".*certificate verification failed.*", n + 1)
    ok(lines and re.search(r"name .*does not match|hostname", lines[-1], re.I),
       "exrelay names the host name mismatch: %s" % (lines[-1].strip() if lines else "nothing logged"))

    is_(backend_get("/b/sni/x")[0], 200, "sni = other.example.com: verified against the sni name, 200")
    is_(backend_get("/b/nosni/x")[0], 502, "same server without sni (verified as 127.0.0.1): 502")

    is_(backend_get("/b/cc/x")[0], 200, "backend requires a client certificate, exrelay has one: 200")
    is_(backend_get("/b/nocc/x")[0], 502, "backend requires a client certificate, exrelay has none: 502")
    ok(relay.alive(), "exrelay alive after the backend failures")


def check_backend_resumption():
    """A second connection to the same TLS backend resumes the session (logged at debug)."""
    pat = r"backend ca: TLS1\.[23] \S+ \(resumed\)"
    before = stderr_count(pat)
    for i in range(3):
        closes = stderr_count(r"close client=")
        is_(backend_get("/b/ca/resume-%d" % i)[0], 200, "backend resumption: request %d" % (i + 1))
        wait_stderr(r"close client=", closes + 1)      # backend connection released: session stored
    ok(stderr_count(pat) >= before + 2, "backend sessions resumed: %d of the 3 logged (resumed)" %
       (stderr_count(pat) - before))


def check_backend_cache_after_reload():
    """Backend TLS sessions made under one configuration never resume under another: after
    reloads that switch `selfnv` between verify = false and verify = true (its self-signed
    certificate then fails), each verify = true phase is refused. Several rounds, so that a new
    configuration's TLS settings landing at a freed one's address (the old cache key) is met."""
    text = open(relay.config_path).read()
    nv = '{ name = "selfnv"; servers = [ "127.0.0.1:%d" ]; tls = { verify = false; }; }' % s_self.port
    v = '{ name = "selfnv"; servers = [ "127.0.0.1:%d" ]; tls = { verify = true; ca_file = "%s"; }; }' % (
        s_self.port, CA)
    ok(nv in text, "the configuration names selfnv with verify = false")
    results = []
    for i in range(4):
        for variant, want in ((v, 502), (nv, 200), (nv, 200)):
            reloads = stderr_count(r"configuration reloaded")
            relay.reload(text.replace(nv, variant))
            wait_stderr(r"configuration reloaded", reloads + 1)   # logged once every worker has it
            closes = stderr_count(r"close client=")
            results.append((want, backend_get("/b/selfnv/reload-%d" % i)[0]))
            wait_stderr(r"close client=", closes + 1)       # backend connection released: session stored
    is_([got for _, got in results], [want for want, _ in results],
        "after each reload, verify = true refuses the self-signed backend; verify = false serves it")
    relay.reload(text)
    ok(relay.wait_reloaded(), "the original configuration is back")


def check_rpc_over_tls():
    """RPC over HTTP v2 handshake and a 100-byte echo with TLS on both sides."""
    vc = rpch.open_virtual_connection(lambda: tls_conn())
    try:
        r = vc.out_response
        is_((r.status, r.header("Content-Length")), (200, "1073741824"), "RPC over TLS: OUT 200, A3 then C2")
        paired = s_ca.wait_event("paired", cookie=vc.cookie.hex())
        ok(paired, "RPC over TLS: the TLS stand-in paired IN and OUT")
        payload = os.urandom(100)
        vc.inn.send(payload)
        is_(vc.out.read_exact(100, timeout=5), payload, "RPC over TLS: 100-byte echo IN -> OUT")
        reqs = [e for e in s_ca.events("request") if e["method"] in ("RPC_IN_DATA", "RPC_OUT_DATA")]
        ok(reqs and all(["X-Forwarded-Proto", "https"] in e["headers"] for e in reqs[-2:]),
           "RPC over TLS: both channels carry X-Forwarded-Proto https")
        tls_acc = [e for e in s_ca.events("accept") if e.get("tls")]
        ok(paired and {paired[0]["out_conn"], paired[0]["in_conn"]} <= {e["conn"] for e in tls_acc},
           "RPC over TLS: both backend channels are TLS")
    finally:
        vc.close()
    ok(s_ca.wait_event("in_closed", cookie=vc.cookie.hex()), "RPC over TLS: IN close reaches the stand-in")


# ----------------------------------------------------------------------------------------------
# Configuration errors (exrelay -t)
# ----------------------------------------------------------------------------------------------

def check_config_errors():
    """exrelay -t: bad priority (GnuTLS's position), unreadable certificate, mismatched key."""
    d = tmpdir("exrelay-tls-conf-")
    unreadable = os.path.join(d, "unreadable.pem")
    shutil.copy(cert("mail-ecdsa")[0], unreadable)
    os.chmod(unreadable, 0)
    if os.geteuid() == 0:           # root reads mode-000 files: use a directory instead
        unreadable = d
    ec, ek = cert("mail-ecdsa")
    cases = (
        ("bad priority", '{ cert = "%s"; key = "%s"; } ); priority = "NORMAL:+VERS-TLS1.2:+BOGUS-THING";' % (ec, ek),
         r"BOGUS-THING", "position"),
        ("missing certificate", '{ cert = "%s"; key = "%s"; } );' % (os.path.join(d, "nope.pem"), ek),
         r"nope\.pem", "file"),
        ("unreadable certificate", '{ cert = "%s"; key = "%s"; } );' % (unreadable, ek),
         re.escape(os.path.basename(unreadable)), "file"),
        ("mismatched cert/key", '{ cert = "%s"; key = "%s"; } );' % (ec, cert("other")[1]),
         r"other\.test-key\.pem", "file"),
    )
    for name, line, pattern, kind in cases:
        text = ('listeners = (\n  { name = "t"; bind = "127.0.0.1:%d";\n'
                '    tls = { certificates = ( %s }; }\n);\n'
                'backends = ( { name = "b"; servers = [ "127.0.0.1:1" ]; } );\n'
                'routes = ( { backend = "b"; } );\n') % (0, line)
        path = os.path.join(d, name.replace(" ", "_").replace("/", "_") + ".conf")
        with open(path, "w") as f:
            f.write(text)
        p = subprocess.run([exrelay_path(), "-t", "-f", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=10)
        err = p.stderr.decode("utf-8", "replace")
        m = re.search(re.escape(path) + r":(\d+):", err)
        is_(p.returncode, 1, "exrelay -t, %s: exit 1" % name)
        ok(m and int(m.group(1)) == 3, "exrelay -t, %s: FILE:LINE points at the tls line 3 (%s)" % (
            name, m.group(0) if m else "no FILE:LINE"))
        ok(re.search(pattern, err), "exrelay -t, %s: message names %s: %s" % (name, pattern, err.strip()[:300]))
        if name == "bad priority":
            ok(re.search(r"offset \d+|position|at \"", err), "bad priority: GnuTLS's error position shown")
        # start-up must fail the same way
        q = subprocess.run([exrelay_path(), "-f", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
        # DESIGN.md: 1 for a configuration error, 2 for a start-up failure (a certificate).
        want = 2 if kind == "file" else 1
        ok(q.returncode == want and re.search(re.escape(path) + r":\d+:", q.stderr.decode("utf-8", "replace")),
           "start-up, %s: exits %d (want %d) with FILE:LINE" % (name, q.returncode, want))


run_checks((check_curl, check_gnutls_cli, check_proxy_then_tls, check_proxy_and_hello_one_write, check_sni,
              check_rsa_vs_ecdsa, check_refused, check_alpn, check_resumption, check_renegotiation,
              check_handshake_timeout, check_access_log, check_backends, check_backend_resumption,
              check_backend_cache_after_reload,
              check_rpc_over_tls, check_config_errors), relay, T0)
