#!/usr/bin/python3
"""Node-to-node forwarding (docs/cluster.md), end to end on loopback.

    test_forward.py --ncgrpcd PATH --agent PATH --cli PATH [--stub-dir DIR]
                    [unittest args]

Two ncgrpcd nodes with node certificates from "ncgrpc cluster ca init" and
"node-cert"; a device (ncgrpc-agent) on node B; the operator on node A.
"""
import sys

sys.dont_write_bytecode = True

import argparse
import faulthandler  # noqa: E402
import hashlib  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402
import uuid  # noqa: E402

os.environ.setdefault("GRPC_VERBOSITY", "NONE")
# grpcio must not run pthread_atfork handlers: the harness forks (subprocess)
# while its threads run, and the handler once waited forever in fork().
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import grpc  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "server"))
sys.path.insert(0, HERE)
import clusterlib  # noqa: E402
import opclient  # noqa: E402
import srvlib  # noqa: E402

CFG = {"ncgrpcd": None, "agent": None, "cli": None}
DEV = clusterlib.DEVICE
EOM = b"]]>]]>"
NC_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
CLIENT_HELLO = ('<?xml version="1.0" encoding="UTF-8"?>\n<hello xmlns="%s"><capabilities>'
                '<capability>urn:ietf:params:netconf:base:1.0</capability></capabilities>'
                '</hello>]]>]]>' % NC_NS).encode()
PROMPT = re.compile(rb"[$#] $")


def rpc(mid, body):
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<rpc message-id="%s" xmlns="%s">%s</rpc>'
            ']]>]]>' % (mid, NC_NS, body)).encode()


def audit_fields(line):
    out = {}
    for m in re.finditer(r'(\S+?)=("(?:[^"\\]|\\.)*"|\S+)', line):
        v = m.group(2)
        if v.startswith('"'):
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        out[m.group(1)] = v
    return out


def sh_prepare(s, timeout=15):
    s.read_until(PROMPT, timeout)
    tok = uuid.uuid4().hex[:12]
    s.send("stty -echo -onlcr; printf '<%%s>\\n' R%s\n" % tok)
    s.read_until(("<R%s>\n" % tok).encode(), timeout)


def sh_run(s, cmd, timeout=30):
    tok = uuid.uuid4().hex[:12]
    s.send("printf '<%%s>\\n' B%s; %s; printf '\\n<%%s>\\n' E%s\n" % (tok, cmd, tok))
    text = s.read_until(("\n<E%s>\n" % tok).encode(), timeout)
    begin = ("<B%s>\n" % tok).encode()
    return text[text.index(begin) + len(begin):-len("\n<E%s>\n" % tok)]


class SlowSession(opclient.Session):
    """An operator that reads one message every 20 ms."""

    def after_data(self):
        time.sleep(0.02)


class Base(unittest.TestCase):
    agent_extra = ('shell "/bin/sh";',)

    @classmethod
    def setUpClass(cls):
        cls.ctmp = tempfile.mkdtemp(prefix="ncgrpc-fwd-pki-")
        cls.pki = clusterlib.Pki(CFG["cli"], cls.ctmp).init()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.ctmp, ignore_errors=True)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ncgrpc-fwd-")
        os.chmod(self.tmp, 0o755)
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.pair = clusterlib.Pair(CFG["ncgrpcd"], CFG["agent"], self.tmp, self.pki,
                                    self.agent_extra)
        self.addCleanup(self._stop)
        self.pair.start()
        self.opa = opclient.OpClient(self.pair.a.sock)
        self.opb = opclient.OpClient(self.pair.b.sock)
        self.addCleanup(self.opa.close)
        self.addCleanup(self.opb.close)
        self.opb.wait_device(DEV, 20)

    def _stop(self):
        if os.environ.get("NCGRPC_TEST_VERBOSE"):
            for n, s in (("A", self.pair.a), ("B", self.pair.b)):
                sys.stderr.write("\n--- node %s log ---\n%s\n--- audit ---\n%s\n"
                                 % (n, s.log.tail(60), s.audit.tail(30)))
        self.pair.agent.stop()
        for srv in (self.pair.a, self.pair.b):
            rc = srv.stop()
            if rc not in (0, None) and not getattr(self, "_may_fail", False):
                raise AssertionError("ncgrpcd exited with %s; log:\n%s" % (rc, srv.log.tail()))

    def audit(self, srv, event, timeout=10, **match):
        deadline = time.monotonic() + timeout
        while True:
            for line in srv.audit.lines():
                f = audit_fields(line)
                if f.get("event") == event and all(f.get(k) == v for k, v in match.items()):
                    return f
            if time.monotonic() > deadline:
                self.fail("no audit event %s %r on %s; tail:\n%s"
                          % (event, match, srv.workdir, srv.audit.tail(20)))
            time.sleep(0.05)

    def shell_on_a(self, cls=opclient.Session):
        s = cls(self.opa, DEV, "shell", 15000)
        self.opa._open.append(s)
        st = s.wait_started(20)
        self.assertEqual(st.device_id, DEV)
        sh_prepare(s)
        return s


