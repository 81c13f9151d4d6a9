#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
soak.py: exrelay's chaos soak (run it through contrib/soak/run; see contrib/soak/README).

Topology, all on loopback with free ports:
  clients (asyncio, from 127.0.0.2..250) -> HAProxy (mode tcp, send-proxy-v2, checks + agent)
      -> exrelay (the build's relay/exrelay: ASan+UBSan with --enable-sanitizers)
           -> three Exchange stand-ins ex1..ex3 (tests/standin/exchange.py --name-header)
           -> Apache (PROXY v1; static files and the echo CGI) for every other path
Load, in waves, all at once: RPC over HTTP virtual connections (echo, source and sink streams,
SHA-256 checked by the client and by the stand-in), OWA/EWS-like keep-alive GETs and POSTs
(pattern bodies, chunked both ways, Apache files and CGI), NTLM keep-alive clients, MAPI
NotificationWait, slow readers and writers, malformed requests, clients that reset mid-body and
broken backend responses. Faults: SIGHUP every 10 s over config A, B and an invalid one; log
rotation (mv + SIGUSR1) every 15 s; per wave a stand-in killed and restarted, stopped (SIGSTOP)
or black-holed, and the descriptor limit hit (RLIMIT_NOFILE lowered, or a burst over
max_connections); a drain (SIGTERM) at the end. Then the checks listed in the README; a summary
table; exit status 1 on any failure.

The code is split by part, beside this file: soak_book.py (constants, the Book of counts and
failures), soak_client.py (the HTTP client), soak_setup.py (the processes), soak_load.py (the
clients), soak_faults.py (the faults), soak_checks.py (the checks after the run); here the
waves, the drain, the report and the command line.
"""

import argparse
import asyncio
import os
import random
import resource
import signal
import socket
import sys
import time

sys.dont_write_bytecode = True      # no __pycache__ beside the modules: EXTRA_DIST ships contrib/ whole
from soak_book import BOOK, DRAIN_TIMEOUT, T0, T_IO, TOP  # noqa: E402 - first: it puts tests/lib on sys.path
import harness  # noqa: E402
import rpch  # noqa: E402
from soak_checks import (check_access, check_health, check_sanitizers, check_series,  # noqa: E402
                         check_standins, tamper_access)
from soak_client import Client, Cut  # noqa: E402
from soak_faults import reloader, rotator, wave_faults  # noqa: E402
from soak_load import Wave, malformed_loop, ntlm_loop, owa_loop, reset_loop, rpc_loop, slow_loop  # noqa: E402
from soak_setup import Setup  # noqa: E402


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------

async def quiet(s, lock, series, label):
    """After a wave: waits until exrelay holds no client connection, then samples its
    descriptors (the minimum over 1 s: health checks come and go) and RSS."""
    ok = await asyncio.to_thread(harness.wait_for, lambda: s.active() == 0, 30, 0.2)
    async with lock:
        fds = []
        for _ in range(10):
            fds.append(s.relay_fds())
            await asyncio.sleep(0.1)
    series.append((label, min(fds), s.relay.rss_kib(), ok))


async def run_wave(s, n, seconds, args):
    """One wave of load with its faults; returns when every client finished."""
    w = Wave(s, n, seconds)
    tasks = [rpc_loop(w, i) for i in range(args.pairs)]
    tasks += [owa_loop(w, i) for i in range(args.clients)]
    tasks += [ntlm_loop(w, i) for i in range(max(2, args.clients * 2 // 3))]
    tasks += [slow_loop(w, i) for i in range(max(2, args.clients // 3))]
    tasks += [malformed_loop(w, i) for i in range(2)]
    tasks += [reset_loop(w, i) for i in range(2)]
    tasks = [asyncio.ensure_future(t) for t in tasks]
    faults = asyncio.ensure_future(wave_faults(w))
    done, pending = await asyncio.wait(tasks + [faults], timeout=seconds + 2 * T_IO + 30)
    for t in pending:
        t.cancel()
    if pending:
        BOOK.fail("hung_client", "%d client(s) still running %.0f s after the wave" % (len(pending), 2 * T_IO + 30))
    for t in done:
        if t.exception() is not None:
            BOOK.fail("client_crash", "%s: %s" % (type(t.exception()).__name__, t.exception()))


async def final_drain(s):
    """SIGTERM with RPC channels and NTLM connections open: health says draining, the channels
    keep echoing, then they close and exrelay exits 0 before drain_timeout."""
    BOOK.faults["drain"] += 1
    vcs = []
    for _ in range(6):
        try:
            cookie = rpch.new_cookie()
            out = await Client.open(s.hport)
            rid = BOOK.rid("drain")
            BOOK.log_expect(rid, "exact")
            await out.send(rpch.rpc_out_request("/rpc/rpcproxy.dll?x:6001&rid=" + rid) + rpch.conn_a1(cookie))
            await out.head()
            await out.exactly(rpch.A3_LEN)
            inn = await Client.open(s.hport, out.src)
            rid = BOOK.rid("drain")
            BOOK.log_expect(rid, "exact")
            await inn.send(rpch.rpc_in_request("/rpc/rpcproxy.dll?x:6001&rid=" + rid) + rpch.conn_b1(cookie))
            await out.exactly(rpch.C2_LEN)
            vcs.append((inn, out))
        except (OSError, asyncio.TimeoutError, ValueError, Cut) as e:
            BOOK.fail("drain", "opening a channel before the drain: %s" % e)
    t0 = time.monotonic()
    s.relay.send_signal(signal.SIGTERM)
    draining = await asyncio.to_thread(harness.wait_for, lambda: "draining" in health_body(s), 5)
    if not draining:
        BOOK.fail("drain", "/health did not say draining after SIGTERM")
    for _ in range(3):
        for inn, out in vcs:
            data = random.randbytes(3000)
            try:
                await inn.send(data)
                if await out.exactly(len(data)) != data:
                    BOOK.fail("drain", "echo differs during the drain")
            except (OSError, asyncio.TimeoutError, Cut) as e:
                BOOK.fail("drain", "a channel broke during the drain: %s" % e)
        await asyncio.sleep(0.5)
    for inn, out in vcs:
        inn.close()
        out.close()
    rc = await asyncio.to_thread(lambda: s.relay.proc.wait(DRAIN_TIMEOUT + 10))
    took = time.monotonic() - t0
    if rc != 0:
        BOOK.fail("drain", "exrelay exit status %r after SIGTERM" % rc)
    if took >= DRAIN_TIMEOUT:
        BOOK.fail("drain", "exrelay took %.1f s to drain (drain_timeout %d): connections left open" % (took, DRAIN_TIMEOUT))
    return rc, took


def health_body(s):
    """The admin port's /health answer (status line and body), or ""."""
    try:
        with socket.create_connection(("127.0.0.1", s.admin), timeout=2) as c:
            c.sendall(b"GET /health HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
            c.settimeout(2)
            return c.recv(4096).decode("latin-1")
    except OSError:
        return ""



def report(series, extra, args, elapsed):
    """Prints the summary table."""
    print("\n== exrelay soak: %d min requested, %.0f s run, %d RPC clients, %d other clients ==" % (
        args.minutes, elapsed, args.pairs, args.clients))
    print("\n%-18s %8s %8s %8s %8s" % ("requests", "total", "ok", "cut", "error"))
    kinds = sorted(set(k for k, _ in BOOK.res))
    tot = [0, 0, 0, 0]
    for k in kinds:
        row = [BOOK.res[(k, "ok")] + BOOK.res[(k, "cut")] + BOOK.res[(k, "err")], BOOK.res[(k, "ok")],
               BOOK.res[(k, "cut")], BOOK.res[(k, "err")]]
        tot = [a + b for a, b in zip(tot, row)]
        print("%-18s %8d %8d %8d %8d" % ((k,) + tuple(row)))
    print("%-18s %8d %8d %8d %8d" % (("all",) + tuple(tot)))
    print("request ids issued %d; cuts and errors inside fault windows: %s" % (
        BOOK.seq, dict(BOOK.expected_errors) or "none"))
    print("\nbytes: %.1f MiB sent by clients, %.1f MiB received" % (BOOK.bytes_out / 2 ** 20, BOOK.bytes_in / 2 ** 20))
    print("\n%-22s %6s" % ("faults injected", "count"))
    for k in sorted(BOOK.faults):
        print("%-22s %6d" % (k, BOOK.faults[k]))
    print("\nfault windows (s from start): " + ", ".join(
        "%s %s %.0f-%.0f" % (k, tg, a - T0, b - T0) for a, b, k, tg in BOOK.timeline))
    if BOOK.excused:
        with open(os.path.join(args.workdir, "excused.txt"), "w") as f:
            f.write("\n".join(BOOK.excused) + "\n")
        print("first cuts/errors inside fault windows (all in excused.txt of the work folder):")
        for d in BOOK.excused[:6]:
            print("  " + d[:200])
    print("\nexrelay after each wave (idle):")
    print("%-12s %6s %10s" % ("when", "fds", "RSS KiB"))
    for label, fds, rss, _ in series:
        print("%-12s %6d %10s" % (label, fds, rss))
    for k, v in extra.items():
        print("%s: %s" % (k, v))
    print("\n%-22s %6s" % ("failures", "count"))
    if not BOOK.failures:
        print("%-22s %6d" % ("(none)", 0))
    for k in sorted(BOOK.failures):
        print("%-22s %6d" % (k, len(BOOK.failures[k])))
    for k in sorted(BOOK.failures):
        for d in BOOK.failures[k][:8]:
            print("  %s: %s" % (k, d))
    print("\nRESULT: %s" % ("PASS" if not BOOK.failures else "FAIL"), flush=True)


async def main_async(args):
    """Sets up, runs the waves with the faults, drains, checks, reports."""
    s = await asyncio.to_thread(Setup, args)
    print("# soak: workdir %s; HAProxy :%d -> exrelay :%d (admin :%d); stand-ins %s; Apache :%d" % (
        s.dir, s.hport, s.front, s.admin, s.ports, s.apache.port), flush=True)
    lock = asyncio.Lock()
    stop = asyncio.Event()
    series = []
    t_start = time.monotonic()
    await quiet(s, lock, series, "start")
    bg = [asyncio.ensure_future(reloader(s, stop, lock)), asyncio.ensure_future(rotator(s, stop, lock))]
    total = args.minutes * 60
    wave_len = min(45, max(20, total / 3 - 10))
    n = 0
    while n == 0 or time.monotonic() - t_start + wave_len + 10 < total:
        n += 1
        print("# wave %d (%.0f s) at t=%.0f" % (n, wave_len, time.monotonic() - T0), flush=True)
        await run_wave(s, n, wave_len, args)
        await quiet(s, lock, series, "wave %d" % n)
        if not s.relay.alive():
            BOOK.fail("crash", "exrelay exited during wave %d (status %r)" % (n, s.relay.returncode))
            break
    stop.set()
    await asyncio.gather(*bg, return_exceptions=True)
    rc, took = (None, 0.0)
    if s.relay.alive():
        rc, took = await final_drain(s)
    t_end = time.monotonic()
    s.poller.stop()
    extra = {"drain": "exit status %r after %.1f s" % (rc, took)}
    extra["health"] = check_health(s, t_start, t_end)
    extra["sanitizer lines"] = check_sanitizers(s)
    if "log-dup" in args.inject:            # one line doubled, one removed: both must be caught
        tamper_access(s)
    extra["access log"] = check_access(s)
    extra["stand-ins"] = check_standins(s)
    check_series(series)
    args.workdir = s.dir
    report(series, extra, args, time.monotonic() - t_start)
    return 1 if BOOK.failures else 0


def main():
    """Command line."""
    ap = argparse.ArgumentParser(description="exrelay chaos soak (see contrib/soak/README)")
    ap.add_argument("--minutes", type=float, default=3, help="length of the load phase (default 3)")
    ap.add_argument("--pairs", type=int, default=40, help="concurrent RPC virtual connections (default 40)")
    ap.add_argument("--clients", type=int, default=8, help="OWA-like clients; NTLM and slow ones scale with it (default 8)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    ap.add_argument("--inject", action="append", default=[], choices=("relay-stop", "log-dup", "misroute"),
                    help="break something on purpose, to see the checks catch it (the run must FAIL): "
                    "relay-stop (exrelay SIGSTOPped 2.5 s: health_gap), log-dup (an access-log line doubled "
                    "and one removed), misroute (/owa sent to Apache: wrong_backend)")
    args = ap.parse_args()
    for path in (harness.HAPROXY_BIN, harness.APACHE_BIN, harness.exrelay_path()):
        if not os.access(path, os.X_OK):
            sys.exit("soak: %s is missing (build exrelay first; apt-get install haproxy apache2)" % path)
    seed = args.seed if args.seed is not None else int(time.time())
    random.seed(seed)
    print("# soak seed %d" % seed, flush=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asan = os.environ.get("ASAN_OPTIONS", "")
    os.environ["ASAN_OPTIONS"] = "quarantine_size_mb=16:detect_leaks=1" + (":" + asan if asan else "")
    lsan = os.environ.get("LSAN_OPTIONS", "")
    os.environ["LSAN_OPTIONS"] = "suppressions=%s/tests/lsan.supp" % TOP + (":" + lsan if lsan else "")
    try:
        rc = asyncio.run(main_async(args))
    except RuntimeError as e:
        print("soak: setup failed: %s" % e, flush=True)
        rc = 2
    harness.cleanup()
    sys.exit(rc)


if __name__ == "__main__":
    main()
