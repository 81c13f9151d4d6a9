#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_service_load.py: exrelay's worker threads, max_connections and EMFILE back-off (TAP).

  * workers = 2: one SO_REUSEPORT listening socket per worker for each listener; many short client
    connections all answered; both worker threads did part of the work (per-thread voluntary
    context switches and CPU ticks from /proc/PID/task); /metrics merges the workers' counters.
  * workers = 0 gives one worker per CPU (listening sockets counted).
  * max_connections = 10: ten held connections, the 11th is accepted by the kernel but not served
    until one closes, then it is; the agent port still answers; a burst of 25 slow requests never
    has more than 10 at the backend at once, and all are answered.
  * RLIMIT_NOFILE lowered on the running daemon (prlimit) and more clients than file descriptors:
    no crash, the EMFILE back-off is logged, no busy loop while it lasts; once the clients close,
    requests are served again and no descriptor leaked.
Run: cd tests && EXRELAY=/path/to/exrelay python3 integration/t_service_load.py
"""

import os
import resource
import select
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import ok, is_, diag, run_checks, start_standin, wait_for  # noqa: E402
import rpch  # noqa: E402
from service import spawn_exrelay, metrics, metric, agent_line, thread_stats, listening_sockets, \
    listen_queues, stop_all  # noqa: E402

T0 = time.monotonic()
ex = start_standin(ping_interval=0)
relays = []


def config(workers, max_connections=20000, agent=False, extra="", check=""):
    """A config with a public listener, an admin one (and an agent one), one backend (with the
    health check settings check), one route."""
    return '''global = { workers = %d; max_connections = %d; drain_timeout = 5; log_level = "info"; %s };
timeouts = { request_head = 10; client_idle = 30; connect = 3; };
listeners = (
  { name = "public"; bind = "127.0.0.1:0"; },
  { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; }%s );
backends = ( { name = "one"; servers = [ "127.0.0.1:%d" ]; idle_timeout = 30; %s } );
routes = ( { backend = "one"; } );
''' % (workers, max_connections, extra,
       ',\n  { name = "agent"; bind = "127.0.0.1:0"; role = "agent"; }' if agent else "", ex.port,
       "check = { %s };" % check if check else "")


def get(port, target, timeout=10.0):
    """One GET on a fresh connection (closed after); returns the status."""
    with rpch.HttpConn("127.0.0.1", port, timeout=timeout) as c:
        resp, _ = c.request("GET", target, [("Host", "x"), ("Connection", "close")], timeout=timeout)
        return resp.status


# ----------------------------------------------------------------------------------------------

def check_workers():
    """workers = 2: two listening sockets, the load spread over both threads, merged counters."""
    r = spawn_exrelay(config(2))
    port, admin = r.port("public"), r.port("admin")
    relays.append(r)
    # /proc/net/tcp may skip rows while other tests churn sockets: look again for a while.
    for p_, what in ((port, "public"), (admin, "admin")):
        wait_for(lambda: listening_sockets(p_, r.pid) == 2, 3)
        is_(listening_sockets(p_, r.pid), 2, "workers = 2: two listening sockets on the %s port (SO_REUSEPORT)" % what)
    base_total = metric(metrics(admin), "exrelay_connections_total", listener="public")
    before = thread_stats(r.pid)
    diag("threads: %d (%s)" % (len(before), sorted(before)))
    ok(len(before) >= 3, "workers = 2: at least 3 threads (main + 2 workers): %d" % len(before))

    nthreads, nconns, nreq = 6, 40, 2
    results = {"ok": 0, "bad": []}
    lock = threading.Lock()

    def client(k):
        """nconns keep-alive connections with nreq requests each."""
        for i in range(nconns):
            try:
                with rpch.HttpConn("127.0.0.1", port, timeout=15) as c:
                    for j in range(nreq):
                        resp, body = c.request("GET", "/w/%d/%d/%d" % (k, i, j), [("Host", "x")], timeout=15)
                        with lock:
                            if resp.status == 200 and b'"/w/%d/%d/%d"' % (k, i, j) in body:
                                results["ok"] += 1
                            else:
                                results["bad"].append(resp.status)
            except Exception as e:              # noqa: BLE001 (counted as a failure)
                with lock:
                    results["bad"].append(repr(e))
    t = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(nthreads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    dt = time.monotonic() - t
    total = nthreads * nconns * nreq
    ok(results["ok"] == total and not results["bad"],
       "workers = 2: %d requests over %d connections all answered 200 with their own body in %.1f s (bad: %r)"
       % (total, nthreads * nconns, dt, results["bad"][:5]))
    after = thread_stats(r.pid)
    deltas = {tid: (after[tid][0] - before.get(tid, (0, 0))[0], after[tid][1] - before.get(tid, (0, 0))[1])
              for tid in after if tid != r.pid}
    diag("per-thread (voluntary ctxt switches, cpu ticks) during the load: %s; main thread: %s"
         % (deltas, (after[r.pid][0] - before[r.pid][0], after[r.pid][1] - before[r.pid][1])))
    busy = sorted(deltas.values(), reverse=True)
    sw_total = sum(v[0] for v in busy)
    top2 = sorted((v[0] for v in busy), reverse=True)[:2]
    ok(len(top2) == 2 and sw_total > 0 and min(top2) >= 0.15 * sw_total,
       "workers = 2: both worker threads served part of the load (context switches of the two busiest "
       "threads %r of %d)" % (top2, sw_total))
    cpu = sorted((v[1] for v in busy), reverse=True)[:2]
    ok(len(cpu) == 2 and min(cpu) > 0, "workers = 2: both worker threads used CPU time (ticks %r)" % (cpu,))

    def settled():
        """/metrics once every public connection's close was counted."""
        m = metrics(admin)
        return m if metric(m, "exrelay_connections_active", listener="public") == 0 else None
    m = wait_for(settled, 10)
    ok(m, "workers = 2: public connections active back to 0")
    m = m or {}
    is_(metric(m, "exrelay_connections_total", listener="public") - base_total, nthreads * nconns,
        "workers = 2: /metrics connections_total{public} merged over the workers")
    is_(metric(m, "exrelay_requests_total", route="one", code="200"), total,
        "workers = 2: /metrics requests_total{one,200} merged over the workers")


