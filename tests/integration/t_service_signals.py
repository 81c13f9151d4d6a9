#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_service_signals.py: exrelay as a service: drain, reload under load, sd_notify (TAP).

Complements t_relay_signals.py (basic reload, USR1, drain with one channel) with workers = 2:
  * sd_notify: `READY=1` + `MAINPID` at start, `RELOADING=1` then `READY=1` +
    `STATUS=configuration reloaded` per SIGHUP, `READY=1` + `STATUS=reload failed...` on a bad
    config, `STOPPING=1` + `STATUS=draining` on SIGTERM; nothing on SIGHUP while draining.
  * SIGHUP x5 under a connection storm (several threads opening a connection per request):
    zero refused or reset connections, every request answered 200 with its own body.
  * Reload changing a route: every new connection (on both workers) uses it; adding a listener
    opens it on every worker, removing it closes it; a listener that cannot bind makes the whole
    reload fail and the old configuration stays.
  * Drain with two RPC virtual connections, an idle keep-alive connection and a request in flight:
    the idle one is closed, the request completes (`Connection: close`), new connections are
    refused on every worker, /health 503 `draining`, agent `drain`, /metrics still answers, the
    channels keep streaming; exit 0 right after the last channel closes, well before drain_timeout.
  * drain_timeout reached with a channel open: exit 0 at about drain_timeout, the channel is cut.
  * A second SIGTERM/SIGINT while draining stops at once (exit 0).
Run: cd tests && EXRELAY=/path/to/exrelay python3 integration/t_service_signals.py
"""

import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import ok, is_, diag, run_checks, start_standin, wait_for  # noqa: E402
import rpch  # noqa: E402
from service import spawn_exrelay, Notify, notify_fields, metrics, metric, admin_get, agent_line, \
    listening_sockets, stop_all  # noqa: E402

T0 = time.monotonic()
ex1 = start_standin(ping_interval=0)
ex2 = start_standin(ping_interval=0)
relays = []


def config(port, admin, agent, owa="one", drain=15, extra_listener=None):
    """workers = 2; /owa routed to `owa`; everything else to one."""
    extra = ""
    if extra_listener:
        extra = ',\n  { name = "extra"; bind = "%s"; }' % extra_listener
    return '''global = { workers = 2; drain_timeout = %d; log_level = "info"; };
timeouts = { request_head = 10; client_idle = 30; connect = 3; };
listeners = (
  { name = "public"; bind = "127.0.0.1:%d"; },
  { name = "admin"; bind = "127.0.0.1:%d"; role = "admin"; },
  { name = "agent"; bind = "127.0.0.1:%d"; role = "agent"; }%s );
backends = (
  { name = "one"; servers = [ "127.0.0.1:%d" ]; idle_timeout = 3600; },
  { name = "two"; servers = [ "127.0.0.1:%d" ]; idle_timeout = 3600; } );
routes = ( { backend = "%s"; paths = [ "/owa" ]; }, { backend = "one"; } );
''' % (drain, port, admin, agent, extra, ex1.port, ex2.port, owa)


def get(port, target, timeout=10.0):
    """(status, body) of one GET on a fresh connection with Connection: close."""
    with rpch.HttpConn("127.0.0.1", port, timeout=timeout) as c:
        resp, body = c.request("GET", target, [("Host", "x"), ("Connection", "close")], timeout=timeout)
        return resp.status, body


def which_backend(port, target):
    """"one"/"two": the stand-in that logged `target` (sent on a fresh connection)."""
    st, _ = get(port, target)
    if ex1.events("request", target=target):
        return "one"
    if ex2.events("request", target=target):
        return "two"
    return "status %d" % st


def refused(port):
    """True when a TCP connect to the port is refused."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def start(drain=15, **kw):
    """exrelay with workers = 2 (listeners on port 0) and a fresh Notify socket; returns the relay
    with .notify, and .port, .admin, .agent: its listeners' ports (later configs name them)."""
    n = Notify()
    r = spawn_exrelay(config(0, 0, 0, drain=drain, **kw), env={"NOTIFY_SOCKET": n.path})
    relays.append(r)
    r.notify = n
    r.port, r.admin, r.agent = (r.ports[k] for k in ("public", "admin", "agent"))
    return r


def is_reloading(m):
    """A RELOADING=1 datagram."""
    return notify_fields(m).get("RELOADING") == "1"


def is_reloaded(m):
    """A READY=1 datagram answering a successful reload."""
    return notify_fields(m).get("READY") == "1" and notify_fields(m).get("STATUS") == "configuration reloaded"


# ----------------------------------------------------------------------------------------------

