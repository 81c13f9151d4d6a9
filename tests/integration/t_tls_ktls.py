#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_tls_ktls.py: the tls.ktls switch (listeners and backends) and its fallback (TAP).

`exrelay -t` accepts `ktls = true` / `false` in a listener's and a backend's tls group and refuses
a value that is not a boolean (FILE:LINE). With ktls = true on a TLS listener and a TLS backend
(a Python TLS server answering uploads with their SHA-256 and sending downloads):
 - on a kernel without the tls module (this test's usual case), every exchange works exactly as
   without the switch: uploads and downloads of 2 MiB byte-exact, over several connections;
   exrelay logs "kTLS not available" exactly once; nothing is spliced (the records stay in user
   space);
 - on a kernel with it, the same transfers must still be byte-exact (whether GnuTLS hands the
   records to the kernel depends on its system configuration; that line is then not required).
Run: cd tests && EXRELAY=/path/to/exrelay python3 integration/t_tls_ktls.py
"""

import hashlib
import os
import re
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import (serve_loopback, run_checks, ok, is_, diag, start_exrelay, exrelay_path, tmpdir, metrics_text,  # noqa: E402
                     read_head, CA, cert)

T0 = time.monotonic()
CERT, KEY = cert("mail-ecdsa")
MiB = 1 << 20
DOWN = os.urandom(2 * MiB)


def kernel_has_ktls():
    """True when the kernel lists the tls ULP (then the fallback line is not expected)."""
    try:
        with open("/proc/sys/net/ipv4/tcp_available_ulp") as f:
            return "tls" in f.read().split()
    except OSError:
        return False


SERVER_CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
SERVER_CTX.load_cert_chain(CERT, KEY)


def backend(raw):
    """A TLS backend: POST /up answers "LEN SHA256"; GET /down sends DOWN; keep-alive."""
    c = SERVER_CTX.wrap_socket(raw, server_side=True)
    buf = b""
    while True:
        head, buf = read_head(c, buf)
        if head is None:
            return
        m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
        n = int(m.group(1)) if m else 0
        while len(buf) < n:
            d = c.recv(262144)
            if not d:
                return
            buf += d
        body, buf = buf[:n], buf[n:]
        if head.startswith(b"POST /up"):
            ans = ("%d %s" % (len(body), hashlib.sha256(body).hexdigest())).encode()
        else:
            ans = DOWN
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(ans) + ans)


BPORT = serve_loopback(backend)

CONFIG = '''
global = { log_level = "info"; drain_timeout = 2; workers = 1; };
timeouts = { request_head = 5; client_idle = 10; connect = 3; };
listeners = (
  { name = "tls"; bind = "127.0.0.1:0";
    tls = { certificates = ( { cert = "%(cert)s"; key = "%(key)s"; } ); ktls = true; }; },
  { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; }
);
backends = ( { name = "b"; servers = [ "127.0.0.1:%(bport)d" ];
               tls = { verify = true; ca_file = "%(ca)s"; sni = "mail.example.com"; ktls = %(bktls)s; }; } );
routes = ( { backend = "b"; } );
'''


def check_config():
    d = tmpdir("exrelay-ktls-")
    for val, good in (("true", True), ("false", True), ('"yes"', False)):
        path = os.path.join(d, "k.conf")
        with open(path, "w") as f:
            f.write((CONFIG % dict(cert=CERT, key=KEY, bport=1, ca=CA, bktls="false")).replace(
                "ktls = true;", "ktls = %s;" % val))
        p = subprocess.run([exrelay_path(), "-t", "-f", path], capture_output=True, text=True, timeout=30)
        if good:
            is_(p.returncode, 0, "exrelay -t accepts listener tls.ktls = %s (%s)" % (val, p.stderr.strip()))
        else:
            ok(p.returncode == 1 and re.search(r"k\.conf:\d+:", p.stderr) is not None,
               "exrelay -t refuses tls.ktls = %s with FILE:LINE (%s)" % (val, p.stderr.strip()))
    path = os.path.join(d, "b.conf")
    with open(path, "w") as f:
        f.write(CONFIG % dict(cert=CERT, key=KEY, bport=1, ca=CA, bktls="1"))
    p = subprocess.run([exrelay_path(), "-t", "-f", path], capture_output=True, text=True, timeout=30)
    ok(p.returncode == 1 and "b.conf:" in p.stderr, "exrelay -t refuses backend tls.ktls = 1 (%s)" % p.stderr.strip())


relay = start_exrelay(CONFIG % dict(cert=CERT, key=KEY, bport=BPORT, ca=CA, bktls="true"))
CLIENT_CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
CLIENT_CTX.load_verify_locations(CA)


def exchange(req, n=None):
    """Sends req over a new TLS connection; returns the response body."""
    raw = socket.create_connection(("127.0.0.1", relay.port("tls")), timeout=20)
    s = CLIENT_CTX.wrap_socket(raw, server_hostname="mail.example.com")
    s.sendall(req)
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    head, body = buf.split(b"\r\n\r\n", 1)
    n = int(re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I).group(1))
    while len(body) < n:
        d = s.recv(262144)
        if not d:
            break
        body += d
    s.close()
    return body


def metric(name):
    m = re.search(rb"\n" + name.encode() + rb" (\d+)", metrics_text(relay.port("admin")))
    return int(m.group(1)) if m else None


def check_transfers():
    up = os.urandom(2 * MiB)
    for i in range(3):
        ans = exchange(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(up) + up)
        is_(ans.decode(), "%d %s" % (len(up), hashlib.sha256(up).hexdigest()),
            "ktls = true, connection %d: 2 MiB upload through TLS both ways byte-exact" % (i + 1))
        body = exchange(b"GET /down HTTP/1.1\r\nHost: x\r\n\r\n")
        ok(body == DOWN, "ktls = true, connection %d: 2 MiB download byte-exact" % (i + 1))
    lines = [l for l in relay.stderr_text().splitlines() if "kTLS not available" in l]
    if kernel_has_ktls():
        diag("this kernel has the tls ULP: the fallback line is not expected (%d seen)" % len(lines))
    else:
        is_(len(lines), 1, "no tls module: exrelay logs once that kTLS is not available (%s)" %
            (lines[0] if lines else "none"))
        is_(metric("exrelay_splice_bytes_total"), 0, "no kTLS: nothing is spliced, TLS stays in user space")


run_checks([check_config, check_transfers], relay=relay, t0=T0)
