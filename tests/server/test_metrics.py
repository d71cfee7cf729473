#!/usr/bin/python3
"""The metrics endpoint of ncgrpcd (metrics-listen, docs/metrics.md).

    test_metrics.py --ncgrpcd PATH --agent PATH --stub-dir DIR [unittest args]

MetricsTest drives devices (the emulator devemu.py) and operators through a
known script, scrapes GET /metrics, parses the Prometheus text format
strictly, and checks every counter against what the script did.
MetricsHostileTest sends the endpoint what a hostile client would and checks
that ncgrpcd answers or drops it and keeps serving.
"""
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import test_server  # noqa: E402
from test_server import CFG, EOM, ServerTestCase, rpc  # noqa: E402

import devemu  # noqa: E402
import srvlib  # noqa: E402

os.environ.setdefault("GRPC_VERBOSITY", "NONE")
# grpcio must not run pthread_atfork handlers: the harness forks (subprocess)
# while its threads run, and the handler once waited forever in fork().
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import grpc  # noqa: E402

IO_TIMEOUT = 10


# ----- the text format, parsed strictly -------------------------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
SAMPLE_RX = re.compile(r"^(%s)(\{[^\n]*\})? (\S+)$" % NAME)
VALUE_RX = re.compile(r"^(?:[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
                      r"|[+-]Inf|NaN)$")


class FormatError(Exception):
    pass


def parse_labels(text, lineno):
    """{a="x",b="y"} -> (("a","x"),("b","y")), with \\\\, \\" and \\n unescaped."""
    out = []
    i = 1
    if text[-1] != "}":
        raise FormatError("line %d: labels do not end with }" % lineno)
    while i < len(text) - 1:
        m = re.compile(LABEL).match(text, i)
        if m is None:
            raise FormatError("line %d: bad label name at %r" % (lineno, text[i:]))
        name = m.group(0)
        i = m.end()
        if text[i:i + 2] != '="':
            raise FormatError("line %d: no =\" after label %s" % (lineno, name))
        i += 2
        val = []
        while True:
            if i >= len(text) - 1:
                raise FormatError("line %d: unterminated label value" % lineno)
            c = text[i]
            if c == "\\":
                nxt = text[i + 1]
                if nxt not in ('\\', '"', 'n'):
                    raise FormatError("line %d: bad escape \\%s" % (lineno, nxt))
                val.append("\n" if nxt == "n" else nxt)
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                val.append(c)
                i += 1
        if name in dict(out):
            raise FormatError("line %d: label %s twice" % (lineno, name))
        out.append((name, "".join(val)))
        if text[i] == ",":
            i += 1
        elif i != len(text) - 1:
            raise FormatError("line %d: junk after label %s" % (lineno, name))
    return tuple(out)


def parse_value(s, lineno):
    if not VALUE_RX.match(s):
        raise FormatError("line %d: bad value %r" % (lineno, s))
    return float(s)


def parse_exposition(text):
    """Returns {family: {"type", "help", "samples": {(name, labels): value}}};
    raises FormatError on anything the 0.0.4 text format does not allow (or
    that ncgrpcd should never write: timestamps, blank lines, comments)."""
    if not text.endswith("\n"):
        raise FormatError("does not end with a newline")
    fams = {}
    cur = None
    for lineno, line in enumerate(text[:-1].split("\n"), 1):
        if line.startswith("# HELP "):
            parts = line.split(" ", 3)
            if len(parts) != 4 or not re.fullmatch(NAME, parts[2]):
                raise FormatError("line %d: bad HELP" % lineno)
            name = parts[2]
            if name in fams:
                raise FormatError("line %d: family %s again" % (lineno, name))
            if re.search(r"\\[^\\n]", parts[3].replace("\\\\", "")):
                raise FormatError("line %d: bad escape in HELP" % lineno)
            cur = fams[name] = {"help": parts[3], "type": None, "samples": {}}
            cur_name = name
            continue
        if line.startswith("# TYPE "):
            parts = line.split(" ")
            if len(parts) != 4 or cur is None or parts[2] != cur_name or cur["type"]:
                raise FormatError("line %d: TYPE not right after its HELP" % lineno)
            if parts[3] not in ("counter", "gauge", "histogram"):
                raise FormatError("line %d: type %r" % (lineno, parts[3]))
            cur["type"] = parts[3]
            continue
        m = SAMPLE_RX.match(line)
        if m is None:
            raise FormatError("line %d: not a sample: %r" % (lineno, line))
        if cur is None or cur["type"] is None:
            raise FormatError("line %d: sample before HELP and TYPE" % lineno)
        name, labels = m.group(1), m.group(2)
        allowed = {cur_name} if cur["type"] != "histogram" else \
            {cur_name + s for s in ("_bucket", "_sum", "_count")}
        if name not in allowed:
            raise FormatError("line %d: %s in family %s" % (lineno, name, cur_name))
        if cur["type"] == "counter" and not name.endswith("_total"):
            raise FormatError("line %d: counter %s without _total" % (lineno, name))
        lab = parse_labels(labels, lineno) if labels else ()
        le = [v for k, v in lab if k == "le"]
        if name.endswith("_bucket") != bool(le):
            raise FormatError("line %d: le where it does not belong" % lineno)
        key = (name, lab)
        if key in cur["samples"]:
            raise FormatError("line %d: series again" % lineno)
        v = parse_value(m.group(3), lineno)
        if cur["type"] == "counter" and (v < 0 or v != math.floor(v)):
            raise FormatError("line %d: counter value %r" % (lineno, v))
        cur["samples"][key] = v
    for name, f in fams.items():
        if f["type"] is None or not f["samples"]:
            raise FormatError("family %s without TYPE or samples" % name)
        if f["type"] == "histogram":
            check_histogram(name, f)
    return fams


