#!/usr/bin/python3
"""Runs interop scenarios between a client peer and a server peer.

    run_interop.py --pair PAIR --scenario NAME|all --certs DIR
                   [--testd PATH] [--testc PATH] [--stub-dir DIR] [-v]
    run_interop.py --list

PAIR is CLIENT-SERVER: py-py (pyclient -> pyserver), py-c (pyclient ->
ncgrpc-testd), c-py (ncgrpc-testc -> pyserver), c-c (ncgrpc-testc ->
ncgrpc-testd).  CERTS is the output directory of mkcerts.py.

Each scenario starts the server (waits, bounded, for its `listening` line),
runs one or more client commands, and checks the exact stdout lines and exit
status of every client run and the exact event lines of the server, as
docs/internals/testtools.md specifies them.  The server is always stopped and
reaped at the end.  Exit status: 0 all passed, 1 a check failed, 64 usage.

With $NCGRPC_WRAPPER set (e.g. to a valgrind command line; see peers.py)
the C peers run behind it, every timeout and upper time bound is multiplied
by peers.time_scale(), a wrapped peer that exits with 99 fails the scenario
with the wrapper's report, and a wrapped server must exit with 0 on SIGTERM.
"""
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import argparse  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402

SCALE = peers.time_scale()  # > 1 when the C peers run behind a wrapper
CLIENT_TIMEOUT = 20.0 * SCALE    # seconds one client run may take
LISTEN_TIMEOUT = 20.0 * SCALE    # seconds until the server's listening line
SERVER_SETTLE = 5.0 * SCALE      # seconds to wait for expected server lines
EXTRA_LINES_GRACE = 0.3 * SCALE  # seconds to watch for unexpected extra lines
SERVER_STOP_GRACE = 5.0 * SCALE  # seconds from SIGTERM to SIGKILL


# ---------------------------------------------------------------------------
# Line matchers: L("exact text") or R(r"full regex").


class L:
    def __init__(self, text):
        self.text = text

    def match(self, line):
        return line == self.text

    def __repr__(self):
        return repr(self.text)


class R:
    def __init__(self, regex):
        self.regex = regex
        self.rx = re.compile(regex)

    def match(self, line):
        return self.rx.fullmatch(line) is not None

    def __repr__(self):
        return "/%s/" % self.regex


def _m(x):
    return x if isinstance(x, (L, R)) else L(x)


class Step:
    """One client run: its arguments (after --connect/--ca) and expectations.

    lines None means stdout is not checked (only the exit status)."""

    def __init__(self, args, rc=0, lines=(), host=None, ca="ca.pem",
                 min_seconds=None, max_seconds=None):
        self.args = list(args)
        self.rc = rc
        self.lines = None if lines is None else [_m(x) for x in lines]
        self.host = host
        self.ca = ca
        self.min_seconds = min_seconds
        self.max_seconds = max_seconds


class Scenario:
    def __init__(self, name, steps, *, server_args=(), cert="server", listen="127.0.0.1",
                 server_lines=(), server_ignore=(), server_gaps=(), check=None,
                 no_server=False, doc=""):
        self.name = name
        self.steps = steps
        self.server_args = list(server_args)
        self.cert = cert
        self.listen = listen
        self.server_lines = [_m(x) for x in server_lines]
        self.server_ignore = [R(x) for x in server_ignore]
        # (i, j, min_s, max_s): expected server line j arrives between min_s
        # and max_s seconds after line i (indices into server_lines).
        self.server_gaps = list(server_gaps)
        self.check = check
        self.no_server = no_server
        self.doc = doc


INIT_LINE = r"initialize device=dev1 instance=\d+"
HELLO = "héllo 100%"


def check_bench_stream(results, server_lines):
    m = re.fullmatch(r"bench-stream messages=(\d+) bytes=(\d+) seconds=\S+ mib_per_s=\S+",
                     results[0].lines[0])
    n, b = int(m.group(1)), int(m.group(2))
    if n <= 0 or b != n * 65536:
        return "client counted messages=%d bytes=%d (want >0 and bytes = 65536*messages)" % (n, b)
    want = "commandget-end count=%d bytes=%d" % (n, b)
    if want not in server_lines:
        return "server did not print %r (the client's figures)" % want
    return None


