# SPDX-License-Identifier: BSD-2-Clause
"""
soak_checks.py: the chaos soak's checks after the run (contrib/soak/soak.py): the access log
against the requests the clients completed, the stand-ins' event logs (RPC IN streams, reset
bodies), /health gaps, sanitizer reports, exrelay's descriptors and RSS after each wave.
Failures go to BOOK.
"""

import collections
import glob
import json
import os
import re

from soak_book import BOOK, NAMES, RID_RE, T0


# ----------------------------------------------------------------------------------------------
# Checks after the run
# ----------------------------------------------------------------------------------------------

def parse_access(s):
    """rid -> list of (status, server name) from every access log file (json and combined)."""
    seen = collections.defaultdict(list)
    other = 0
    for p in glob.glob(os.path.join(s.dir, "access.log*")):
        with open(p, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.endswith("\n"):
                    BOOK.fail("access_log", "a partial line in %s: %r" % (os.path.basename(p), line[:100]))
                    continue
                m = RID_RE.search(line)
                if not m:
                    other += 1
                    continue
                if line.startswith("{"):
                    try:
                        j = json.loads(line)
                    except ValueError:
                        BOOK.fail("access_log", "a JSON line does not parse: %r" % line[:120])
                        continue
                    status, server = j["status"], j["server"]
                else:
                    mm = re.search(r'" (\d+) \d+ ".*" \S+ \S+ (\S+)$', line)
                    if not mm:
                        BOOK.fail("access_log", "a combined line does not parse: %r" % line[:120])
                        continue
                    status, server = int(mm.group(1)), mm.group(2)
                seen[m.group(1)].append((status, s.port_of.get(server, server)))
    return seen, other


def tamper_access(s):
    """--inject log-dup: in the current access.log, the first line with a request id is written
    twice and the last one removed."""
    p = os.path.join(s.dir, "access.log")
    with open(p, encoding="utf-8", errors="replace") as f:
        lines = f.readlines()
    ids = [i for i, line in enumerate(lines) if RID_RE.search(line)]
    if len(ids) >= 2:
        lines.insert(ids[0], lines[ids[0]])
        del lines[ids[-1] + 1]
        with open(p, "w", encoding="utf-8") as f:
            f.writelines(lines)


def check_access(s):
    """One line per completed request, none for a request never made, none twice."""
    seen, other = parse_access(s)
    lost = doubled = unknown = mism = 0
    for rid, e in BOOK.expect.items():
        lines = seen.get(rid, [])
        if len(lines) > 1:
            doubled += 1
            BOOK.fail("access_log_doubled", "%s: %d lines" % (rid, len(lines)))
        elif e["mode"] == "exact" and not lines:
            lost += 1
            BOOK.fail("access_log_lost", "%s (status %s) has no line" % (rid, e["status"]))
        elif lines and e["status"] is not None and e["server"] in NAMES:
            st, srv = lines[0]
            if st != e["status"] or srv != e["server"]:
                mism += 1
                BOOK.fail("access_log_mismatch", "%s: line says %s from %s, the client got %s from %s" % (
                    rid, st, srv, e["status"], e["server"]))
    for rid in seen:
        if rid not in BOOK.expect:
            unknown += 1
            BOOK.fail("access_log_unknown", "a line for request id %s that was never sent" % rid)
    return {"lines": sum(len(v) for v in seen.values()), "other_lines": other, "lost": lost,
            "doubled": doubled, "unknown": unknown, "mismatched": mism}


def standin_events(s):
    """Every event of every stand-in incarnation: (name, gen, event)."""
    out = []
    for name, gen, path in s.logs:
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.endswith("\n"):
                        out.append((name, gen, json.loads(line)))
        except FileNotFoundError:
            pass
    return out


def check_standins(s):
    """The stand-ins' side: each cleanly ended RPC IN stream hashed as the client sent it; each
    request body the client reset seen as cut."""
    events = standin_events(s)
    in_closed = {}
    reqs = {}
    bodies = collections.defaultdict(list)
    for name, gen, e in events:
        if e["ev"] == "in_closed":
            in_closed[e["cookie"]] = (name, e)
        elif e["ev"] == "request":
            m = RID_RE.search(e.get("target", ""))
            if m:
                reqs[m.group(1)] = (name, gen, e["conn"])
        elif e["ev"] == "body":
            bodies[(name, gen, e["conn"])].append(e)
    checked = 0
    for rec in BOOK.rpc:
        if not rec["clean"]:
            continue
        got = in_closed.get(rec["cookie"])
        if got is None:
            if not BOOK.disturbed(rec["t0"], rec["t1"] + 5, [rec["server"]]):
                BOOK.fail("rpc_unseen", "%s %s: the stand-in logged no end of the IN channel" % (rec["kind"], rec["cookie"]))
            continue
        name, e = got
        checked += 1
        if name != rec["server"]:
            BOOK.fail("wrong_server", "%s %s: OUT on %s, IN on %s" % (rec["kind"], rec["cookie"], rec["server"], name))
        if e["bytes"] != rec["sent"] or e["sha256"] != rec["sha"].hexdigest():
            BOOK.fail("corrupt_body", "%s %s: the stand-in got %d bytes, the client sent %d" % (
                rec["kind"], rec["cookie"], e["bytes"], rec["sent"]))
    cuts_seen = 0
    for rid, total in BOOK.cuts:
        r = reqs.get(rid)
        if r is None:
            continue
        bs = bodies.get(r)
        if not bs:
            continue
        cuts_seen += 1
        if bs[-1]["complete"] or bs[-1]["bytes"] >= total:
            BOOK.fail("invented_end", "reset %s: the stand-in saw the body complete (%d bytes)" % (rid, bs[-1]["bytes"]))
    return {"rpc_checked": checked, "cut_bodies_checked": cuts_seen}


def check_health(s, t_start, t_end):
    """The longest time without an answer from /health between start and exrelay's exit."""
    times = []
    fails = 0
    with open(s.poll_out) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1] != "fail":
                times.append(float(parts[0]))
            elif len(parts) >= 2:
                fails += 1
    times = [t for t in times if t_start <= t <= t_end]
    gaps = [(b - a, a) for a, b in zip(times, times[1:])]
    if times:
        gaps.append((t_end - times[-1], times[-1]))
    worst = max(gaps) if gaps else (float("inf"), t_start)
    if worst[0] > 1.0:
        BOOK.fail("health_gap", "/health unanswered for %.2f s at t=%.1f" % (worst[0], worst[1] - T0))
    return {"answers": len(times), "failed_polls": fails, "max_gap_s": round(worst[0], 3)}