def check_histogram(name, f):
    """Buckets ascending by le, cumulative, ending in +Inf == _count."""
    series = {}
    for (n, lab), v in f["samples"].items():
        rest = tuple(x for x in lab if x[0] != "le")
        s = series.setdefault(rest, {"buckets": []})
        if n.endswith("_bucket"):
            s["buckets"].append((float(dict(lab)["le"]), v))
        elif n.endswith("_sum"):
            s["sum"] = v
        else:
            s["count"] = v
    for rest, s in series.items():
        if "sum" not in s or "count" not in s or not s["buckets"]:
            raise FormatError("%s%s: incomplete histogram" % (name, rest))
        les = [le for le, _ in s["buckets"]]
        if les != sorted(les) or les[-1] != math.inf:
            raise FormatError("%s%s: le not ascending to +Inf" % (name, rest))
        counts = [c for _, c in s["buckets"]]
        if counts != sorted(counts) or counts[-1] != s["count"]:
            raise FormatError("%s%s: buckets not cumulative" % (name, rest))


class ParserSelfTest(unittest.TestCase):
    """The parser above rejects what it must (so that passing means something)."""

    GOOD = ('# HELP a_total Help with \\\\ and \\n.\n# TYPE a_total counter\n'
            'a_total{x="q\\"\\n"} 3\n'
            '# HELP h H.\n# TYPE h histogram\nh_bucket{le="0.5"} 1\nh_bucket{le="+Inf"} 2\n'
            'h_sum 0.75\nh_count 2\n')

    def test_good(self):
        f = parse_exposition(self.GOOD)
        self.assertEqual(f["a_total"]["samples"][("a_total", (("x", 'q"\n'),))], 3)

    def test_bad(self):
        for bad in [self.GOOD.replace("3\n", "3"),
                    self.GOOD.replace("# TYPE a_total counter\n", ""),
                    self.GOOD.replace('x="q', 'x=q'),
                    self.GOOD.replace("a_total{", "b_total{"),
                    self.GOOD.replace(" 3\n", " three\n"),
                    self.GOOD.replace('le="+Inf"} 2', 'le="+Inf"} 3'),
                    self.GOOD.replace('h_bucket{le="0.5"} 1', 'h_bucket{le="0.5"} 5'),
                    self.GOOD + "\n",
                    self.GOOD + "a_total 1\n",
                    self.GOOD.replace("a_total{x", "a_total{x=\"1\",x")]:
            with self.assertRaises(FormatError, msg=bad):
                parse_exposition(bad)


# ----- HTTP ---------------------------------------------------------------------------

def http_exchange(port, request, timeout=IO_TIMEOUT):
    """Sends request (bytes), reads until the server closes; returns the bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        return read_to_close(s, timeout)


def read_to_close(s, timeout):
    s.settimeout(timeout)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            return out
        out += chunk
    raise TimeoutError("connection not closed within %.1f s (got %r)" % (timeout, out[:200]))


def http_response(raw):
    """(status, headers dict lowercased, body) of one HTTP/1.1 response."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError("no end of head in %r" % raw[:300])
    lines = head.decode("latin-1").split("\r\n")
    m = re.fullmatch(r"HTTP/1\.1 (\d{3}) .+", lines[0])
    if m is None:
        raise AssertionError("bad status line %r" % lines[0])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    if int(headers.get("content-length", -1)) != len(body):
        raise AssertionError("Content-Length %s, body %d bytes"
                             % (headers.get("content-length"), len(body)))
    return int(m.group(1)), headers, body