def check_reload_storm():
    """sd_notify at start; five SIGHUPs during a connection storm; route and listener changes."""
    r = start()
    r.errors_expected = True            # the failed reloads at the end
    n = r.notify
    first = n.wait_count(lambda m: "READY=1" in m, 1, 10)
    f = notify_fields(first[0]) if first else {}
    ok(first and f.get("READY") == "1" and f.get("MAINPID") == str(r.pid) and n.texts()[0] == first[0],
       "sd_notify: first datagram READY=1 with MAINPID=%d (%r)" % (r.pid, n.texts()[:1]))

    stop = threading.Event()
    stats = {"ok": 0, "refused": 0, "reset": 0, "timeout": 0, "other": [], "bad": []}
    lock = threading.Lock()

    def storm(k):
        """A new connection per request until stop is set."""
        i = 0
        while not stop.is_set():
            target = "/storm/%d/%d" % (k, i)
            i += 1
            try:
                st, body = get(r.port, target, timeout=10)
                with lock:
                    if st == 200 and (b'"%s"' % target.encode()) in body:
                        stats["ok"] += 1
                    else:
                        stats["bad"].append((target, st))
            except ConnectionRefusedError:
                with lock:
                    stats["refused"] += 1
            except (ConnectionResetError, BrokenPipeError, EOFError):
                with lock:
                    stats["reset"] += 1
            except socket.timeout:
                with lock:
                    stats["timeout"] += 1
            except Exception as e:              # noqa: BLE001
                with lock:
                    stats["other"].append(repr(e))
    threads = [threading.Thread(target=storm, args=(k,)) for k in range(4)]
    t = time.monotonic()
    for th in threads:
        th.start()
    reloads = 0
    for i in range(5):
        # a SIGHUP every 0.5 s of a 3 s storm, each with a changed route (a schedule, not a readiness wait)
        time.sleep(max(0.0, t + 0.5 * (i + 1) - time.monotonic()))
        r.reload(config(r.port, r.admin, r.agent, owa="two" if i % 2 == 0 else "one"))
        reloads += 1
        n.wait_count(is_reloaded, reloads, 10)
    time.sleep(max(0.0, t + 3.0 - time.monotonic()))
    stop.set()
    for th in threads:
        th.join(30)
    dt = time.monotonic() - t
    diag("storm: %r in %.2f s (%.0f requests/s)" % (stats, dt, stats["ok"] / dt))
    ok(stats["ok"] >= 200 and stats["refused"] == 0 and stats["reset"] == 0 and stats["timeout"] == 0
       and not stats["other"] and not stats["bad"],
       "5 SIGHUPs during a storm of %d connections: zero refused, reset, timed out or wrong answers" % (
           stats["ok"] + stats["refused"] + stats["reset"] + stats["timeout"] + len(stats["other"])))
    seen = len(ex1.events("request")) + len(ex2.events("request"))
    ok(seen >= stats["ok"], "storm: the backends saw every answered request (%d >= %d)" % (seen, stats["ok"]))
    rl = [m for m in n.texts() if is_reloading(m)]
    rd = [m for m in n.texts() if is_reloaded(m)]
    is_((len(rl), len(rd)), (5, 5), "sd_notify: five RELOADING=1 and five READY=1 configuration reloaded")
    seq = [("L" if is_reloading(m) else "R") for m in n.texts() if is_reloading(m) or is_reloaded(m)]
    is_("".join(seq), "LR" * 5, "sd_notify: each RELOADING=1 followed by its READY=1")
    ok(r.alive() and stats["ok"] > 0, "storm: exrelay still runs")
    wait_for(lambda: listening_sockets(r.port, r.pid) == 2, 3)   # /proc/net/tcp may skip rows under load
    is_(listening_sockets(r.port, r.pid), 2, "after 5 reloads: still two listening sockets on the public port")

    # The last reload routed /owa to "one"; route it to "two": every new connection uses it.
    r.reload(config(r.port, r.admin, r.agent, owa="two"))
    n.wait_count(is_reloaded, 6, 10)
    where = [which_backend(r.port, "/owa/after-%d" % i) for i in range(20)]
    is_(where, ["two"] * 20, "reload changing a route: 20 new connections (both workers) all use it")

    # A new listener is opened on every worker, then closed by the next reload.
    r.reload(config(r.port, r.admin, r.agent, owa="two", extra_listener="127.0.0.1:0"))
    n.wait_count(is_reloaded, 7, 10)
    r.read_addrs()                      # written before READY=1: the new listener's port
    p2 = r.ports.get("extra", 0)
    is_(sorted(r.ports), ["admin", "agent", "extra", "public"], "reload adding a listener: the address file names it")
    ok(wait_for(lambda: listening_sockets(p2, r.pid) == 2, 5),
       "reload adding a listener: two listening sockets on the new port (%d)" % listening_sockets(p2, r.pid))
    is_(get(p2, "/owa/extra")[0], 200, "reload adding a listener: it serves")
    r.reload(config(r.port, r.admin, r.agent, owa="two"))
    n.wait_count(is_reloaded, 8, 10)
    ok(wait_for(lambda: refused(p2), 5), "reload removing the listener: its port refuses connections")
    is_(listening_sockets(p2), 0, "reload removing the listener: no listening socket left on it")

    # A listener that cannot bind: the whole reload fails, the old configuration stays.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    busy = blocker.getsockname()[1]
    before = len(n.texts())
    r.reload(config(r.port, r.admin, r.agent, owa="one", extra_listener="127.0.0.1:%d" % busy))
    failed = wait_for(lambda: [m for m in n.texts()[before:] if "reload failed" in m], 10)
    ok(failed and notify_fields(failed[0]).get("READY") == "1",
       "sd_notify: a reload that cannot bind sends READY=1 with STATUS=reload failed (%r)" % (failed,))
    ok(wait_for(lambda: "reload failed" in r.stderr_text(), 5), "a reload that cannot bind: logged")
    is_(which_backend(r.port, "/owa/after-failed"), "two", "a reload that cannot bind: the old route stays")
    blocker.close()
    # An invalid file: same.
    before = len(n.texts())
    r.reload("global = { workers = ; };\n")
    failed = wait_for(lambda: [m for m in n.texts()[before:] if "reload failed" in m], 10)
    ok(failed and [m for m in n.texts()[before:] if is_reloading(m)],
       "sd_notify: an invalid config sends RELOADING=1 then READY=1 with STATUS=reload failed (%r)"
       % (n.texts()[before:],))
    is_(which_backend(r.port, "/owa/after-invalid"), "two", "an invalid config: the old route stays")
    r.reload(config(r.port, r.admin, r.agent, owa="two"))
    n.wait_count(is_reloaded, 9, 10)


