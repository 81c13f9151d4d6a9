#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_ep.py: Extended Protection through exrelay (relay/epcheck.c, relay/cbind.c), TAP.

The Exchange stand-in runs with TLS and --extended-protection: an NTLMv2 login on /rpc, /owa,
/ecp, /mapi, /oab, /powershell must carry MsvAvChannelBindings computed from the stand-in's own
certificate ([MS-NLMP] §2.2.2.1, RFC 5929 §4.1), as IIS with Extended Protection "Required". The
test client computes its binding from the certificate it sees: exrelay's listener's.
- exrelay's listener presents the stand-in's certificate (mail-ecdsa): exrelay logs the match
  and exports exrelay_backend_cert_match 1; NTLMv2 with channel binding succeeds for an
  RPC_IN_DATA/RPC_OUT_DATA pair (then the RPC over HTTP handshake on those connections), an OWA
  login and an EWS request; `exrelay -T` prints "match" and exits 0.
- a reload puts another certificate on the listener (mail-rsa, same names): the reload alone
  makes exrelay log the mismatch (naming both certificates and the virtual directories) and
  export 0; the RPC and OWA logins then get 401 from the stand-in (EWS is not protected by
  default, by IIS or the stand-in: it still passes); `exrelay -T` prints "MISMATCH", exit 1.
- channel_binding = "require": the server is down for new requests; the client gets exrelay's
  503, and the stand-in sees no login.
- the listener's certificate back to mail-ecdsa (reload): match, logins pass again; then the
  stand-in is restarted on the same port with mail-rsa: the next health check notices it without
  a reload (mismatch logged, metric 0, 503).
- `exrelay -T` on a server nobody listens on: "UNREACHABLE", exit 2.
Run: cd tests && EXRELAY=/path/to/exrelay python3 integration/t_ep.py
"""

import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import (CA, cert, run_checks, ok, is_, diag, start_exrelay, start_standin, free_port, wait_for,  # noqa: E402
                     exrelay_path, tmpdir)
import rpch  # noqa: E402

T0 = time.monotonic()
USER, PASSWORD = "EXAMPLE\\alice", "Secret1"
RPC = "/rpc/rpcproxy.dll?exchange.example.com:6001"


def fingerprint(name):
    """The SHA-256 fingerprint of a test certificate as exrelay prints it (AB:CD:...)."""
    with open(cert(name)[0]) as f:
        import hashlib
        d = hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest().upper()
    return ":".join(d[i:i + 2] for i in range(0, len(d), 2))


def standin(name, port=None):
    """The stand-in with TLS (certificate `name`) and Extended Protection, on `port` if given."""
    c, k = cert(name)
    if port is None:
        return start_standin(tls_cert=c, tls_key=k, extra_args=["--extended-protection"])
    return start_standin(listens=0, tls_cert=c, tls_key=k,
                         extra_args=["--extended-protection", "--listen", "127.0.0.1:%d" % port])


CONFIG = '''
global = { log_level = "info"; drain_timeout = 2; workers = 1; };
timeouts = { connect = 2; tls_handshake = 2; };
listeners = (
  { name = "public"; bind = "127.0.0.1:0"; tls = { certificates = ( { cert = "%(cert)s"; key = "%(key)s"; } ); }; },
  { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; }
);
backends = (
  { name = "exchange"; servers = ( { name = "ex1"; address = "127.0.0.1:%(port)d"; } );
    tls = { verify = true; ca_file = "%(ca)s"; sni = "mail.example.com"; channel_binding = "%(cb)s"; };
    check = { interval = 0.2; timeout = 1; rise = 1; fall = 1; }; }
);
routes = ( { backend = "exchange"; hosts = [ "mail.example.com" ]; paths = [ "/rpc", "/owa", "/ews" ]; } );
'''

ex = standin("mail-ecdsa")
PORT = ex.port


def config(listener_cert="mail-ecdsa", cb="check", port=None):
    """The configuration text: the listener presents `listener_cert`; channel_binding `cb`."""
    c, k = cert(listener_cert)
    return CONFIG % dict(cert=c, key=k, port=port or PORT, ca=CA, cb=cb)


relay = start_exrelay(config())


def stderr_lines(pattern):
    """exrelay's error-log lines matching the regular expression."""
    return [l for l in relay.stderr_text().splitlines() if re.search(pattern, l)]