def scrape(port, version="1.1"):
    raw = http_exchange(port, ("GET /metrics HTTP/%s\r\nHost: 127.0.0.1\r\n"
                               "Accept: text/plain\r\n\r\n" % version).encode())
    status, headers, body = http_response(raw)
    if status != 200:
        raise AssertionError("scrape: %d %r" % (status, body))
    if not headers["content-type"].startswith("text/plain; version=0.0.4"):
        raise AssertionError("content type %r" % headers["content-type"])
    return parse_exposition(body.decode("utf-8"))


def value(fams, name, **labels):
    """The sample name{labels} (in any label order); KeyError if absent."""
    fam = name
    for suf in ("_bucket", "_sum", "_count"):
        if name.endswith(suf) and name[:-len(suf)] in fams and \
                fams[name[:-len(suf)]]["type"] == "histogram":
            fam = name[:-len(suf)]
    want = tuple(sorted(labels.items()))
    for (n, lab), v in fams[fam]["samples"].items():
        if n == name and tuple(sorted(lab)) == want:
            return v
    raise KeyError("%s%s not exported" % (name, labels))


class MetricsCase(ServerTestCase):
    def metrics_server(self, devices):
        self.mport = srvlib.free_port()
        return self.new_server(devices, extra=["metrics-listen 127.0.0.1:%d" % self.mport])