def check_workers_default():
    """workers = 0: one worker per CPU."""
    r = spawn_exrelay(config(0))
    port, admin = r.port("public"), r.port("admin")
    relays.append(r)
    ncpu = os.sysconf("SC_NPROCESSORS_ONLN")
    wait_for(lambda: listening_sockets(port, r.pid) == ncpu, 3)   # /proc/net/tcp may skip rows under load
    is_(listening_sockets(port, r.pid), ncpu, "workers = 0: one listening socket per CPU (%d)" % ncpu)
    is_(get(port, "/default"), 200, "workers = 0: serves")
    is_(r.stop(), 0, "workers = 0: SIGTERM with nothing open: exit 0")


def check_max_connections():
    """max_connections = 10 over 2 workers: the 11th waits, then is served; bursts never exceed 10."""
    r = spawn_exrelay(config(2, max_connections=10, agent=True))
    port, admin, agent = r.port("public"), r.port("admin"), r.port("agent")
    relays.append(r)
    held = []
    for i in range(10):
        c = rpch.HttpConn("127.0.0.1", port, timeout=10)
        resp, _ = c.request("GET", "/held-%d" % i, [("Host", "x")], timeout=10)
        held.append((c, resp.status))
    is_([s for _, s in held], [200] * 10, "max_connections = 10: ten keep-alive connections served and held")
    is_(listen_queues(port, r.pid), [0, 0], "max_connections: nothing waiting in the accept queues yet")
    # Connections beyond the limit, until both workers' public sockets hold one in their accept
    # queue: then both workers are paused for sure (SO_REUSEPORT spreads by hash).
    waiting = []
    for i in range(40):
        c = rpch.HttpConn("127.0.0.1", port, timeout=10)
        c.send_request("GET", "/waiting-%d" % i, [("Host", "x")])
        waiting.append(c)
        if len(waiting) >= 2 and wait_for(lambda: min(listen_queues(port, r.pid) or [0]) >= 1, 0.3):
            break
    queues = listen_queues(port, r.pid)
    diag("max_connections: %d connections beyond the limit; accept queues %r" % (len(waiting), queues))

    def answered(c, timeout):
        """The status if a response arrives within timeout, else None."""
        try:
            return c.read_response(timeout=timeout).status
        except socket.timeout:
            return None
        except (OSError, EOFError) as e:
            return repr(e)
    first = answered(waiting[0], 1.5)
    others = [answered(c, 0.01) for c in waiting[1:]]
    ok(first is None and others == [None] * len(others) and not [e for e in ex.events("request")
                                                                 if e["target"].startswith("/waiting-")],
       "max_connections = 10: %d connections beyond the limit are not served while 10 are open (%r)"
       % (len(waiting), [first] + others))
    ok(len(queues) == 2 and min(queues) >= 1, "max_connections: both workers paused (accept queues %r)" % queues)
    ok(r.alive(), "at the limit: exrelay runs")
    agents = [None] * 6

    def ask(i):
        """One agent connection."""
        try:
            agents[i] = agent_line(agent, timeout=2)
        except OSError as e:
            agents[i] = repr(e)
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(agents))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    ok(agents == [b"up ready\n"] * len(agents), "at the limit: the agent port still answers (%r)" % agents[:2])
    t = time.monotonic()
    held[0][0].close()
    served = {}

    def poll_waiting():
        """Reads any response that arrived; returns {index: status}."""
        for i, c in enumerate(waiting):
            if i not in served:
                st = answered(c, 0.01)
                if st is not None:
                    served[i] = st
        return served
    served_first = wait_for(lambda: dict(poll_waiting()) or None, 5)
    dt = time.monotonic() - t
    ok(served_first and list(served_first.values()) == [200],
       "max_connections: one waiting connection served once one of the 10 closed (%.2f s later: %r)"
       % (dt, served_first))
    wait_for(lambda: len(poll_waiting()) > 1, 1.0)          # a 1 s window: nobody else may get in
    ok(len(served) == 1, "max_connections: still exactly one of the waiting connections served after 1 s (%r)"
       % served)
    for c, _ in held[1:]:
        c.close()
    ok(wait_for(lambda: len(poll_waiting()) == len(waiting), 10) and set(served.values()) == {200},
       "max_connections: once the held connections closed, all %d waiting ones are served" % len(waiting))
    for c in waiting:
        c.close()

    # A burst of slow requests from many clients at once: never more than 10 at the backend.
    ok(wait_for(lambda: metric(metrics(admin), "exrelay_connections_active", listener="public") == 0, 10),
       "max_connections: all connections closed before the burst")
    n = 25
    statuses = [None] * n
    go = threading.Event()

    def burst(i):
        """One slow request on its own connection."""
        go.wait(10)
        try:
            statuses[i] = get(port, "/burst-%d?sleep=0.6" % i, timeout=30)
        except Exception as e:                  # noqa: BLE001
            statuses[i] = repr(e)
    threads = [threading.Thread(target=burst, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    t = time.monotonic()
    go.set()
    for th in threads:
        th.join(40)
    dt = time.monotonic() - t
    is_(statuses, [200] * n, "max_connections: a burst of %d slow requests all answered (%.1f s)" % (n, dt))
    # Overlap at the stand-in. A slot is held at least from the request's arrival (logged when the
    # head is read) until the stand-in starts answering, 0.6 s later (?sleep): these sub-intervals
    # can only under-count the real overlap (the "response" event is logged after sending, late
    # under load, so it could over-count).
    starts = [e["t"] for e in ex.events("request") if str(e.get("target", "")).startswith("/burst-")]
    points = sorted([(s_, 1) for s_ in starts] + [(s_ + 0.6, -1) for s_ in starts], key=lambda p: (p[0], p[1]))
    cur = peak = 0
    for _, d in points:
        cur += d
        peak = max(peak, cur)
    ok(len(starts) == n and 1 <= peak <= 10,
       "max_connections = 10 over 2 workers: at most 10 burst requests at the backend at once (peak %d, %d seen)"
       % (peak, len(starts)))
    ok(dt >= 0.6 * 2 * 0.9, "max_connections: the burst took at least two rounds of 0.6 s (%.2f s)" % dt)
    ok(r.alive(), "max_connections: exrelay still runs")


def check_emfile():
    """A low RLIMIT_NOFILE and more clients than descriptors: back-off, recovery, no leak; the
    server is not blamed for this host's shortage (checks every 50 ms, fall = 1)."""
    r = spawn_exrelay(config(1, check="interval = 0.05; timeout = 1; rise = 1; fall = 1;"))
    port, admin = r.port("public"), r.port("admin")
    r.errors_expected = True            # "backend one: socket: Too many open files" while out of fds
    relays.append(r)
    is_(get(port, "/emfile-warmup"), 200, "EMFILE: served before the limit")
    base = len(os.listdir("/proc/%d/fd" % r.pid))
    limit = max(64, base + 16)
    base -= 2 * int(metric(metrics(admin), "exrelay_splice_pipes"))    # see fds_beyond_pipes
    try:
        resource.prlimit(r.pid, resource.RLIMIT_NOFILE, (limit, limit))
    except (PermissionError, OSError) as e:
        ok(False, "EMFILE: cannot lower the daemon's RLIMIT_NOFILE: %s" % e)
        return
    diag("EMFILE: %d descriptors open, RLIMIT_NOFILE set to %d" % (base, limit))
    n = 3 * limit
    clients = []
    for i in range(n):
        c = rpch.HttpConn("127.0.0.1", port, timeout=10)
        c.send_request("GET", "/emfile-%d" % i, [("Host", "x")])
        clients.append(c)
    logged = wait_for(lambda: "pausing accepts for 100 ms" in r.stderr_text(), 10)
    ok(logged and "Too many open files" in r.stderr_text(),
       "EMFILE: %d clients against %d descriptors: the accept back-off is logged" % (n, limit))
    # While at the limit, the back-off must not spin: CPU time over one second stays low.
    cpu0 = sum(v[1] for v in thread_stats(r.pid).values())
    t = time.monotonic()
    time.sleep(1.0)                             # a measurement window, not a readiness wait
    cpu = (sum(v[1] for v in thread_stats(r.pid).values()) - cpu0) / os.sysconf("SC_CLK_TCK")
    ok(cpu < 0.5 * (time.monotonic() - t), "EMFILE: no busy loop while out of descriptors (%.2f s CPU in %.2f s)"
       % (cpu, time.monotonic() - t))
    ok(r.alive(), "EMFILE: exrelay still runs while out of descriptors")
    answered = {}
    for c in clients:
        r_, _, _ = select.select([c.sock], [], [], 0)
        if r_ or c.buf:
            try:
                answered[clients.index(c)] = c.read_response(timeout=2).status
            except Exception as e:              # noqa: BLE001
                answered[clients.index(c)] = repr(e)
    diag("EMFILE: answers so far: %d of %d (statuses %r)" % (
        len(answered), n, sorted(set(map(str, answered.values())))))
    ok(0 < len(answered) < n, "EMFILE: some clients served, the others wait (%d of %d answered)" % (len(answered), n))
    ok(all(s in (200, 503) for s in answered.values()),
       "EMFILE: answered 200, or 503 when no descriptor was left for the backend (not 502)")
    for c in clients:
        c.close()

    def serves():
        """A fresh request is answered 200."""
        return get(port, "/emfile-after-%f" % time.monotonic(), timeout=3) == 200
    ok(wait_for(serves, 15, 0.2), "EMFILE: after the clients closed, requests are served again")

    def settled():
        """/metrics once all public connections are closed."""
        return metric(metrics(admin), "exrelay_connections_active", listener="public") == 0
    ok(wait_for(settled, 15, 0.2), "EMFILE: public connections active back to 0")
    def fds_beyond_pipes():
        """Open descriptors minus the splice pool's pipes (2 each, kept empty for reuse, bounded)."""
        pipes = int(metric(metrics(admin), "exrelay_splice_pipes"))
        return len(os.listdir("/proc/%d/fd" % r.pid)) - 2 * pipes
    nfd = wait_for(lambda: (lambda k: k if k <= base else None)(fds_beyond_pipes()), 10)
    ok(nfd, "EMFILE: no descriptor leaked (%d open beyond the splice pool's pipes, %d before)" %
       (fds_beyond_pipes(), base))
    ok(r.alive(), "EMFILE: exrelay still runs")
    checks = metrics(admin)
    skipped = metric(checks, "exrelay_server_checks_total", backend="one", server="127.0.0.1:%d" % ex.port,
                     result="skipped")
    ok(skipped >= 1, "EMFILE: health checks that found no descriptor were skipped (%d)" % skipped)
    down = [ln for ln in r.stderr_text().splitlines() if " is DOWN" in ln]
    ok(not down, "EMFILE: neither the skipped checks nor the failed backend sockets took the server down (%s)"
       % (down[:1] or "no DOWN logged"))
    ok("health check one/" in r.stderr_text() and "skipped: socket: Too many open files" in r.stderr_text(),
       "EMFILE: a skipped check is logged")



def check_stop():
    """Every daemon started here stops cleanly."""
    stop_all(relays)


run_checks((check_workers, check_workers_default, check_max_connections, check_emfile, check_stop), t0=T0)
