# SPDX-License-Identifier: BSD-2-Clause
"""
soak_faults.py: the chaos soak's faults (contrib/soak/soak.py): SIGHUP over configurations A, B
and X, log rotation, a stand-in killed, stopped or black-holed per wave, the descriptor limit
hit; each recorded in BOOK as a fault window.
"""

import asyncio
import os
import resource
import signal
import socket
import time

from soak_book import BOOK, NAMES  # first: it puts tests/lib on sys.path
import harness
from soak_load import probe


# ----------------------------------------------------------------------------------------------
# Faults
# ----------------------------------------------------------------------------------------------

async def reloader(s, stop, lock):
    """SIGHUP every 10 s cycling over configs A, B and the invalid X; checks each took (or, X,
    was refused and the running one kept) with a probe on a new connection."""
    cycle = ["B", "X", "A", "X"]
    k = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 10)
            return
        except asyncio.TimeoutError:
            pass
        gen = cycle[k % len(cycle)]
        k += 1
        async with lock:
            BOOK.faults["reload_" + ("invalid" if gen == "X" else "valid")] += 1
            before = s.error_log_text().count("reload failed")
            s.relay.reload(s.confs[gen])
            if gen == "X":
                refused = await asyncio.to_thread(harness.wait_for,
                                                  lambda: s.error_log_text().count("reload failed") > before, 10)
                if not refused:
                    BOOK.fail("reload", "the invalid configuration was not refused (no 'reload failed' line)")
                if s.relay.addr_stamp() != s.relay.reload_stamp:
                    BOOK.fail("reload", "the invalid configuration rewrote the address file")
            else:
                t_sig = time.monotonic()
                applied = s.error_log_text().count("configuration reloaded")
                if await asyncio.to_thread(s.relay.wait_reloaded, 10):
                    s.gen = gen
                elif BOOK.disturbed(t_sig, time.monotonic(), ["exrelay"]):
                    # Out of descriptors meanwhile (fd_fault): exrelay could not read the file
                    # (reload failed, the running configuration kept) or could not rewrite the
                    # address file (the new one applied): the log says which.
                    text = s.error_log_text()
                    if text.count("configuration reloaded") > applied:
                        s.gen = gen
                    elif text.count("reload failed") <= before:
                        BOOK.fail("reload", "configuration %s neither applied nor refused within 10 s" % gen)
                else:
                    BOOK.fail("reload", "configuration %s not applied within 10 s" % gen)
            t1 = time.monotonic()
            for _ in range(5):      # a probe may land on a stand-in that a fault has just taken away
                got = await probe(s, "after reload %s" % gen)
                if got is not None or not BOOK.disturbed(t1, time.monotonic()):
                    break
                await asyncio.sleep(1)
            if got != s.gen:
                BOOK.fail("reload", "after SIGHUP with %s a new connection runs config %r, expected %s" % (gen, got, s.gen))


async def rotator(s, stop, lock):
    """Every 15 s: the access and error logs moved aside, SIGUSR1; the files must come back."""
    await asyncio.sleep(5)
    k = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 15)
            return
        except asyncio.TimeoutError:
            pass
        k += 1
        async with lock:
            BOOK.faults["log_rotation"] += 1
            for name in ("access.log", "error.log"):
                p = os.path.join(s.dir, name)
                if os.path.exists(p):
                    os.rename(p, "%s.%d" % (p, k))
            s.relay.send_signal(signal.SIGUSR1)
            ok = await asyncio.to_thread(harness.wait_for, lambda: all(
                os.path.exists(os.path.join(s.dir, n)) for n in ("access.log", "error.log")), 10)
            if not ok:
                BOOK.fail("log_reopen", "access.log/error.log not reopened 10 s after SIGUSR1")


async def standin_fault(s, wave):
    """One stand-in fault, rotating over kind and victim: killed and restarted, stopped
    (SIGSTOP) for 4 s, black-holed (SYNs dropped) for 6 s."""
    kind = ("kill", "sigstop", "blackhole")[wave % 3]
    name = NAMES[(wave // 3 + wave) % 3]
    p = s.standins[name]
    t0 = time.monotonic()
    BOOK.window(name, t0, None)
    idx = len(BOOK.windows) - 1
    BOOK.faults["standin_" + kind] += 1
    if kind == "kill":
        os.killpg(p.pid, signal.SIGKILL)
        await asyncio.to_thread(p.proc.wait, 10)
        await asyncio.sleep(2)
        await asyncio.to_thread(s.start_standin, name)
    elif kind == "sigstop":
        os.kill(p.pid, signal.SIGSTOP)
        await asyncio.sleep(4)
        os.kill(p.pid, signal.SIGCONT)
    else:
        if not await asyncio.to_thread(p.control, None, "blackhole"):
            BOOK.fail("fault", "stand-in %s did not enter blackhole mode" % name)
        await asyncio.sleep(6)
        if not await asyncio.to_thread(p.control, None, "normal"):
            BOOK.fail("fault", "stand-in %s did not leave blackhole mode" % name)
    BOOK.windows[idx] = (name, t0, time.monotonic())
    BOOK.timeline.append((t0, time.monotonic(), kind, name))


async def fd_fault(s, wave):
    """The descriptor limit hit: exrelay's RLIMIT_NOFILE lowered to what it uses plus 16 while
    a burst of 60 connections arrives (0.5 s), or a burst of max_connections + 40 connections
    held for 2 s. The burst goes straight to exrelay's traffic port (no PROXY header yet)."""
    kind = ("prlimit", "maxconn")[wave % 2]
    t0 = time.monotonic()
    BOOK.window("all", t0, None)
    idx = len(BOOK.windows) - 1
    BOOK.faults["fd_" + kind] += 1
    socks = []
    old = resource.prlimit(s.relay.pid, resource.RLIMIT_NOFILE)

    def burst(n):
        for _ in range(n):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect_ex(("127.0.0.1", s.front))
            except OSError:
                c.close()
                break
            socks.append(c)
    try:
        if kind == "prlimit":
            resource.prlimit(s.relay.pid, resource.RLIMIT_NOFILE, (len(os.listdir("/proc/%d/fd" % s.relay.pid)) + 16, old[1]))
            burst(60)
            await asyncio.sleep(0.5)
            resource.prlimit(s.relay.pid, resource.RLIMIT_NOFILE, old)
            await asyncio.sleep(0.5)
        else:
            burst(s.maxconn + 40)
            await asyncio.sleep(2)
    finally:
        resource.prlimit(s.relay.pid, resource.RLIMIT_NOFILE, old)
        for c in socks:
            c.close()
    BOOK.windows[idx] = ("all", t0, time.monotonic())
    BOOK.timeline.append((t0, time.monotonic(), kind, "exrelay"))


async def wave_faults(w):
    """The faults of one wave: a stand-in fault at 5 s, the descriptor limit at half-time."""
    length = w.end - time.monotonic()
    if "relay-stop" in w.s.args.inject and w.n == 1:     # exrelay frozen: health_gap must fire
        await asyncio.sleep(3)
        os.kill(w.s.relay.pid, signal.SIGSTOP)
        await asyncio.sleep(2.5)
        os.kill(w.s.relay.pid, signal.SIGCONT)
        await asyncio.sleep(0.5)
    else:
        await asyncio.sleep(5)
    await standin_fault(w.s, w.n)
    await asyncio.sleep(max(0.0, length / 2 - (length - (w.end - time.monotonic()))))
    if w.on():
        await fd_fault(w.s, w.n)
