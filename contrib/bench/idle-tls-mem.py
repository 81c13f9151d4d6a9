#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
idle-tls-mem.py: what an idle TLS client connection costs exrelay in memory (VmRSS).

Starts exrelay (one worker, a TLS listener with the tests' ECDSA P-256 certificate) in front of
a small plaintext backend of its own (a child process: answers GET with 100 bytes, swallows
anything else), reads exrelay's VmRSS, opens N TLS connections one after the other, reads VmRSS
again, and prints (after - before) / N. A warm-up of 50 connections is opened and closed first,
so that the allocator's and GnuTLS's one-time costs are in "before".

Modes (--mode):
  idle   handshake, one keep-alive GET answered (100-byte body), then idle (default)
  hello  handshake only
  rpc    an RPC_IN_DATA channel: head with a 1 GiB Content-Length and the first PDU (CONN/B1,
         so that exrelay picks the server by its cookie and opens the backend), then idle.
         Each channel is a TLS client connection plus a plaintext backend connection.

  contrib/bench/idle-tls-mem.py --exrelay build-bench/relay/exrelay [--mode rpc] [--conns 20000]

--heaptrack runs exrelay under heaptrack's preload library (package heaptrack) and then lists
where the memory of one connection goes: every allocation site called about once per connection
or more, with its bytes at the peak divided by the number of connections (the first frames name
the site: gnutls_init is GnuTLS's session structure, conn_accept exrelay's connection).

Needs a hard RLIMIT_NOFILE above 2 x N + 1024 (exrelay holds a client and a backend socket per
connection): the script raises its soft limit (and the hard one where allowed; exrelay inherits
them); below that it measures as many as fit and extrapolates the RSS to N. Prints a table, then one JSON line. The memory is user space only
(VmRSS): kernel socket buffers are not in it. Not part of `make check`.
"""

import argparse
import json
import os
import re
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))
import harness  # noqa: E402  (cleanup of children and temp dirs at exit)
import rpch  # noqa: E402
from benchlib import rss_kib  # noqa: E402

CERTS = os.path.join(TOP, "tests", "certs")

# The backend: one thread, selectors; a GET gets 100 bytes, everything else is read and dropped.
BACKEND = r'''
import selectors, socket, sys
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0)); ls.listen(4096); ls.setblocking(False)
print(ls.getsockname()[1], flush=True)
sel = selectors.DefaultSelector(); sel.register(ls, selectors.EVENT_READ)
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100
while True:
    for key, _ in sel.select():
        if key.fileobj is ls:
            try:
                c, _ = ls.accept()
            except OSError:
                continue
            c.setblocking(False); sel.register(c, selectors.EVENT_READ)
            continue
        c = key.fileobj
        try:
            d = c.recv(65536)
        except OSError:
            d = b""
        if not d:
            sel.unregister(c); c.close()
        elif d.startswith(b"GET "):
            c.send(ANSWER)
'''

CONFIG = '''
global = { log_level = "warning"; workers = 1; drain_timeout = 1; max_connections = %(maxc)d; };
timeouts = { tls_handshake = 60; request_head = 60; client_idle = 3600; connect = 10; };
listeners = (
  { name = "tls"; bind = "127.0.0.1:0"; proxy_protocol = "off";
    tls = { certificates = ( { cert = "%(cert)s"; key = "%(key)s"; } ); }; }
);
backends = ( { name = "be"; servers = [ "127.0.0.1:%(port)d" ]; idle_timeout = 3600; } );
routes = ( { backend = "be"; } );
'''


def read_head(s):
    """Reads one response head and a Content-Length body from s; returns the status line."""
    head, body = harness.read_head(s)
    if head is None:
        raise RuntimeError("closed before a response")
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    while len(body) < n:
        d = s.recv(4096)
        if not d:
            raise RuntimeError("closed inside a body")
        body += d
    return head.split(b"\r\n", 1)[0]


def open_one(port, ctx, mode):
    """One TLS connection in the state `mode` describes."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s = ctx.wrap_socket(raw, server_hostname="mail.example.com")
    if mode == "idle":
        s.sendall(b"GET /x HTTP/1.1\r\nHost: mail.example.com\r\n\r\n")
        st = read_head(s)
        if b" 200 " not in st:
            raise RuntimeError("unexpected answer %r" % st)
    elif mode == "rpc":
        s.sendall(b"RPC_IN_DATA /rpc/rpcproxy.dll?ex1:6001 HTTP/1.1\r\nHost: mail.example.com\r\n"
                  b"Content-Length: 1073741824\r\n\r\n" + rpch.conn_b1(rpch.new_cookie()))
    return s


HEAPTRACK_PRELOAD = "/usr/lib/heaptrack/libheaptrack_preload.so"
HEAPTRACK_INTERPRET = "/usr/lib/heaptrack/libexec/heaptrack_interpret"


def heaptrack_sites(raw, conns):
    """The allocation sites heaptrack recorded in `raw` that were called at least 0.9 x `conns`
    times, as (bytes per connection at the peak, calls, "frame <- frame")."""
    data = raw + ".zst"
    with open(raw, "rb") as fin, open(data, "wb") as fout:
        interp = subprocess.Popen([HEAPTRACK_INTERPRET], stdin=fin, stdout=subprocess.PIPE)
        subprocess.run(["zstd", "-q", "-c"], stdin=interp.stdout, stdout=fout, check=True)
        interp.stdout.close()
        if interp.wait() != 0:
            raise RuntimeError("heaptrack_interpret failed")
    out = subprocess.run(["heaptrack_print", "-f", data, "--print-peaks", "1", "--print-allocators", "0",
                          "--print-temporary", "0", "--print-leaks", "0", "--merge-backtraces", "0",
                          "--peak-limit", "200", "-s", "0"], capture_output=True, text=True, check=True).stdout
    units = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}         # heaptrack_print's units are decimal
    sites, lines = [], out.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"([0-9.]+)([KMG]?)B? peak memory consumed over (\d+) calls from", line)
        if not m or int(m.group(3)) < 0.9 * conns:
            continue
        frames = [x.strip() for x in lines[i + 1:i + 7] if not x.strip().startswith(("in ", "at ", "and "))]
        per = float(m.group(1)) * units[m.group(2)] / conns
        if per >= 1:
            sites.append((per, int(m.group(3)), " <- ".join(frames[:2])))
    return sorted(sites, reverse=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exrelay", default=os.environ.get("EXRELAY", os.path.join(TOP, "relay", "exrelay")))
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--mode", choices=("idle", "hello", "rpc"), default="idle")
    ap.add_argument("--heaptrack", action="store_true", help="list the allocation sites per connection")
    args = ap.parse_args()
    if args.heaptrack and not os.path.exists(HEAPTRACK_PRELOAD):
        raise SystemExit("idle-tls-mem: --heaptrack needs the package heaptrack (%s)" % HEAPTRACK_PRELOAD)
    os.environ["EXRELAY"] = args.exrelay

    want = 2 * args.conns + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asked, limit = args.conns, resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    per = 2 if args.mode in ("rpc", "idle") else 1	# exrelay's descriptors per connection
    if per * args.conns + 1024 > limit:
        args.conns = (limit - 1024) // per
        print("# RLIMIT_NOFILE %d: measuring %d connections, extrapolating to %d" % (limit, args.conns, asked),
              file=sys.stderr)
    be = subprocess.Popen([sys.executable, "-c", BACKEND], stdout=subprocess.PIPE)
    try:
        port = int(be.stdout.readline())
        raw = None
        if args.heaptrack:
            raw = os.path.join(harness.tmpdir("exrelay-heaptrack-"), "raw")
            os.environ.update(LD_PRELOAD=HEAPTRACK_PRELOAD, DUMP_HEAPTRACK_OUTPUT=raw)
        try:
            relay = harness.start_exrelay(CONFIG % dict(cert=os.path.join(CERTS, "mail-ecdsa.pem"),
                                                        key=os.path.join(CERTS, "mail-ecdsa.test-key.pem"),
                                                        port=port, maxc=args.conns + 1000))
        finally:
            for k in ("LD_PRELOAD", "DUMP_HEAPTRACK_OUTPUT"):
                os.environ.pop(k, None)
        lport = relay.port("tls")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        warm = [open_one(lport, ctx, args.mode) for _ in range(50)]
        for s in warm:
            s.close()
        time.sleep(1.0)	# let exrelay see the closes (not a readiness wait: nothing to poll)
        before = rss_kib(relay.pid)
        t0 = time.monotonic()
        conns = []
        for i in range(args.conns):
            conns.append(open_one(lport, ctx, args.mode))
            if i % 1000 == 999:
                print("# %d open, exrelay RSS %d KiB" % (i + 1, rss_kib(relay.pid)), file=sys.stderr)
        if args.mode == "rpc":
            time.sleep(2.0)	# the last channels' backend connects
        after = rss_kib(relay.pid)
        took = time.monotonic() - t0
        fds = len(os.listdir("/proc/%d/fd" % relay.pid))
        res = {"mode": args.mode, "conns": args.conns, "rss_before_kib": before, "rss_after_kib": after,
               "kib_per_conn": round((after - before) / args.conns, 2), "exrelay_fds": fds,
               "open_seconds": round(took, 1), "exrelay": args.exrelay}
        print("mode %-5s  connections %6d  RSS before %7d KiB  after %7d KiB  per connection %.2f KiB"
              "  (exrelay fds %d)" % (args.mode, args.conns, before, after, res["kib_per_conn"], fds))
        if asked != args.conns:
            res["extrapolated"] = {"conns": asked, "rss_kib": round(before + res["kib_per_conn"] * asked)}
            print("extrapolated to %d connections: RSS %d KiB (%.1f MiB)" % (
                asked, res["extrapolated"]["rss_kib"], res["extrapolated"]["rss_kib"] / 1024))
        for s in conns:
            s.close()
        if raw:
            relay.stop(sig=signal.SIGTERM)      # a clean exit: heaptrack writes its last records
            res["heaptrack"] = []
            sites = heaptrack_sites(raw, args.conns)
            print("allocation sites per connection (heaptrack, at the peak; %.0f B in all):" % sum(x[0] for x in sites))
            for per, calls, where in sites:
                print("  %8.0f B  %7d calls  %s" % (per, calls, where))
                res["heaptrack"].append({"bytes": round(per), "calls": calls, "site": where})
        print(json.dumps(res))
    finally:
        be.kill()
        be.wait()


if __name__ == "__main__":
    main()