def check_drain():
    """Drain with RPC channels, an idle connection and a request in flight; sd_notify STOPPING."""
    r = start(drain=15)
    n = r.notify
    n.wait_count(lambda m: "READY=1" in m, 1, 10)

    def connect():
        """A client connection to the public port."""
        return rpch.HttpConn("127.0.0.1", r.port, timeout=10)
    vc1 = rpch.open_virtual_connection(connect)
    vc2 = rpch.open_virtual_connection(connect)
    idle = connect()
    resp, _ = idle.request("GET", "/idle", [("Host", "x")], timeout=5)
    is_(resp.status, 200, "before drain: a keep-alive connection served (then idle)")
    inflight = connect()
    inflight.send_request("GET", "/inflight?sleep=1.5", [("Host", "x")])
    ok(ex1.wait_event("request", 5, target="/inflight?sleep=1.5"), "before drain: a slow request reached the backend")
    m0 = metrics(r.admin)
    is_((metric(m0, "exrelay_rpc_channels_active", method="RPC_IN_DATA"),
         metric(m0, "exrelay_rpc_channels_active", method="RPC_OUT_DATA")), (2, 2), "before drain: 2+2 RPC channels")

    t_term = time.monotonic()
    r.send_signal(signal.SIGTERM)
    st = n.wait_count(lambda m: notify_fields(m).get("STOPPING") == "1", 1, 5)
    ok(st and notify_fields(st[0]).get("STATUS") == "draining",
       "sd_notify: STOPPING=1 with STATUS=draining on SIGTERM (%r)" % (st,))
    ok(wait_for(lambda: admin_get(r.admin, "/health") == (503, b"draining\n"), 5),
       "draining: /health 503 draining (%r)" % (admin_get(r.admin, "/health"),))
    is_(agent_line(r.agent), b"drain\n", "draining: agent `drain`")
    ok(wait_for(lambda: all(refused(r.port) for _ in range(10)), 5),
       "draining: 10 new connections to the public port all refused (every worker closed its socket)")
    is_(listening_sockets(r.port), 0, "draining: no listening socket left on the public port")
    ok(idle.wait_closed(5), "draining: the idle keep-alive connection is closed by exrelay")
    try:
        resp = inflight.read_response(timeout=10)
        body = inflight.read_body(resp, timeout=10)
        res = (resp.status, (resp.header("Connection") or "").lower(), b'"/inflight?sleep=1.5"' in body,
               inflight.wait_closed(5))
    except Exception as e:                      # noqa: BLE001
        res = repr(e)
    is_(res, (200, "close", True, True),
        "draining: the request in flight completes with 200 and Connection: close, then the connection closes")
    for i, vc in enumerate((vc1, vc2)):
        payload = (b"%d" % i) * 200
        vc.inn.send(payload)
        try:
            got = vc.out.read_exact(len(payload), timeout=5)
        except Exception as e:                  # noqa: BLE001
            got = repr(e)
        is_(got, payload, "draining: RPC virtual connection %d keeps streaming" % (i + 1))
    # The closed connections end with a lingering close (exrelay waits for the client's own
    # close, briefly): poll for the count.
    wait_for(lambda: metric(metrics(r.admin), "exrelay_connections_active", listener="public") == 4, 5)
    m = metrics(r.admin)
    is_(metric(m, "exrelay_connections_active", listener="public"), 4,
        "draining: /metrics still answers, 4 public connections (two channel pairs) active")
    # SIGHUP is ignored while draining (no RELOADING=1); SIGUSR1 afterwards acts as a barrier.
    before = len(n.texts())
    r.send_signal(signal.SIGHUP)
    r.send_signal(signal.SIGUSR1)
    wait_for(lambda: "log files reopened" in r.stderr_text(), 5)
    ok(not [m for m in n.texts()[before:] if is_reloading(m)] and r.alive(),
       "draining: SIGHUP is ignored (no RELOADING=1, still running)")
    vc1.close()
    ok(wait_for(lambda: metric(metrics(r.admin), "exrelay_connections_active", listener="public") == 2, 5),
       "draining: the first channel pair closed, 2 connections left")
    ok(r.alive(), "draining: exrelay waits for the second channel pair")
    vc2.inn.send(b"z" * 100)
    is_(vc2.out.read_exact(100, timeout=5), b"z" * 100, "draining: the second pair still streams")
    t_close = time.monotonic()
    vc2.close()
    exited = wait_for(lambda: not r.alive(), 20)
    dt = time.monotonic() - t_close
    ok(exited and r.returncode == 0 and dt < 2.0,
       "drain: exit 0 %.2f s after the last channel closed (%.2f s after SIGTERM, drain_timeout 15 s; rc %r)"
       % (dt, time.monotonic() - t_term, r.returncode))
    ok(refused(r.admin), "after exit: the admin port is closed")
    idle.close()
    inflight.close()


