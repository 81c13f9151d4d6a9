#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_tls_bulk.py: bulk RPC over HTTP streams through exrelay's TLS listener, certificate reload on
SIGHUP, and TLS handshake rates (TAP).

* Upload: an RPC IN channel (sink mode) carrying EXRELAY_TLS_BULK_BYTES (default 64 MiB) written in
  1 KiB pieces, i.e. 1 KiB TLS records; byte-exact by the stand-in's sha256; exrelay's RSS stays flat.
* Download: an RPC OUT channel (source mode) of the same size read slowly (a 2 s pause midway: the
  backend must be throttled, memory must not grow, the stream must resume), verified byte for byte.
* Reload: the listener's certificate file is replaced (mail.example.com -> other.example.com) and
  SIGHUP sent while an OUT channel is streaming: new connections get the new certificate, the live
  stream continues byte-exact; then a broken certificate file and SIGHUP: the old set stays, exrelay
  says why, connections still work.
* Handshakes per second (full ECDSA, full RSA, resumed) with Python's ssl for
  EXRELAY_TLS_BENCH_SECONDS (default 2) each, reported as diagnostics (and as handshakes per CPU
  second of exrelay). Streaming MB/s is reported too.
The upload goes to a plaintext stand-in (TLS on the listener only); the download and the reload
stream come from a TLS stand-in (TLS on both sides). exrelay runs with one worker thread.
Run: cd tests && EXRELAY=/path/to/exrelay [EXRELAY_TLS_BULK_BYTES=N] python3 integration/t_tls_bulk.py
The 2 GiB version is a benchmark, outside `make check`: contrib/bench/bulk.sh.
"""

import hashlib
import os
import re
import shutil
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import CA, cert, run_checks, ok, is_, diag, done, start_standin, start_exrelay, tmpdir, wait_for  # noqa: E402
import rpch  # noqa: E402

T0 = time.monotonic()
MiB = 1 << 20
BULK = int(os.environ.get("EXRELAY_TLS_BULK_BYTES", 64 * MiB))
BENCH = float(os.environ.get("EXRELAY_TLS_BENCH_SECONDS", 2))
RSS_SLACK_KIB = 8 * 1024


def install(src, dst):
    """Replaces dst by a copy of src atomically (copy to a temp name, rename)."""
    shutil.copyfile(src, dst + ".tmp")
    os.rename(dst + ".tmp", dst)


# Sanitizer builds: ASan's quarantine (256 MiB by default) keeps freed memory resident and would
# show up as RSS growth that is not exrelay's; a small one keeps use-after-free detection. GnuTLS
# 3.7.9 itself leaks a certificate structure when gnutls_certificate_set_x509_key_file2() fails on
# a malformed PEM (the broken-certificate reload below): suppressed so LeakSanitizer reports only
# other leaks. Neither setting matters to a build without sanitizers.
if "quarantine_size_mb" not in os.environ.get("ASAN_OPTIONS", ""):
    os.environ["ASAN_OPTIONS"] = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"), "quarantine_size_mb=4"]))
_SUPP = os.path.join(tmpdir("exrelay-tls-lsan-"), "lsan.supp")
with open(_SUPP, "w") as _f:
    _f.write("# GnuTLS 3.7.9: gnutls_certificate_set_x509_key_file2 error path on a malformed PEM\n"
             "leak:gnutls_x509_crt_init\nleak:libtasn1.so\n")
if "suppressions=" not in os.environ.get("LSAN_OPTIONS", ""):
    os.environ["LSAN_OPTIONS"] = ":".join(filter(None, [os.environ.get("LSAN_OPTIONS"), "suppressions=" + _SUPP]))

# The listener's certificate lives in a temp dir so that the reload test can replace it.
CERTDIR = tmpdir("exrelay-tls-certs-")
LCERT, LKEY = os.path.join(CERTDIR, "listener.pem"), os.path.join(CERTDIR, "listener.key")
install(cert("mail-ecdsa")[0], LCERT)
install(cert("mail-ecdsa")[1], LKEY)

plain = start_standin()
s_tls = start_standin(tls_cert=cert("mail-ecdsa")[0], tls_key=cert("mail-ecdsa")[1])
CONFIG = '''
global = { log_level = "debug"; workers = 1; drain_timeout = 2; };
timeouts = { proxy_header = 5; tls_handshake = 5; request_head = 5; client_idle = 30; connect = 3; };
listeners = (
  { name = "tls"; bind = "127.0.0.1:0"; proxy_protocol = "optional"; trusted_proxies = [ "127.0.0.1/32" ];
    tls = { certificates = ( { cert = "%(lcert)s"; key = "%(lkey)s"; },
                             { cert = "%(rsacert)s"; key = "%(rsakey)s"; } ); }; }
);
backends = (
  { name = "plain"; servers = [ "127.0.0.1:%(plain)d" ]; idle_timeout = 60; },
  { name = "tls"; servers = [ "127.0.0.1:%(tls)d" ]; idle_timeout = 60; tls = { verify = true; ca_file = "%(ca)s"; }; }
);
routes = ( { backend = "tls"; paths = [ "/rpcwithcert" ]; }, { backend = "plain"; } );
'''
relay = start_exrelay(CONFIG % dict(lcert=LCERT, lkey=LKEY, rsacert=cert("mail-rsa")[0],
                                    rsakey=cert("mail-rsa")[1], plain=plain.port, tls=s_tls.port, ca=CA))
PORT = relay.port("tls")


def client_ctx(check_hostname=True):
    """A client context trusting the test CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(CA)
    ctx.check_hostname = check_hostname
    return ctx