def check_bench_unary(results, server_lines):
    m = re.fullmatch(r"bench-unary calls=(\d+) seconds=\S+ calls_per_s=\S+",
                     results[0].lines[0])
    n = int(m.group(1))
    got = sum(1 for x in server_lines if x == "status")
    if n <= 0 or got != n:
        return "client made %d calls, server printed %d status lines" % (n, got)
    return None


def scenarios():
    s = [
        Scenario("status", [Step(["status"], 0, ["status SUCCESS"])],
                 server_lines=["status"]),
        Scenario("status-localhost", [Step(["status"], 0, ["status SUCCESS"], host="localhost")],
                 server_lines=["status"],
                 doc="HOST is a name: the certificate is checked against 'localhost'"),
        Scenario("status-ipv6", [Step(["status"], 0, ["status SUCCESS"])],
                 listen="[::1]", server_lines=["status"],
                 doc="IPv6 listen/connect as [::1]:PORT; certificate SAN IP ::1"),
        # The client times its own call (min_seconds); the server's gap is
        # when the harness read its two lines, which a busy machine can
        # shorten by reading the first late: only "not answered at once".
        Scenario("initialize",
                 [Step(["initialize"], 0, ["session_type NETCONF", "trailer conn_type=netconf"],
                       min_seconds=0.25)],
                 server_args=["--release-after", "300"],
                 server_lines=[R(INIT_LINE), "initialize-released device=dev1"],
                 server_gaps=[(0, 1, 0.1, 3.0)]),
        Scenario("initialize-csh",
                 [Step(["--device-id", "r1-csh", "initialize"], 0,
                       ["session_type CSH", "trailer conn_type=csh"], min_seconds=0.25)],
                 server_args=["--release-after", "300", "--session-type", "csh"],
                 server_lines=[R(r"initialize device=r1-csh instance=\d+"),
                               "initialize-released device=r1-csh"],
                 server_gaps=[(0, 1, 0.1, 3.0)]),
        Scenario("wrong-secret",
                 [Step(["--secret", "nope", "initialize"], 1,
                       ["error: UNAUTHENTICATED: invalid secret for device 'dev1'"])],
                 server_args=["--secret", "s3cr3t"],
                 server_lines=["initialize-rejected device=dev1"]),
        Scenario("secret-option",
                 [Step(["--secret", "s3cr3t", "initialize"], 0,
                       ["session_type NETCONF", "trailer conn_type=netconf"])],
                 server_args=["--secret", "s3cr3t"],
                 server_lines=[R(INIT_LINE), "initialize-released device=dev1"]),
        Scenario("echo-metadata",
                 [Step(["--metadata", "x-a=1", "--metadata", "x-b-bin=AAECAwT/",
                        "echo", "3", "100"], 0,
                       ["header x-a=1", "header x-b-bin=AAECAwT/", "trailer x-echo-count=3",
                        "echo ok count=3 bytes=300"])],
                 server_lines=["commandget-open x-a=1 x-b-bin=AAECAwT/",
                               "commandget-end count=3 bytes=300"]),
        # A -bin value whose base64 needs padding: gRPC peers send it without
        # the '=' on the wire; both sides must print canonical padded base64.
        Scenario("echo-metadata-binpad",
                 [Step(["--metadata", "x-c-bin=3q2+7w==", "--metadata", "x-z=last",
                        "echo", "1", "10"], 0,
                       ["header x-c-bin=3q2+7w==", "header x-z=last", "trailer x-echo-count=1",
                        "echo ok count=1 bytes=10"])],
                 server_lines=["commandget-open x-c-bin=3q2+7w== x-z=last",
                               "commandget-end count=1 bytes=10"]),
        Scenario("echo-zero",
                 [Step(["echo", "0", "10"], 0, ["trailer x-echo-count=0",
                                                "echo ok count=0 bytes=0"])],
                 server_lines=["commandget-open", "commandget-end count=0 bytes=0"]),
        Scenario("echo-csh",
                 [Step(["echo", "2", "1000"], 0, ["trailer x-echo-count=2",
                                                  "echo ok count=2 bytes=2000"])],
                 server_args=["--session-type", "csh"],
                 server_lines=["commandget-open", "commandget-end count=2 bytes=2000"]),
        Scenario("echo-1mib",
                 [Step(["echo", "4", "1048576"], 0, ["trailer x-echo-count=4",
                                                     "echo ok count=4 bytes=4194304"])],
                 server_lines=["commandget-open", "commandget-end count=4 bytes=4194304"]),
        # The contract does not say what the server prints for the failed
        # stream itself; a commandget-cancelled line is tolerated.
        # The client's own limit is raised so that the 5 MB message is really
        # sent and it is the server's limit that fails the call.
        Scenario("oversize",
                 [Step(["--max-message", "16777216", "echo", "1", "5000000"], 1,
                       [R(r"error: RESOURCE_EXHAUSTED: .*")]),
                  Step(["status"], 0, ["status SUCCESS"])],
                 server_lines=["commandget-open", "status"],
                 server_ignore=[r"commandget-cancelled count=\d+"]),
        Scenario("max-message-option",
                 [Step(["echo", "1", "70000"], 1, [R(r"error: RESOURCE_EXHAUSTED: .*")]),
                  Step(["echo", "1", "60000"], 0, ["trailer x-echo-count=1",
                                                   "echo ok count=1 bytes=60000"])],
                 server_args=["--max-message", "65536"],
                 server_lines=["commandget-open", "commandget-open",
                               "commandget-end count=1 bytes=60000"],
                 server_ignore=[r"commandget-cancelled count=\d+"]),
        # The client's --max-message limits what it accepts: the server takes
        # the 5 MB message and echoes it, the client refuses the echo.
        Scenario("client-max-message",
                 [Step(["echo", "1", "5000000"], 1, [R(r"error: RESOURCE_EXHAUSTED: .*")])],
                 server_args=["--max-message", "16777216"],
                 server_lines=["commandget-open",
                               R(r"commandget-(cancelled count=1|end count=1 bytes=5000000)")]),
        Scenario("send-status",
                 [Step(["send-status", "9", HELLO], 1,
                       ["error: FAILED_PRECONDITION: " + HELLO])],
                 server_lines=["commandget-open"]),
        Scenario("cancel",
                 [Step(["cancel-initialize", "200"], 0, ["cancelled"],
                       min_seconds=0.15, max_seconds=4.0)],
                 server_args=["--release-after", "5000"],
                 server_lines=[R(INIT_LINE), "initialize-cancelled device=dev1"],
                 server_gaps=[(0, 1, 0.1, 3.0)]),
        Scenario("deadline",
                 [Step(["--deadline", "300", "initialize"], 1,
                       [R(r"error: DEADLINE_EXCEEDED: .*")], max_seconds=4.0)],
                 server_args=["--release-after", "5000"],
                 server_lines=[R(INIT_LINE), "initialize-cancelled device=dev1"],
                 server_gaps=[(0, 1, 0.1, 3.0)]),
        # TLS matrix (client side).  pyclient's REASON words come from its
        # own diagnosis (see pyclient.py: grpcio's text plus an ssl-module
        # probe), so the same assertions hold for every pair.
        Scenario("tls-unknown-ca",
                 [Step(["status"], 2, [R(r"error: tls: .*unknown ca.*")], ca="otherca.pem")]),
        Scenario("tls-name-mismatch",
                 [Step(["status"], 2, [R(r"error: tls: .*name mismatch.*")], host="localhost")],
                 cert="wrongname"),
        Scenario("tls-expired",
                 [Step(["status"], 2, [R(r"error: tls: .*expired.*")], host="localhost")],
                 cert="expired"),
        Scenario("tls-sanip-badcn",
                 [Step(["status"], 0, ["status SUCCESS"], host="127.0.0.1")],
                 cert="sanip_badcn", server_lines=["status"]),
        Scenario("tls-selfsigned",
                 [Step(["status"], 0, ["status SUCCESS"], host="localhost", ca="selfsigned.pem")],
                 cert="selfsigned", server_lines=["status"]),
        Scenario("tls-cnonly",
                 [Step(["status"], 0, ["status SUCCESS"], host="localhost")],
                 cert="cnonly", server_lines=["status"]),
        Scenario("connect-refused",
                 [Step(["status"], 2, [R(r"error: connect: .*")], max_seconds=10.0)],
                 no_server=True,
                 doc="nothing listens on the port: exit 2 with 'error: connect:'"),
        Scenario("usage",
                 [Step(["frobnicate"], 64, None), Step(["echo", "1"], 64, None)],
                 no_server=True, doc="bad usage: exit 64 (stdout not checked)"),
        Scenario("bench-stream-smoke",
                 [Step(["bench-stream", "1", "65536"], 0,
                       [R(r"bench-stream messages=\d+ bytes=\d+ seconds=[0-9.]+ "
                          r"mib_per_s=[0-9.]+")], max_seconds=15.0)],
                 server_lines=["commandget-open", R(r"commandget-end count=\d+ bytes=\d+")],
                 check=check_bench_stream),
        Scenario("bench-unary-smoke",
                 [Step(["bench-unary", "1"], 0,
                       [R(r"bench-unary calls=\d+ seconds=[0-9.]+ calls_per_s=[0-9.]+")],
                       max_seconds=15.0)],
                 server_lines=[], server_ignore=[r"status"], check=check_bench_unary),
    ]
    return {sc.name: sc for sc in s}


