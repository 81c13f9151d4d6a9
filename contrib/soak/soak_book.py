# SPDX-License-Identifier: BSD-2-Clause
"""
soak_book.py: the chaos soak's shared state (contrib/soak/soak.py; see contrib/soak/README):
its constants, the Book that counts every request, outcome, fault window and failure (BOOK, one
for the whole run, and T0, the run's start), and exrelay's rendezvous ranking of the stand-ins.
It puts tests/lib on sys.path, so the other soak_* modules import it before harness, rpch, ntlm.
"""

import collections
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))
import harness  # noqa: E402
import ntlm  # noqa: E402

NAMES = ["ex1", "ex2", "ex3"]
GRACE = 6.0             # s after a fault during which its effects (health state, retries) excuse errors
T_IO = 30.0             # s: any single read or write of a client (SIGSTOP lasts 4 s; the box is busy)
DRAIN_TIMEOUT = 25
RID_RE = re.compile(r"rid=([a-z0-9]+)")
USERS = sorted(ntlm.DEFAULT_USERS)


# ----------------------------------------------------------------------------------------------
# Book-keeping: counters, failures, fault windows, expected access-log lines
# ----------------------------------------------------------------------------------------------


class Book:
    """Everything the run counts and every failure, with the fault windows that excuse errors."""

    def __init__(self):
        """Empty counters."""
        self.req = collections.Counter()        # kind -> requests
        self.res = collections.Counter()        # (kind, outcome) -> n; outcome ok|cut|err
        self.bytes_out = self.bytes_in = 0
        self.faults = collections.Counter()
        self.failures = collections.defaultdict(list)
        self.windows = []                       # (target, t0, t1): a stand-in name or "all"
        self.expect = {}                        # rid -> dict(mode="exact"|"atmost", status, server)
        self.seq = 0
        self.rpc = []                           # finished virtual connections, checked at the stand-ins
        self.cuts = []                          # rid of request bodies the client cut: checked at the stand-ins
        self.expected_errors = collections.Counter()
        self.excused = []                       # details of the cuts and errors inside fault windows
        self.timeline = []                      # (t0, t1, fault, target)

    def rid(self, kind):
        """A new request id (goes into the target as rid=...); counts a request of `kind`."""
        self.seq += 1
        self.req[kind] += 1
        return "%s%x" % (kind[:2], self.seq)

    def fail(self, kind, detail):
        """Records a failure of `kind`."""
        self.failures[kind].append("%.1f %s" % (time.monotonic() - T0, detail))

    def window(self, target, t0, t1):
        """Records that `target` (stand-in name or "all") was disturbed from t0 to t1."""
        self.windows.append((target, t0, t1))

    def disturbed(self, t0, t1, targets=None):
        """True when a fault on one of `targets` (None: any) or on "all" overlaps [t0, t1]."""
        for tg, a, b in self.windows:
            if (targets is None or tg == "all" or tg in targets) and a <= t1 and (b is None or b + GRACE >= t0):
                return True
        return False

    def outcome(self, kind, what, t0, detail="", servers=None):
        """Counts an outcome ok|cut|err of a request; a cut or error outside every fault
        window is a failure "unexpected_<what>"."""
        if what == "err" and detail.split(":")[0].endswith("TimeoutError"):
            what = "stall"          # 30 s without progress: no fault lasts that long
        self.res[(kind, what)] += 1
        if what == "stall":
            self.fail("stalled", "%s: %s" % (kind, detail))
        elif what != "ok":
            if self.disturbed(t0, time.monotonic(), servers):
                self.expected_errors[what] += 1
                self.excused.append("%.1f %s %s: %s" % (time.monotonic() - T0, kind, what, detail))
            else:
                self.fail("unexpected_" + what, "%s: %s" % (kind, detail))

    def log_expect(self, rid, mode, status=None, server=None):
        """The access log must hold exactly one line (mode exact) or at most one (atmost) for rid."""
        self.expect[rid] = {"mode": mode, "status": status, "server": server}


BOOK = Book()
T0 = time.monotonic()


def ranking(key):
    """exrelay's order of the stand-ins for a hash key (client address text, or a cookie)."""
    rest, out = list(NAMES), []
    while rest:
        out.append(rest.pop(harness.hrw_pick(rest, key)))
    return out


def check_choice(key, server, t0, what):
    """A first request (backend connection opened) must reach the first stand-in of the ranking
    that was not disturbed; otherwise a failure wrong_server."""
    for name in ranking(key):
        if name == server:
            return
        if not BOOK.disturbed(t0, time.monotonic(), [name]):
            BOOK.fail("wrong_server", "%s key %r reached %s, expected %s (ranking %s)" % (
                what, key if isinstance(key, str) else key.hex(), server, name, ranking(key)))
            return