# ---------------------------------------------------------------------------
class MetricsTest(MetricsCase):
    """The counters equal what the test did."""

    def test_counters_match_the_script(self):
        srv = self.metrics_server({"m1": "metrics-secret-1", "m2": "metrics-secret-2"})
        srv.log.wait(r"metrics on http://127\.0\.0\.1:%d/metrics" % self.mport, 10)
        # Before anything: every single-node family, all zero; no etcd ones.
        f0 = scrape(self.mport)
        self.assertEqual(value(f0, "ncgrpcd_devices_connected"), 0)
        self.assertEqual(value(f0, "ncgrpcd_tls_handshakes_total", result="ok"), 0)
        self.assertFalse([n for n in f0 if "etcd" in n], "etcd families without a cluster")
        for fam in f0.values():
            if fam["type"] != "gauge" or "connections" not in fam["help"]:
                for v in fam["samples"].values():
                    self.assertEqual(v, 0)

        # Two refused attempts: a wrong secret and an unknown device.
        code, _ = devemu.initialize_once(srv.target(), srv.cert_pem(), "m1", "WRONG-secret")
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)
        code, _ = devemu.initialize_once(srv.target(), srv.cert_pem(), "nosuch", "x-secret")
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)
        # One TLS handshake that fails: garbage instead of a ClientHello.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=IO_TIMEOUT) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n" * 4)
            read_to_close(s, IO_TIMEOUT)

        emu1 = self.new_emu(srv, "m1", "metrics-secret-1")
        emu2 = self.new_emu(srv, "m2", "metrics-secret-2")
        opc = self.op(srv)
        opc.wait_device("m1", 15)
        opc.wait_device("m2", 15)

        # A NETCONF session with known bytes each way.
        s = opc.session("m1", "netconf", wait_ms=10000)
        s.wait_started(15)
        hello = s.read_until(EOM, IO_TIMEOUT)
        sent = [test_server.CLIENT_HELLO, rpc(1, "<get-config><source><running/></source>"
                                                 "</get-config>"),
                rpc(2, "<close-session/>")]
        s.send(sent[0])
        time.sleep(0.2)
        s.send(sent[1])
        s.read_until(EOM, IO_TIMEOUT)
        s.send(sent[2])
        s.read_until(EOM, IO_TIMEOUT)
        s.read_all(IO_TIMEOUT)
        self.assertEqual(s.code, grpc.StatusCode.OK, s.details)
        nc_to = sum(len(x) for x in sent)
        nc_from = s.received()
        self.assertGreater(nc_from, len(hello) - 1)
        self.assertEqual(s.ended.bytes_to_device, nc_to)
        self.assertEqual(s.ended.bytes_from_device, nc_from)

        # A shell session: two lines, the second "exit" ends it.
        sh = opc.session("m2", "shell", wait_ms=10000)
        sh.wait_started(15)
        sh.send("echo metrics-check\n")
        sh.read_until(b"metrics-check\n", IO_TIMEOUT)
        sh.send("exit\n")
        sh.read_all(IO_TIMEOUT)
        self.assertEqual(sh.code, grpc.StatusCode.OK, sh.details)
        # Line mode: each line goes to the device without its newline.
        sh_to = len("echo metrics-check") + len("exit")
        sh_from = sh.received()
        self.assertEqual(sh.ended.bytes_to_device, sh_to)
        self.assertEqual(sh.ended.bytes_from_device, sh_from)

        # A session for a device nobody registered: refused, never started.
        bad = opc.session("ghost", "shell", wait_ms=1000)
        bad.wait_done(IO_TIMEOUT)
        self.assertEqual(bad.code, grpc.StatusCode.NOT_FOUND)

        # Quiet again: each emulator has its next Initialize waiting, and
        # has closed its session's connection.  It closes it once the call
        # has ended, a moment after ncgrpcd wrote session-end: wait for
        # that, then check everything in one scrape.
        opc.wait_device("m1", 15)
        opc.wait_device("m2", 15)
        self.wait_audit(srv, "session-end", type="shell")
        deadline = time.monotonic() + 15
        while True:
            f = scrape(self.mport)
            if (value(f, "ncgrpcd_device_connections", state="authenticated") <= 2
                    or time.monotonic() > deadline):
                break
            time.sleep(0.05)
        self.assertEqual(value(f, "ncgrpcd_devices_connected"), 2)
        self.assertEqual(value(f, "ncgrpcd_idle_connections"), 2)
        self.assertEqual(value(f, "ncgrpcd_device_connections", state="authenticated"), 2)
        self.assertEqual(value(f, "ncgrpcd_auth_failures_total", reason="bad_secret"), 1)
        self.assertEqual(value(f, "ncgrpcd_auth_failures_total", reason="unknown_device"), 1)
        self.assertEqual(value(f, "ncgrpcd_auth_failures_total", reason="error"), 0)
        self.assertEqual(value(f, "ncgrpcd_auth_throttled_total", reason="failures"), 0)
        for t in ("netconf", "shell"):
            self.assertEqual(value(f, "ncgrpcd_sessions_active", type=t), 0)
            self.assertEqual(value(f, "ncgrpcd_sessions_started_total", type=t), 1)
            self.assertEqual(value(f, "ncgrpcd_sessions_total", type=t,
                                   reason="device_closed"), 1)
            self.assertEqual(value(f, "ncgrpcd_session_open_seconds_count", type=t), 1)
        self.assertEqual(value(f, "ncgrpcd_sessions_total", type="shell",
                               reason="not_connected"), 1)
        total = sum(v for (n, lab), v in f["ncgrpcd_sessions_total"]["samples"].items())
        self.assertEqual(total, 3)
        self.assertEqual(value(f, "ncgrpcd_session_bytes_total", type="netconf",
                               direction="to_device"), nc_to)
        self.assertEqual(value(f, "ncgrpcd_session_bytes_total", type="netconf",
                               direction="from_device"), nc_from)
        self.assertEqual(value(f, "ncgrpcd_session_bytes_total", type="shell",
                               direction="to_device"), sh_to)
        self.assertEqual(value(f, "ncgrpcd_session_bytes_total", type="shell",
                               direction="from_device"), sh_from)
        # Handshakes: one failed (the garbage); the rest each a connection
        # that reached the server: 2 initialize_once, and per emulator one
        # for the session and one for the Initialize waiting now, at least.
        self.assertEqual(value(f, "ncgrpcd_tls_handshakes_total", result="failed"), 1)
        ok = value(f, "ncgrpcd_tls_handshakes_total", result="ok")
        self.assertGreaterEqual(ok, 6)
        self.assertEqual(value(f, "ncgrpcd_tls_handshake_seconds_count"), ok)
        self.assertGreater(value(f, "ncgrpcd_tls_handshake_seconds_sum"), 0)
        self.assertEqual(value(f, "ncgrpcd_preauth_limit_hits_total", limit="max_connections"), 0)
        # HTTP/1.0 gets the same document.
        f10 = scrape(self.mport, "1.0")
        self.assertEqual(set(f10), set(f))
        emu1.stop()
        emu2.stop()


