# SPDX-License-Identifier: BSD-2-Clause
"""
benchlib.py: what the bench scripts beside it share (compare.py, edge-overhead.py, failover.py,
rpc-bench.py, idle-tls-mem.py): progress lines, /proc readings, CPU pinning, starting a proxy from
a configuration text, the run's set-up and the facts about the machine that every JSON line carries.

Not a script. Importing it imports nothing of tests/lib; the functions that start processes import
tests/lib/harness.py when called (failover.py's backend child must not load it).
"""

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, "..", ".."))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _harness():
    """tests/lib/harness.py (registers cleanup at exit and on signals once imported)."""
    lib = os.path.join(TOP, "tests", "lib")
    if lib not in sys.path:
        sys.path.insert(0, lib)
    import harness
    return harness


def log(msg):
    """A progress line on stderr (the tables and the JSON go to stdout)."""
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def git_commit():
    """`git describe --always --dirty` of the checkout, or None."""
    try:
        return subprocess.run(["git", "-C", TOP, "describe", "--always", "--dirty"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ----------------------------------------------------------------------------------------------
# /proc readings
# ----------------------------------------------------------------------------------------------

def cpu_seconds(pid):
    """utime + stime of the whole process (all threads) in seconds, from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def cpu_clock(pid):
    """The same CPU time read from the process's CPU-time clock (clock_getcpuclockid(pid):
    MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)), in seconds with ns resolution rather than 10 ms
    ticks."""
    return time.clock_gettime(((~pid) << 3) | 2)


def rss_kib(pid):
    """VmRSS of pid in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def summed(reading, pids):
    """reading(pid) (cpu_seconds, rss_kib) summed over pids; a process gone by then counts 0."""
    total = 0
    for p in pids:
        try:
            total += reading(p)
        except (OSError, IndexError, ValueError, RuntimeError):
            pass
    return total


# ----------------------------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------------------------

def pin(cpu, pinning):
    """argv prefix that pins a child (all its threads) to `cpu` (empty when pinning is off)."""
    return ["taskset", "-c", str(cpu)] if pinning else []


def start_with_config(name, argv, conf_name, conf_text, port, prefix, timeout=10.0):
    """Writes conf_text into a new temp dir (named prefix-NAME-...) as conf_name, starts argv
    ({cfg} replaced by the file's path) as a harness.Process, waits until `port` accepts.
    RuntimeError with the stderr tail when it does not."""
    harness = _harness()
    d = harness.tmpdir("%s-%s-" % (prefix, name))
    cfg = os.path.join(d, conf_name)
    with open(cfg, "w") as f:
        f.write(conf_text)
    p = harness.Process(name, [a.replace("{cfg}", cfg) for a in argv], d)
    if not harness.wait_port("127.0.0.1", port, timeout, p.alive):
        raise RuntimeError("%s not listening on %d (exit %r): %s" % (
            name, port, p.returncode, p.stderr_text()[-3000:]))
    return p


def check_exited(name, proc):
    """RuntimeError with the stderr tail when the harness.Process proc exited."""
    if not proc.alive():
        raise RuntimeError("%s exited with status %r: %s" % (name, proc.returncode, proc.stderr_text()[-3000:]))


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------

def begin(prefix, client_cpu, proxy_cpu):
    """Pins this process to client_cpu when both CPUs and taskset are there, makes a private
    base directory for every temp dir (tempfile.tempdir), warns when the machine is busy.
    Returns (pinning, base, load average at the start)."""
    cpus = os.sched_getaffinity(0)
    pinning = client_cpu in cpus and proxy_cpu in cpus and shutil.which("taskset") is not None
    if pinning:
        os.sched_setaffinity(0, {client_cpu})     # inherited by what this process starts
    else:
        log("warning: CPUs %d and %d (or taskset) not available: no pinning" % (client_cpu, proxy_cpu))
    base = tempfile.mkdtemp(prefix=prefix + ".")
    tempfile.tempdir = base
    load = os.getloadavg()
    if load[0] > 0.5:
        log("warning: load average %.2f: other work on this machine will disturb the numbers" % load[0])
    return pinning, base, load


def haproxy_version(path):
    """The first line of `haproxy -v`."""
    return subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10).stdout.split("\n")[0]


def machine(load):
    """The facts every JSON line carries: kernel, load averages at the start (`load`) and now."""
    return {"kernel": platform.release(), "loadavg_at_start": [round(x, 2) for x in load],
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]}


def end(base, failed):
    """Stops every process started, removes the base directory, exits 1 when failed."""
    _harness().cleanup()
    shutil.rmtree(base, ignore_errors=True)
    sys.exit(1 if failed else 0)