# ---------------------------------------------------------------------------


def compare(what, got, want):
    """Returns a list of failure strings (empty when got matches want)."""
    problems = []
    for i in range(max(len(got), len(want))):
        g = got[i] if i < len(got) else None
        w = want[i] if i < len(want) else None
        if g is None:
            problems.append("%s line %d missing, want %r" % (what, i + 1, w))
        elif w is None:
            problems.append("%s line %d unexpected: %r" % (what, i + 1, g))
        elif not w.match(g):
            problems.append("%s line %d: got %r, want %r" % (what, i + 1, g, w))
    return problems


def wrapper_report(what, lines):
    """A failure text for a wrapped peer that exited with 99."""
    report = peers.valgrind_report(lines) or lines[-80:]
    return ("%s: the wrapper (%s) reported errors (exit status %d):\n%s"
            % (what, " ".join(peers.wrapper()), peers.WRAPPER_ERROR_RC,
               "\n".join("    | " + x for x in report)))


def free_port():
    """A loopback port on which nothing listens (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_scenario(sc, pair, opts):
    ckind, skind = pair.split("-")
    env = peers.child_env(opts.stub_dir)
    certs = os.path.abspath(opts.certs)
    failures = []
    results = []
    server = None
    wrapped_client = ckind == "c" and bool(peers.wrapper())
    wrapped_server = skind == "c" and bool(peers.wrapper())
    try:
        if not sc.no_server:
            argv = peers.server_command(skind, opts.testd) + [
                "--listen", "%s:0" % sc.listen,
                "--cert", os.path.join(certs, sc.cert + ".pem"),
                "--key", os.path.join(certs, sc.cert + ".key")] + sc.server_args
            server = peers.Server(argv, env)
            host, port = server.wait_listening(LISTEN_TIMEOUT)
            if host != sc.listen:
                failures.append("listening line host %r, want %r" % (host, sc.listen))
            if port == 0:
                failures.append("listening line shows port 0, want the real port")
        else:
            port = free_port()

        for i, step in enumerate(sc.steps):
            host = step.host or sc.listen
            argv = peers.client_command(ckind, opts.testc) + [
                "--connect", "%s:%d" % (host, port),
                "--ca", os.path.join(certs, step.ca)] + step.args
            res = peers.run_client(argv, env, CLIENT_TIMEOUT)
            results.append(res)
            tag = "client run %d (%s)" % (i + 1, " ".join(step.args))
            bad = []
            if res.timed_out:
                bad.append("%s did not finish within %.0f s" % (tag, CLIENT_TIMEOUT))
            if res.rc != step.rc:
                bad.append("%s exit status %s, want %d" % (tag, res.rc, step.rc))
            if step.lines is not None:
                bad += compare(tag + " stdout", res.lines, step.lines)
            if step.min_seconds is not None and res.seconds < step.min_seconds:
                bad.append("%s took %.3f s, want at least %.3f s"
                           % (tag, res.seconds, step.min_seconds))
            if step.max_seconds is not None and res.seconds > step.max_seconds * SCALE:
                bad.append("%s took %.3f s, want at most %.3f s"
                           % (tag, res.seconds, step.max_seconds * SCALE))
            if wrapped_client and res.rc == peers.WRAPPER_ERROR_RC:
                bad.append(wrapper_report(tag, res.stderr))
            if bad:
                failures += bad
                failures.append("client details:\n" + res.describe())

        server_events = []
        if server is not None:
            def relevant(lines):
                return [x for x in lines[1:] if not any(ig.match(x) for ig in sc.server_ignore)]
            want_n = len(sc.server_lines)
            server.wait_lines(lambda lines: len(relevant(lines)) >= want_n, SERVER_SETTLE)
            time.sleep(EXTRA_LINES_GRACE)
            server_events = server.events()
            timed = [(t, x) for t, x in server.timed_events()
                     if not any(ig.match(x) for ig in sc.server_ignore)]
            got = [x for _, x in timed]
            problems = compare("server", got, sc.server_lines)
            failures += problems
            for i, j, lo, hi in sc.server_gaps:
                if problems or j >= len(timed):
                    break
                gap = timed[j][0] - timed[i][0]
                if SCALE > 1:
                    # Behind a wrapper, line arrival times are too noisy
                    # for a lower bound; the unwrapped runs check it.
                    lo, hi = 0.0, hi * SCALE
                if not lo <= gap <= hi:
                    failures.append("server line %d came %.3f s after line %d, want %.2f..%.2f s"
                                    % (j + 1, gap, i + 1, lo, hi))
            if server.proc.poll() is not None:
                failures.append("server exited early with status %s" % server.proc.returncode)
        if sc.check is not None and not failures:
            msg = sc.check(results, server_events)
            if msg:
                failures.append(msg)
    except peers.PeerError as e:
        failures.append(str(e))
    except Exception:  # noqa: BLE001  (report, then clean up below)
        failures.append("harness error:\n" + traceback.format_exc())
    finally:
        if server is not None:
            rc = server.stop(SERVER_STOP_GRACE)
            if wrapped_server and rc == peers.WRAPPER_ERROR_RC:
                failures.append(wrapper_report("server", server.stderr))
            elif wrapped_server and (server.killed or rc != 0):
                # Without a clean exit the wrapper never reports.
                failures.append("server exit status %s after SIGTERM%s, want 0 (wrapped)"
                                % (rc, " (killed after %.0f s)" % SERVER_STOP_GRACE
                                   if server.killed else ""))
            if failures:
                failures.append("server details:\n" + server.describe())
    return failures, results, server


def self_check(opts):
    """Mutated py-py scenarios must fail, the unmutated one must pass."""
    def mutated(name, mutate):
        sc = scenarios()[name]
        mutate(sc)
        return sc

    def set_line(step_lines, i, value):
        step_lines[i] = L(value)

    cases = [
        ("client line", mutated("initialize", lambda sc: set_line(
            sc.steps[0].lines, 1, "trailer conn_type=csh"))),
        ("missing client line", mutated("status", lambda sc: sc.steps[0].lines.append(
            L("status SUCCESS")))),
        ("client exit status", mutated("wrong-secret", lambda sc: setattr(
            sc.steps[0], "rc", 0))),
        ("server line", mutated("echo-metadata", lambda sc: set_line(
            sc.server_lines, 0, "commandget-open x-a=1"))),
        ("extra server line", mutated("status", lambda sc: setattr(sc, "server_lines", []))),
        ("tls expectation", mutated("tls-expired", lambda sc: setattr(sc, "cert", "server"))),
        ("timing", mutated("status", lambda sc: setattr(sc.steps[0], "min_seconds", 30.0))),
        ("server timing", mutated("initialize", lambda sc: setattr(
            sc, "server_gaps", [(0, 1, 0.0, 0.1)]))),
        # One status line more than calls made: check_bench_unary must notice.
        ("custom check", mutated("bench-unary-smoke", lambda sc: setattr(
            sc, "check", lambda res, lines: check_bench_unary(res, lines + ["status"])))),
    ]
    bad = []
    for what, sc in cases:
        failures, _, _ = run_scenario(sc, "py-py", opts)
        print("%s  mutated %-20s -> %s" % ("ok  " if failures else "FAIL", what,
                                            failures[0] if failures else "NOT DETECTED"))
        if not failures:
            bad.append(what)
    failures, _, _ = run_scenario(scenarios()["echo-metadata"], "py-py", opts)
    print("%s  unmutated echo-metadata passes" % ("ok  " if not failures else "FAIL"))
    if failures:
        bad.append("unmutated")
        print("\n".join(failures))
    return 1 if bad else 0


def main():
    p = argparse.ArgumentParser(prog="run_interop.py")
    p.add_argument("--pair", choices=["py-py", "py-c", "c-py", "c-c"])
    p.add_argument("--scenario", action="append",
                   help="scenario name (repeatable), or 'all'")
    p.add_argument("--certs", help="directory written by mkcerts.py")
    p.add_argument("--testd", help="path of ncgrpc-testd (pairs *-c)")
    p.add_argument("--testc", help="path of ncgrpc-testc (pairs c-*)")
    p.add_argument("--stub-dir", help="cache directory of the generated Python stubs")
    p.add_argument("--list", action="store_true", help="print the scenario names")
    p.add_argument("--self-check", action="store_true",
                   help="check that the harness detects wrong results (py-py)")
    p.add_argument("-v", "--verbose", action="store_true")
    opts = p.parse_args()

    table = scenarios()
    if opts.list:
        for name in table:
            print(name)
        return 0
    if opts.self_check:
        if not opts.certs:
            sys.stderr.write("run_interop.py: --self-check needs --certs\n")
            return 64
        peers.install_exit_on_signals()
        return self_check(opts)
    if not opts.pair or not opts.scenario or not opts.certs:
        p.print_usage(sys.stderr)
        sys.stderr.write("run_interop.py: --pair, --scenario and --certs are required\n")
        return 64
    names = list(table) if "all" in opts.scenario else opts.scenario
    unknown = [n for n in names if n not in table]
    if unknown:
        sys.stderr.write("run_interop.py: unknown scenario(s): %s\n" % ", ".join(unknown))
        return 64
    if not os.path.isfile(os.path.join(opts.certs, "ca.pem")):
        sys.stderr.write("run_interop.py: no certificates in %s (run mkcerts.py)\n" % opts.certs)
        return 64
    peers.install_exit_on_signals()

    failed = []
    for name in names:
        start = time.monotonic()
        failures, results, server = run_scenario(table[name], opts.pair, opts)
        took = time.monotonic() - start
        if failures:
            failed.append(name)
            print("FAIL %s %s (%.2f s)" % (opts.pair, name, took))
            for f in failures:
                print("  " + f.replace("\n", "\n  "))
        else:
            print("ok   %s %s (%.2f s)" % (opts.pair, name, took))
            if opts.verbose:
                for r in results:
                    print(r.describe())
                if server is not None:
                    print(server.describe())
        sys.stdout.flush()
    if failed:
        print("%d of %d scenario(s) failed: %s" % (len(failed), len(names), " ".join(failed)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