# ---------------------------------------------------------------------------
class MetricsHostileTest(MetricsCase):
    """Hostile scrapers: each is answered or dropped, and ncgrpcd goes on."""

    def setUp(self):
        super().setUp()
        self.srv = self.metrics_server({"h1": "hostile-secret"})
        self.srv.log.wait(r"metrics on http://", 10)

    def status(self, request):
        return http_response(http_exchange(self.mport, request))[0]

    def assertServing(self):
        self.assertTrue(self.srv.alive())
        f = scrape(self.mport)
        self.assertIn("ncgrpcd_devices_connected", f)
        self.assertEqual(self.op(self.srv).list_devices(), [])

    def test_wrong_requests(self):
        cases = [
            (b"GET /other HTTP/1.1\r\n\r\n", 404),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", 404),
            (b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 405),
            (b"HEAD /metrics HTTP/1.1\r\n\r\n", 405),
            (b"GET /metrics HTTP/2.0\r\n\r\n", 505),
            (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", 400),
            (b"GET /metrics HTTP/1.1\r\n folded: x\r\n\r\n", 400),
            (b"GET  /metrics HTTP/1.1\r\n\r\n", 400),
            (b"GET /metrics\r\n\r\n", 400),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n", 400),
            (b"GET /metrics HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
            (b"GET /metrics?name[]=x HTTP/1.1\r\n\r\n", 200),
            (b"GET /metrics HTTP/1.0\n\n", 200),
        ]
        for req, want in cases:
            self.assertEqual(self.status(req), want, req)
        raw = http_exchange(self.mport, b"DELETE /metrics HTTP/1.1\r\n\r\n")
        self.assertEqual(http_response(raw)[1].get("allow"), "GET")
        self.assertServing()

    def test_oversized_request(self):
        big = b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n"
        with socket.create_connection(("127.0.0.1", self.mport), timeout=IO_TIMEOUT) as s:
            try:
                s.sendall(big)
            except (BrokenPipeError, ConnectionResetError):
                pass
            raw = read_to_close(s, IO_TIMEOUT)
        self.assertEqual(http_response(raw)[0], 431)
        # A request line alone over the bound.
        raw = http_exchange(self.mport, b"GET /" + b"m" * 9000)
        self.assertEqual(http_response(raw)[0], 431)
        self.assertServing()

    def test_slow_request_times_out(self):
        with socket.create_connection(("127.0.0.1", self.mport), timeout=IO_TIMEOUT) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            t0 = time.monotonic()
            # Trickle a header byte a second: the deadline is for the whole head.
            s.settimeout(1)
            got = b""
            while time.monotonic() - t0 < 15:
                try:
                    s.sendall(b"X")
                except (BrokenPipeError, ConnectionResetError):
                    break
                try:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
                except socket.timeout:
                    pass
            self.assertLess(time.monotonic() - t0, 15, "slow request never timed out")
        self.assertEqual(http_response(got)[0], 408)
        self.assertServing()

    def test_many_connections(self):
        held = []
        try:
            for _ in range(40):
                held.append(socket.create_connection(("127.0.0.1", self.mport),
                                                     timeout=IO_TIMEOUT))
            # Past the cap, connections are closed at once without an answer.
            closed = 0
            for s in held[16:]:
                s.settimeout(IO_TIMEOUT)
                try:
                    if s.recv(1) == b"":
                        closed += 1
                except ConnectionResetError:
                    closed += 1
            self.assertEqual(closed, len(held) - 16)
        finally:
            for s in held:
                s.close()
        # Once they are gone, scrapes work again.
        srvlib.wait_until(lambda: self._scrapes(), 10, "scrape after the flood")
        self.assertServing()

    def _scrapes(self):
        try:
            scrape(self.mport)
            return True
        except (OSError, AssertionError, TimeoutError):
            return False

    def test_garbage_flood(self):
        for i in range(50):
            with socket.create_connection(("127.0.0.1", self.mport), timeout=IO_TIMEOUT) as s:
                s.sendall(os.urandom(64 + i * 37) + b"\r\n\r\n")
                try:
                    read_to_close(s, IO_TIMEOUT)
                except ConnectionResetError:
                    pass
        self.assertServing()


if __name__ == "__main__":
    sys.argv[0] = __file__
    # test_server.main() runs the TestCases of the __main__ module: these.
    sys.exit(test_server.main())