def check_sanitizers(s):
    """No sanitizer report in exrelay's stderr or error logs."""
    text = s.error_log_text()
    bad = [line for line in text.splitlines() if "Sanitizer" in line or "runtime error" in line]
    for line in bad[:20]:
        BOOK.fail("sanitizer", line)
    return len(bad)


def check_series(series):
    """Descriptors back to the start after each wave; RSS, once warm (the highest sample of the
    first quarter of the waves, at least the first: ASan's quarantine and the allocator's caches
    fill up then), never above that by more than 25 % + 16 MiB: a leak grows with the requests."""
    base_fd = series[0][1]
    warm = series[1:1 + max(1, (len(series) - 1) // 4)] or series[:1]
    base_rss = max(r for _, _, r, _ in warm if r is not None)
    for label, fds, rss, ok in series[1:]:
        if not ok:
            BOOK.fail("conn_leak", "%s: exrelay still had client connections 30 s after the wave" % label)
        if fds > base_fd + 2:
            BOOK.fail("fd_leak", "%s: %d descriptors, baseline %d" % (label, fds, base_fd))
        if rss is not None and rss > base_rss * 1.25 + 16 * 1024:
            BOOK.fail("rss_growth", "%s: RSS %d KiB, warm baseline %d KiB" % (label, rss, base_rss))