def metric():
    """exrelay_backend_cert_match{backend="exchange",server="ex1"} from /metrics, or None."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % relay.port("admin"), timeout=5) as r:
        text = r.read().decode()
    m = re.search(r'^exrelay_backend_cert_match\{backend="exchange",server="ex1"\} (\d)$', text, re.M)
    return int(m.group(1)) if m else None


def connect():
    """A TLS connection to exrelay's public listener (SNI mail.example.com, the test CA)."""
    ctx = ssl.create_default_context(cafile=CA)
    return rpch.HttpConn("127.0.0.1", relay.port("public"), timeout=10, tls=ctx, server_hostname="mail.example.com")


def login(method, target, extra=()):
    """NTLMv2 with the channel binding of the certificate exrelay presents: the leg-3 status
    (or the leg-1 status when leg 1 was not a 401 challenge), and the connection."""
    c = connect()
    r1, r3, _ = rpch.ntlm_login(c, method, target, USER, PASSWORD, channel_binding=True,
                                headers=[("Host", "mail.example.com")] + list(extra))
    return (r3.status if r3 else r1.status), c


def logins():
    """(RPC_OUT_DATA, RPC_IN_DATA, OWA, EWS) login statuses; a 200 pair of RPC channels then runs
    the RPC over HTTP v2 handshake on the authenticated connections (its success is reported)."""
    out_status, out_conn = login("RPC_OUT_DATA", RPC, [("Content-Length", "0")])
    in_status, in_conn = login("RPC_IN_DATA", RPC, [("Content-Length", "0")])
    vc_ok = None
    if out_status == 200 and in_status == 200:
        conns = [out_conn, in_conn]
        try:
            vc = rpch.open_virtual_connection(lambda: conns.pop(0))
            vc_ok = vc.out_response.status == 200
        except Exception as e:  # noqa: BLE001
            diag("virtual connection: %s" % e)
            vc_ok = False
    out_conn.close()
    in_conn.close()
    owa, c = login("GET", "/owa/")
    c.close()
    ews, c = login("POST", "/ews/exchange.asmx", [("Content-Length", "0")])
    c.close()
    return out_status, in_status, owa, ews, vc_ok


def ep_test(text):
    """Runs `exrelay -T -f FILE` on text: (exit status, stdout)."""
    d = tmpdir("exrelay-ep-T-")
    path = os.path.join(d, "exrelay.conf")
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([exrelay_path(), "-T", "-f", path], capture_output=True, timeout=30)
    return r.returncode, r.stdout.decode()


def reload(text):
    """Reloads exrelay with text; True once done."""
    relay.reload(text)
    return relay.wait_reloaded()


def check_match():
    """The same certificate on exrelay's listener and on the stand-in."""
    ok(wait_for(lambda: stderr_lines(r"server exchange/ex1: certificates match"), 10),
       "exrelay logs that the certificates match")
    is_(wait_for(lambda: metric() == 1 and 1, 5), 1, "exrelay_backend_cert_match 1")
    out_s, in_s, owa, ews, vc_ok = logins()
    is_((out_s, in_s), (200, 200), "RPC_OUT_DATA and RPC_IN_DATA: NTLMv2 with channel binding: 200")
    ok(vc_ok, "the RPC over HTTP handshake runs on the two authenticated channels")
    is_(owa, 200, "OWA login with channel binding: 200")
    is_(ews, 200, "EWS request with channel binding: 200")
    is_(len(ex.events("auth_ok")), 4, "the stand-in logged 4 successful logins")
    rc, out = ep_test(config())
    fp = fingerprint("mail-ecdsa")
    diag(out.strip())
    ok(re.search(r"^exchange/ex1 127\.0\.0\.1:%d: exrelay %s .* server %s .*: match$" % (PORT, fp, fp), out, re.M),
       "exrelay -T: both fingerprints and 'match'")
    is_(rc, 0, "exrelay -T exits 0 when all match")