CTX = client_ctx()


class Conn(rpch.HttpConn):
    """rpch.HttpConn over an already wrapped socket."""

    def __init__(self, sock, timeout=30.0):
        """Adopts sock."""
        self.sock, self.buf, self.timeout, self.eof = sock, bytearray(), timeout, False


def tls_conn(sni="mail.example.com", ctx=None, session=None, timeout=30.0):
    """A TLS connection to exrelay's listener."""
    raw = socket.create_connection(("127.0.0.1", PORT), timeout=timeout)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Conn((ctx or CTX).wrap_socket(raw, server_hostname=sni, session=session), timeout)


class RssSampler:
    """Samples exrelay's RSS every 20 ms in a thread; .max and .samples."""

    def __init__(self):
        """Starts sampling."""
        self.max, self.samples, self.stop_ev = 0, 0, threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        """The sampling loop (ends on stop() or when exrelay exits)."""
        while not self.stop_ev.wait(0.02):
            r = relay.rss_kib()
            if r is None:
                return
            self.max, self.samples = max(self.max, r), self.samples + 1

    def stop(self):
        """Stops sampling; returns the maximum seen (KiB)."""
        self.stop_ev.set()
        self.t.join(2)
        return self.max


def cpu_seconds(pid):
    """utime + stime of a process in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def warm_up():
    """One stream of each kind, so buffer pools and allocator arenas exist before measuring."""
    vc = rpch.open_virtual_connection(lambda: tls_conn(), target="/rpcwithcert/rpcproxy.dll?x:6001",
                                      out_query="source=%d" % (4 * MiB), in_query="mode=sink")
    for _ in vc.out.iter_exact(4 * MiB, timeout=20):
        pass
    vc.inn.send(b"\0" * (4 * MiB))
    vc.close()
    vc = rpch.open_virtual_connection(lambda: tls_conn(), in_query="mode=sink")
    vc.inn.send(b"\0" * (4 * MiB))
    vc.close()


def check_upload():
    """BULK bytes on an IN channel in 1 KiB TLS records, sha256 checked by the stand-in sink."""
    vc = rpch.open_virtual_connection(lambda: tls_conn(), in_query="mode=sink", in_length=rpch.B1_LEN + BULK)
    try:
        base = relay.rss_kib()
        sampler = RssSampler()
        h = hashlib.sha256(vc.b1)
        sock = vc.inn.sock
        cpu0 = cpu_seconds(relay.pid)
        t = time.monotonic()
        for piece in rpch.Pattern(5).pieces(BULK):
            h.update(piece)
            for off in range(0, len(piece), 1024):
                sock.sendall(piece[off:off + 1024])
        sent_dt = time.monotonic() - t
        ev = plain.wait_event("in_closed", timeout=60, cookie=vc.cookie.hex())
        dt = time.monotonic() - t
        cpu = cpu_seconds(relay.pid) - cpu0
        peak = sampler.stop()
        got = ev[0] if ev else {}
        is_((got.get("bytes"), got.get("complete")), (rpch.B1_LEN + BULK, True),
            "upload: %d MiB in 1 KiB TLS records all reached the stand-in" % (BULK // MiB))
        is_(got.get("sha256"), h.hexdigest(), "upload: sha256 matches (byte-exact)")
        ok(peak - base < RSS_SLACK_KIB, "upload: exrelay RSS flat: %d KiB after the handshake, peak %d KiB (+%d)" % (
            base, peak, peak - base))
        diag("upload: %.1f MB/s (1 KiB records, client wrote for %.1f s, %d RSS samples); exrelay CPU %.2f s = "
             "%.0f MB per exrelay CPU second" % (BULK / dt / 1e6, sent_dt, sampler.samples, cpu, BULK / max(cpu, 1e-3) / 1e6))
    finally:
        vc.close()


def check_slow_download():
    """BULK bytes on an OUT channel (TLS stand-in), read with a 2 s pause midway, byte for byte."""
    vc = rpch.open_virtual_connection(lambda: tls_conn(), target="/rpcwithcert/rpcproxy.dll?x:6001",
                                      out_query="source=%d&seed=9" % BULK)
    try:
        base = relay.rss_kib()
        sampler = RssSampler()
        v = rpch.PatternVerifier(9)
        cpu_start = cpu_seconds(relay.pid)
        t = time.monotonic()
        paused = None
        pause_start = None
        for piece in vc.out.iter_exact(BULK, timeout=120, bufsize=256 * 1024):
            if not v.update(piece):
                break
            if paused is None and v.offset >= BULK // 2:
                pause_start = relay.rss_kib()
                cpu0 = cpu_seconds(relay.pid)
                time.sleep(2)          # the slow reader: this pause is the test, not a readiness wait
                paused = (relay.rss_kib(), cpu_seconds(relay.pid) - cpu0)
        dt = time.monotonic() - t
        peak = sampler.stop()
        ok(v.ok and v.offset == BULK, "download: %d MiB read slowly, verified byte for byte (mismatch at %r)" % (
            BULK // MiB, v.mismatch_at))
        ok(paused is not None and paused[1] < 0.5,
           "download: exrelay idle while the reader pauses (%.2f CPU s in 2 s)" % (paused[1] if paused else -1))
        ok(peak - base < RSS_SLACK_KIB, "download: exrelay RSS flat: %d KiB after the handshake, peak %d KiB (+%d)" % (
            base, peak, peak - base))
        ok(s_tls.wait_event("source_done", timeout=10, bytes=BULK), "download: the stand-in finished sending")
        cpu = cpu_seconds(relay.pid) - cpu_start - paused[1] if paused else 0
        diag("download: %.1f MB/s including the 2 s pause (%.1f MB/s without); RSS at pause %s -> %s KiB; "
             "exrelay CPU %.2f s = %.0f MB per exrelay CPU second (TLS on both sides)" % (
                 BULK / dt / 1e6, BULK / max(0.001, dt - 2) / 1e6, pause_start, paused and paused[0],
                 cpu, BULK / max(cpu, 1e-3) / 1e6))
    finally:
        vc.close()
    ok(s_tls.wait_event("out_closed", timeout=3, cookie=vc.cookie.hex()),
       "download: the OUT channel the client closed is closed toward the backend within 3 s")


def check_fast_streams():
    """Streaming rate with full 16 KiB records: upload (plain backend) and download (TLS backend)."""
    n = min(BULK, 256 * MiB)
    vc = rpch.open_virtual_connection(lambda: tls_conn(), in_query="mode=sink", in_length=rpch.B1_LEN + n)
    try:
        cpu0, t = cpu_seconds(relay.pid), time.monotonic()
        for piece in rpch.Pattern(1).pieces(n):
            vc.inn.sock.sendall(piece)
        ev = plain.wait_event("in_closed", timeout=60, cookie=vc.cookie.hex())
        dt, cpu = time.monotonic() - t, cpu_seconds(relay.pid) - cpu0
        ok(ev and ev[0]["bytes"] == rpch.B1_LEN + n, "fast upload: %d MiB arrived" % (n // MiB))
        diag("fast upload (16 KiB records, TLS listener -> plain backend): %.0f MB/s wall, exrelay CPU %.2f s = "
             "%.0f MB per exrelay CPU second" % (n / dt / 1e6, cpu, n / max(cpu, 1e-3) / 1e6))
    finally:
        vc.close()
    vc = rpch.open_virtual_connection(lambda: tls_conn(), out_query="source=%d&seed=2" % n)
    try:
        cpu0, t = cpu_seconds(relay.pid), time.monotonic()
        got = 0
        for piece in vc.out.iter_exact(n, timeout=60, bufsize=1 << 20):
            got += len(piece)
        dt, cpu = time.monotonic() - t, cpu_seconds(relay.pid) - cpu0
        is_(got, n, "fast download: %d MiB read" % (n // MiB))
        diag("fast download (plain backend -> TLS listener): %.0f MB/s wall, exrelay CPU %.2f s = "
             "%.0f MB per exrelay CPU second" % (n / dt / 1e6, cpu, n / max(cpu, 1e-3) / 1e6))
    finally:
        vc.close()


def peer_cn(sni=None):
    """The certificate CN the listener presents (no verification of the name), and a request's status."""
    with tls_conn(sni=sni, ctx=client_ctx(check_hostname=False)) as c:
        cn = dict(x[0] for x in c.sock.getpeercert()["subject"]).get("commonName")
        resp, _ = c.request("GET", "/owa/reload", [("Host", "mail.example.com")], timeout=10)
        return cn, resp.status