def check_drain_timeout():
    """drain_timeout = 2 with a channel pair open: exit 0 at about 2 s, the channels cut."""
    r = start(drain=2)

    def connect():
        """A client connection to the public port."""
        return rpch.HttpConn("127.0.0.1", r.port, timeout=10)
    vc = rpch.open_virtual_connection(connect)
    t = time.monotonic()
    r.send_signal(signal.SIGTERM)
    ok(wait_for(lambda: refused(r.port), 5), "drain_timeout: draining began")
    vc.inn.send(b"k" * 50)
    is_(vc.out.read_exact(50, timeout=5), b"k" * 50, "drain_timeout: the channel pair streams while draining")
    exited = wait_for(lambda: not r.alive(), 10)
    dt = time.monotonic() - t
    ok(exited and r.returncode == 0 and 1.8 <= dt <= 3.5,
       "drain_timeout = 2 reached with a channel open: exit 0 after %.2f s (rc %r)" % (dt, r.returncode))
    ok(vc.out.wait_closed(3) and vc.inn.wait_closed(3), "drain_timeout: both channels were closed by exrelay")
    ok("drain timeout: closing 2 connection(s)" in r.stderr_text(),
       "drain_timeout: logged with the number of connections cut")
    vc.close()


def check_second_signal():
    """A second stop signal while draining: stop at once."""
    r = start(drain=30)

    def connect():
        """A client connection to the public port."""
        return rpch.HttpConn("127.0.0.1", r.port, timeout=10)
    vc = rpch.open_virtual_connection(connect)
    r.send_signal(signal.SIGTERM)
    ok(wait_for(lambda: refused(r.port), 5), "second signal: draining began")
    t = time.monotonic()
    r.send_signal(signal.SIGINT)
    exited = wait_for(lambda: not r.alive(), 10)
    dt = time.monotonic() - t
    ok(exited and r.returncode == 0 and dt < 2.0,
       "SIGINT while draining (drain_timeout 30 s): exit 0 after %.2f s (rc %r)" % (dt, r.returncode))
    ok(vc.out.wait_closed(3), "second signal: the open channel was closed")
    vc.close()



def check_stop():
    """Every daemon started here stops cleanly."""
    stop_all(relays)


run_checks((check_reload_storm, check_drain, check_drain_timeout, check_second_signal, check_stop), t0=T0)