class ShellForwardTest(Base):
    def test_pki_files(self):
        key = os.path.join(self.pki.ca_dir, "ca.key")
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(self.pki.files("node-a")[1]).st_mode & 0o777, 0o600)
        # The CA key is never overwritten.
        r = self.pki.run("cluster", "ca", "init", self.pki.ca_dir)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not overwriting", r.stderr)
        r = self.pki.run("cluster", "node-cert", "n1")
        self.assertEqual(r.returncode, 64)
        self.assertIn("needs --ca", r.stderr)
        r = self.pki.run("cluster", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("node-cert", r.stdout)

    def test_config_check(self):
        """ncgrpcd -n loads the cluster certificates as a start would."""
        conf = self.pair.a.conf_path
        r = subprocess.run([CFG["ncgrpcd"], "-n", "-f", conf], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("cluster: node certificate", r.stdout)
        with open(conf) as f:
            text = f.read()
        crt = self.pki.files("node-a")[0]
        bad = os.path.join(self.tmp, "bad.conf")
        with open(bad, "w") as f:
            f.write(text.replace(crt, os.path.join(self.tmp, "missing.crt")))
        r = subprocess.run([CFG["ncgrpcd"], "-n", "-f", bad], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertRegex(r.stderr, r"ncgrpcd: cluster-(listen|cert): .*missing\.crt")

    def test_device_only_on_b(self):
        self.assertIsNone(self.opa.device(DEV))
        self.assertIsNotNone(self.opb.device(DEV))

    def test_shell_5mb_sha256_and_audit(self):
        s = self.shell_on_a()
        # 5 MB of output, checked byte for byte.
        n = 760000
        want = subprocess.run(["seq", "1", str(n)], capture_output=True, check=True).stdout
        self.assertGreater(len(want), 4_900_000)
        got = sh_run(s, "seq 1 %d" % n, timeout=60)
        self.assertEqual(len(got), len(want))
        self.assertEqual(hashlib.sha256(got).hexdigest(), hashlib.sha256(want).hexdigest())
        # And 1 MB the other way: sha256 computed on the device.
        blob = (uuid.uuid4().hex * 16 + "\n").encode() * 2000  # 514 kB of lines
        tok = uuid.uuid4().hex[:8]
        s.send("cat > /dev/null <<'E%s' && echo skip\n" % tok)
        s.send(blob)
        s.send("E%s\n" % tok)
        s.read_until(b"skip\n", 30)
        s.send("exit\n")
        s.read_all(20)
        self.assertEqual(s.code, grpc.StatusCode.OK, s.details)
        self.assertIn("device closed", s.ended.reason)
        # A audits the forward, B the session, with the operator and the hop.
        fa = self.audit(self.pair.a, "session-forward", device=DEV)
        self.assertEqual(fa["operator-uid"], str(os.getuid()))
        self.assertEqual(fa["node"], "127.0.0.1:%d" % self.pair.port_b)
        fb = self.audit(self.pair.b, "session-start", device=DEV)
        self.assertEqual(fb["operator"], "uid:%d" % os.getuid())
        self.assertEqual(fb["via"], "node:node-a")
        self.assertNotIn("operator-uid", fb)
        ea = self.audit(self.pair.a, "session-forward-end", device=DEV)
        self.assertIn("device closed", ea["reason"])
        self.assertEqual(ea["remote-session"], fb["session"])
        self.audit(self.pair.b, "session-end", session=fb["session"])

    def test_slow_reader_bounded_and_hangup(self):
        s = self.shell_on_a(SlowSession)
        rss0 = srvlib.rss_kib(self.pair.a.pid)
        s.send("yes 0123456789abcdef0123456789abcdef | head -c 2000000000\n")
        srvlib.wait_until(lambda: s.received() > 1_000_000, 30, "output flowing")
        time.sleep(3)
        grew_a = srvlib.rss_kib(self.pair.a.pid) - rss0
        got = s.received()
        # 2 GB are on offer; a slow reader gets little and nobody buffers it.
        self.assertLess(got, 200_000_000)
        self.assertLess(grew_a, 32 * 1024, "node A grew %d KiB" % grew_a)
        self.assertLess(srvlib.rss_kib(self.pair.b.pid), 96 * 1024)
        # The operator hangs up: the session ends on B too, promptly.
        t0 = time.monotonic()
        s.cancel()
        e = self.audit(self.pair.b, "session-end", device=DEV, timeout=10)
        self.assertIn("operator went away", e["reason"])
        self.assertLess(time.monotonic() - t0, 10)
        self.audit(self.pair.a, "session-forward-end", device=DEV)

    def test_not_registered_passes_through(self):
        s = self.opa.session("nosuch", "shell", 1000)
        s.wait_done(20)
        self.assertEqual(s.code, grpc.StatusCode.NOT_FOUND)
        self.assertIn("not registered", s.details)

    def test_cli_on_a(self):
        r = subprocess.run([CFG["cli"], "-s", self.pair.a.sock, "session", DEV, "--shell"],
                           input=b"echo forwarded-$((6*7))\n", capture_output=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"forwarded-42", r.stdout)

    def test_kill9_node_b(self):
        self._may_fail = True
        s = self.shell_on_a()
        self.assertEqual(sh_run(s, "echo alive"), b"alive\n")
        t0 = time.monotonic()
        os.kill(self.pair.b.pid, signal.SIGKILL)
        s.wait_done(10)
        took = time.monotonic() - t0
        self.assertLess(took, 5)
        self.assertEqual(s.code, grpc.StatusCode.UNAVAILABLE)
        self.assertRegex(s.details, r"node node-b \(127\.0\.0\.1:\d+\) connection lost")
        self.assertIsNotNone(s.ended)
        self.assertEqual(s.ended.reason, s.details)
        # Node A goes on: its own API works, a new session is refused clearly.
        self.assertTrue(self.pair.a.alive())
        self.assertEqual(self.opa.list_devices(), [])
        s2 = self.opa.session(DEV, "shell", 1000)
        s2.wait_done(20)
        self.assertEqual(s2.code, grpc.StatusCode.UNAVAILABLE)
        self.assertIn("node 127.0.0.1:%d" % self.pair.port_b, s2.details)


class NetconfForwardTest(Base):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not srvlib.Netconfd.available():
            raise unittest.SkipTest("yuma123 netconfd not installed")
        cls.ncdir = tempfile.mkdtemp(prefix="ncgrpc-fwd-netconfd-")
        os.chmod(cls.ncdir, 0o755)
        cls.netconfd = srvlib.Netconfd(cls.ncdir).start()
        cls.agent_extra = ('netconf-command "%s";' % cls.netconfd.command(),
                           'shell "/bin/sh";')

    @classmethod
    def tearDownClass(cls):
        cls.netconfd.stop()
        shutil.rmtree(cls.ncdir, ignore_errors=True)
        super().tearDownClass()

    def test_get_config_and_close(self):
        s = self.opa.session(DEV, "netconf", 15000)
        st = s.wait_started(20)
        self.assertEqual(st.type, opclient.pb.NETCONF)
        hello = s.read_until(EOM, 20)
        self.assertIn(b"urn:ietf:params:netconf:base:1.0", hello)
        s.send(CLIENT_HELLO)
        time.sleep(0.5)
        s.send(rpc(1, "<get-config><source><running/></source></get-config>"))
        reply = s.read_until(EOM, 20)
        self.assertRegex(reply, rb'<rpc-reply message-id="1"')
        s.send(rpc(2, "<close-session/>"))
        reply = s.read_until(EOM, 20)
        self.assertIn(b"<ok/>", reply)
        s.wait_done(20)
        self.assertEqual(s.code, grpc.StatusCode.OK, s.details)
        fb = self.audit(self.pair.b, "netconf-rpc", operation="get-config")
        self.assertIsNotNone(fb)


class NodePortTest(Base):
    """The inter-node port takes nodes of the cluster only."""

    def node_call(self, cert=None, key=None, ca=None):
        with open(ca or self.pki.ca, "rb") as f:
            root = f.read()
        chain = pkey = None
        if cert:
            with open(cert, "rb") as f:
                chain = f.read()
            with open(key, "rb") as f:
                pkey = f.read()
        creds = grpc.ssl_channel_credentials(root, pkey, chain)
        ch = grpc.secure_channel("127.0.0.1:%d" % self.pair.port_b, creds)
        try:
            lst = ch.unary_unary(opclient.SVC + "ListDevices",
                                 request_serializer=lambda m: m.SerializeToString(),
                                 response_deserializer=opclient.pb.ListDevicesResponse.FromString)
            return [d.device_id for d in lst(opclient.pb.ListDevicesRequest(), timeout=5).devices]
        finally:
            ch.close()

    def assert_refused(self, why, **kw):
        mark = self.pair.b.log.mark()
        with self.assertRaises(grpc.RpcError) as cm:
            self.node_call(**kw)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.pair.b.log.wait(r"node connection from 127\.0\.0\.1:\d+ refused: .*%s" % why, 10,
                             start=mark)

    def test_good_node_cert_accepted(self):
        crt, key = self.pki.files("node-a")
        self.assertEqual(self.node_call(crt, key), [DEV])

    def test_no_client_cert_refused(self):
        self.assert_refused("client sent no certificate")

    def test_other_ca_refused(self):
        os.makedirs(os.path.join(self.tmp, "other"))
        other = clusterlib.Pki(CFG["cli"], os.path.join(self.tmp, "other")).init()
        crt, key = other.node("node-a", "127.0.0.1")
        self.assert_refused("not trusted", cert=crt, key=key)

    def test_device_cert_refused(self):
        # ncgrpcd's own self-signed certificate: serverAuth only, not ours.
        self.assert_refused("not trusted", cert=self.pair.b.cert, key=self.pair.b.key)


def main():
    ap = argparse.ArgumentParser(add_help=False)
    for k in ("ncgrpcd", "agent", "cli", "stub-dir"):
        ap.add_argument("--" + k)
    args, rest = ap.parse_known_args()
    CFG.update(ncgrpcd=args.ncgrpcd, agent=args.agent, cli=args.cli)
    if args.stub_dir:
        os.environ["NCGRPC_STUB_DIR"] = os.path.abspath(args.stub_dir)
    for k in ("ncgrpcd", "agent", "cli"):
        if not CFG[k] or not os.access(CFG[k], os.X_OK):
            sys.stderr.write("test_forward.py: --%s PATH is required\n" % k)
            return 2
    # Under AddressSanitizer freed memory waits in a quarantine (256 MB by
    # default), which the memory checks would read as buffering.
    asan = os.environ.get("ASAN_OPTIONS", "")
    if "quarantine_size_mb" not in asan:
        os.environ["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "quarantine_size_mb=4"
    # A hang shows where it is: every thread's stack, before CTest's
    # timeout kills us without a word.
    faulthandler.dump_traceback_later(150, exit=True)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    sys.exit(main())