def check_reload():
    """SIGHUP with a new certificate file, and with a broken one, while a stream is live."""
    n = 64 * MiB
    is_(peer_cn(), ("mail.example.com", 200), "before reload: mail.example.com")
    vc = rpch.open_virtual_connection(lambda: tls_conn(), target="/rpcwithcert/rpcproxy.dll?x:6001",
                                      out_query="source=%d&seed=11" % n)
    try:
        v = rpch.PatternVerifier(11)
        it = vc.out.iter_exact(n, timeout=60, bufsize=256 * 1024)
        for piece in it:
            v.update(piece)
            if v.offset >= 8 * MiB:
                break
        reloads = len(re.findall(r"configuration reloaded", relay.stderr_text()))
        install(cert("other")[0], LCERT)
        install(cert("other")[1], LKEY)
        relay.reload()
        ok(wait_for(lambda: len(re.findall(r"configuration reloaded", relay.stderr_text())) > reloads, 10),
           "reload: exrelay logged 'configuration reloaded'")
        is_(peer_cn(), ("other.example.com", 200), "after reload: new connections get the new certificate")
        # a broken certificate: the old (new) set stays
        failed = len(re.findall(r"reload failed", relay.stderr_text()))
        with open(LCERT + ".tmp", "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
        os.rename(LCERT + ".tmp", LCERT)
        relay.reload()
        lines = wait_for(lambda: re.findall(r".*reload failed.*", relay.stderr_text())[failed:], 10)
        ok(lines and "listener.pem" in lines[0], "broken certificate: reload refused, exrelay says why: %s" % (
            lines[0].strip() if lines else "nothing logged"))
        ok(relay.alive(), "broken certificate: exrelay still running")
        is_(peer_cn(), ("other.example.com", 200), "broken certificate: the previous set stays, connections work")
        # a certificate that does not match its key: refused as well
        failed = len(re.findall(r"reload failed", relay.stderr_text()))
        install(cert("other")[0], LCERT)
        install(cert("mail-ecdsa")[1], LKEY)
        relay.reload()
        lines = wait_for(lambda: re.findall(r".*reload failed.*", relay.stderr_text())[failed:], 10)
        ok(lines and "do not match" in lines[0], "mismatched key: reload refused, exrelay says why: %s" % (
            lines[0].strip() if lines else "nothing logged"))
        is_(peer_cn(), ("other.example.com", 200), "mismatched key: the previous set stays, connections work")
        for piece in it:
            if not v.update(piece):
                break
        ok(v.ok and v.offset == n, "the OUT channel opened before both reloads streamed all %d MiB byte-exact" % (
            n // MiB))
    finally:
        vc.close()
        install(cert("mail-ecdsa")[0], LCERT)
        install(cert("mail-ecdsa")[1], LKEY)
        reloads = len(re.findall(r"configuration reloaded", relay.stderr_text()))
        relay.reload()
        wait_for(lambda: len(re.findall(r"configuration reloaded", relay.stderr_text())) > reloads, 10)


def bench(name, make, seconds):
    """Runs make() (one handshake) in a loop for `seconds`; returns (count, rate, exrelay CPU s)."""
    count, reused = 0, 0
    cpu0 = cpu_seconds(relay.pid)
    t0 = time.monotonic()
    deadline = t0 + seconds
    while time.monotonic() < deadline and count < 1000000:
        reused += 1 if make() else 0
        count += 1
    dt = time.monotonic() - t0
    cpu = cpu_seconds(relay.pid) - cpu0
    diag("handshakes %-28s %6.0f /s (%d in %.1f s; exrelay CPU %.2f s = %.0f per exrelay CPU second)" % (
        name + ":", count / dt, count, dt, cpu, count / cpu if cpu > 0 else float("inf")))
    return count, reused, count / dt


def check_handshake_rates():
    """Full (ECDSA, RSA) and resumed handshakes per second through the TLS listener."""
    def full(ctx):
        """One full handshake."""
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", PORT), timeout=10),
                            server_hostname="mail.example.com")
        r = s.session_reused
        s.close()
        return r

    def key_type(ctx):
        """"EC" or "RSA": the listener's certificate key for this client context."""
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", PORT), timeout=10),
                             server_hostname="mail.example.com") as s:
            der = s.getpeercert(binary_form=True)
        return "EC" if b"\x06\x07\x2a\x86\x48\xce\x3d\x02\x01" in der else "RSA"   # id-ecPublicKey

    ecdsa12 = client_ctx()
    ecdsa12.maximum_version = ssl.TLSVersion.TLSv1_2
    ecdsa12.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    rsa = client_ctx()
    rsa.maximum_version = ssl.TLSVersion.TLSv1_2
    rsa.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    with tls_conn() as c:                   # a session with its TLS 1.3 ticket
        c.request("GET", "/owa/ticket", [("Host", "mail.example.com")], timeout=10)
        sess = c.sock.session

    def resumed():
        """One resumed handshake with the saved ticket."""
        s = CTX.wrap_socket(socket.create_connection(("127.0.0.1", PORT), timeout=10),
                            server_hostname="mail.example.com", session=sess)
        r = s.session_reused
        s.close()
        return r

    is_((key_type(CTX), key_type(ecdsa12), key_type(rsa)), ("EC", "EC", "RSA"),
        "benchmark contexts get ECDSA (TLS 1.3), ECDSA (TLS 1.2), RSA (TLS 1.2) certificates")
    n, reused, _ = bench("full TLS1.3 ECDSA", lambda: full(CTX), BENCH)
    ok(n > 0 and reused == 0, "full ECDSA handshakes: %d, none resumed" % n)
    n, reused, _ = bench("full TLS1.2 ECDHE-ECDSA", lambda: full(ecdsa12), BENCH)
    ok(n > 0 and reused == 0, "full TLS 1.2 ECDSA handshakes: %d, none resumed" % n)
    n, reused, _ = bench("full TLS1.2 ECDHE-RSA", lambda: full(rsa), BENCH)
    ok(n > 0 and reused == 0, "full RSA handshakes: %d, none resumed" % n)
    n, reused, _ = bench("resumed TLS1.3 ticket", resumed, BENCH)
    ok(n > 0 and reused == n, "resumed handshakes: %d of %d resumed" % (reused, n))
    ok(relay.alive(), "exrelay alive after the handshake loops")


run_checks((warm_up, check_upload, check_slow_download, check_fast_streams, check_handshake_rates, check_reload), relay, T0,
           errors_expected=True)  # the broken-certificate reloads log errors