def check_listener_mismatch():
    """Another certificate on exrelay's listener (a reload): the mismatch is logged at once."""
    before = len(ex.events("auth_fail"))
    ok(reload(config("mail-rsa")), "reload with mail-rsa on the listener")
    lines = wait_for(lambda: stderr_lines(r"server exchange/ex1: certificate mismatch"), 10)
    ok(lines, "the reload alone makes exrelay log the mismatch")
    if lines:
        diag(lines[-1])
        ok(fingerprint("mail-rsa") in lines[-1] and fingerprint("mail-ecdsa") in lines[-1]
           and "/rpc /owa /ews" in lines[-1] and "warning" in lines[-1].lower(),
           "the warning names both fingerprints and the virtual directories")
    is_(wait_for(lambda: metric() == 0 and 1, 5), 1, "exrelay_backend_cert_match 0")
    out_s, in_s, owa, ews, _ = logins()
    is_((out_s, in_s), (401, 401), "RPC_OUT_DATA and RPC_IN_DATA: 401 from the stand-in")
    is_(owa, 401, "OWA login: 401 from the stand-in")
    is_(ews, 200, "EWS (not protected by default, in IIS or the stand-in): still 200")
    reasons = [e.get("reason") for e in ex.events("auth_fail")[before:]]
    is_(reasons, ["channel_binding_wrong"] * 3, "the stand-in refused the three bindings as wrong")
    n = len(stderr_lines(r"server exchange/ex1: certificate mismatch"))
    time.sleep(1)   # five health checks
    is_(len(stderr_lines(r"server exchange/ex1: certificate mismatch")), n, "logged once, not per check")
    rc, out = ep_test(config("mail-rsa"))
    diag(out.strip())
    ok(re.search(r"^exchange/ex1 127\.0\.0\.1:%d: exrelay %s .* server %s .*: MISMATCH$" % (
        PORT, fingerprint("mail-rsa"), fingerprint("mail-ecdsa")), out, re.M), "exrelay -T: 'MISMATCH'")
    is_(rc, 1, "exrelay -T exits 1 on a mismatch")


def check_require():
    """channel_binding = "require": the mismatching server takes no new requests (503)."""
    ok(reload(config("mail-rsa", "require")), "reload with channel_binding = \"require\"")
    before = len(ex.events("request"))
    c = connect()
    ok(wait_for(lambda: c.request("GET", "/owa/", [("Host", "mail.example.com")])[0].status == 503, 5),
       "the client gets exrelay's 503")
    c.close()
    status, c = login("GET", "/owa/")
    c.close()
    is_(status, 503, "an NTLM login gets 503, never a password prompt")
    is_([e for e in ex.events("request")[before:] if "healthcheck" not in e.get("target", "")], [],
        "the stand-in saw no request but health checks")


def check_backend_change():
    """Matching again; then the stand-in restarts with another certificate on the same port."""
    global ex
    ok(reload(config("mail-ecdsa", "require")), "reload with mail-ecdsa on the listener again")
    ok(wait_for(lambda: len(stderr_lines(r"server exchange/ex1: certificates match")) >= 2, 5),
       "the reload re-evaluates: match logged again")
    is_(wait_for(lambda: metric() == 1 and 1, 5), 1, "exrelay_backend_cert_match 1 again")
    status, c = login("GET", "/owa/")
    c.close()
    is_(status, 200, "OWA login: 200 again")
    n = len(stderr_lines(r"server exchange/ex1: certificate mismatch"))
    ex.stop()
    ex = standin("mail-rsa", PORT)
    lines = wait_for(lambda: stderr_lines(r"server exchange/ex1: certificate mismatch")[n:], 10)
    ok(lines, "the next health check notices the server's new certificate, without a reload")
    if lines:
        diag(lines[-1])
        ok("the server takes no new requests" in lines[-1], "the warning says the server takes no new requests")
    is_(wait_for(lambda: metric() == 0 and 1, 5), 1, "exrelay_backend_cert_match 0")
    c = connect()
    is_(c.request("GET", "/owa/", [("Host", "mail.example.com")])[0].status, 503, "503 from exrelay")
    c.close()


def check_unreachable():
    """exrelay -T on a server nobody listens on: exit 2."""
    rc, out = ep_test(config(port=free_port()))
    diag(out.strip())
    ok("UNREACHABLE" in out and "connect:" in out, "exrelay -T: the server is UNREACHABLE (connect)")
    is_(rc, 2, "exrelay -T exits 2 when a server cannot be reached")


run_checks([check_match, check_listener_mismatch, check_require, check_backend_change, check_unreachable],
           relay=relay, t0=T0)
