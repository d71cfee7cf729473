#!/usr/bin/python3
"""Fault tests in network namespaces the test creates (tests/fault/netns.py).

    test_fault.py --ncgrpcd PATH --agent PATH --stub-dir DIR [unittest args]

LinkCutTest: ncgrpcd runs in one namespace, ncgrpc-agent in another; the
agent's primary path to the server goes dark (no error, no RST: packets
vanish), once on an idle connection and once during a busy shell session.
Both sides must notice within the configured dead-peer-timeout (BOUND,
5 s here so that the test is quick) plus a margin, the device's shell
must be gone, the operator must get a reason, and the agent must fail over
to its backup address, where sessions work.

Exits with 77 (CTest SKIP_RETURN_CODE) when not root or when network
namespaces are unavailable.  $NCGRPC_FAULT_BOUND overrides BOUND (to
measure the default of 30 s, say).  $NCGRPC_FAULT_LEGACY=1 leaves
dead-peer-timeout out of both configurations, to run the test against
builds that predate it (it then fails: detection took minutes).
"""
import sys

sys.dont_write_bytecode = True

import argparse  # noqa: E402
import calendar  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "server"))
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import netns  # noqa: E402
import srvlib  # noqa: E402
from srvlib import Addr, Client, descendants, wait_until  # noqa: E402

CFG = {"ncgrpcd": None, "agent": None}
SKIP = 77
BOUND = int(os.environ.get("NCGRPC_FAULT_BOUND", "5"))
LEGACY = os.environ.get("NCGRPC_FAULT_LEGACY") == "1"
# Timer granularity, a probe interval (BOUND/6, at least 1 s) and log
# latency on a loaded 2-core machine.
MARGIN = 3.0
TS_RX = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z ")


def log_time(line):
    m = TS_RX.match(line)
    if not m:
        raise ValueError("no timestamp in %r" % line)
    return calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) + \
        int(m.group(2)) / 1000.0


class NsNcgrpcd(srvlib.Ncgrpcd):
    def __init__(self, ns, *a, **kw):
        super().__init__(*a, **kw)
        self.ns = ns

    def start(self, debug=True, timeout=20):
        self.write_conf()
        if not os.path.exists(self.devices_path):
            self.write_registry()
        argv = ["ip", "netns", "exec", self.ns, self.binary, "-f", self.conf_path]
        if debug:
            argv.append("-d")
        self._out = open(self.stdout_path, "ab")
        self.proc = subprocess.Popen(srvlib.no_orphan(argv), stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=subprocess.STDOUT,
                                     close_fds=True)
        self.pid = self.proc.pid
        self.log.wait(r"ncgrpcd \S+ started", timeout, alive=self.alive)
        wait_until(lambda: os.path.exists(self.sock), timeout, "operator socket")
        return self


class NsAgent(srvlib.Agent):
    def __init__(self, ns, *a, **kw):
        super().__init__(*a, **kw)
        self.ns = ns

    def start(self, debug=False):
        argv = ["ip", "netns", "exec", self.ns, self.binary, "-f", self.conf_path]
        self._out = open(self.stdout_path, "ab")
        self.proc = subprocess.Popen(srvlib.no_orphan(argv), stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=subprocess.STDOUT,
                                     close_fds=True)
        self.pid = self.proc.pid
        self.log.wait(r"ncgrpc-agent \S+ starting", 10, alive=self.alive)
        return self


class LinkCutTest(unittest.TestCase):
    def setUp(self):
        from opclient import OpClient
        self.tmp = tempfile.mkdtemp(prefix="ncgrpc-fault-")
        os.chmod(self.tmp, 0o755)
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.topo = netns.Topology()
        self.topo.create()
        self.addCleanup(self.topo.destroy)  # runs last: processes stop first
        sdir = os.path.join(self.tmp, "srv")
        os.makedirs(sdir)
        port = 4430 + os.getpid() % 1000
        self.srv = NsNcgrpcd(self.topo.S, CFG["ncgrpcd"], sdir, port=port,
                             listen=["%s:%d" % (netns.PRIMARY_SERVER, port),
                                     "%s:%d" % (netns.BACKUP_SERVER, port)],
                             extra=["name %s" % netns.PRIMARY_SERVER,
                                    "name %s" % netns.BACKUP_SERVER,
                                    ] + ([] if LEGACY else ["dead-peer-timeout %d" % BOUND]))
        self.srv.add_device("r1", "s3cret")
        self.srv.start()
        self.addCleanup(self.srv.stop)
        adir = os.path.join(self.tmp, "agent")
        os.makedirs(adir)
        self.agent = NsAgent(self.topo.A, CFG["agent"], adir)
        self.agent.configure(
            [Client("c", "r1", "s3cret",
                    [Addr(port, netns.PRIMARY_SERVER, cert_file=self.srv.cert),
                     Addr(port, netns.BACKUP_SERVER, cert_file=self.srv.cert)],
                    waittime=2)],
            agent_extra=('shell "/bin/sh";',) + (() if LEGACY else
                                                 ("dead-peer-timeout %d;" % BOUND,)))
        self.agent.start()
        self.addCleanup(self.agent.stop)
        self.op = OpClient(self.srv.sock)
        self.addCleanup(self.op.close)
        d = self.op.wait_device("r1", 20)
        self.assertTrue(d.peer.startswith(netns.PRIMARY_AGENT + ":"), d.peer)

    def report(self, what, seconds):
        sys.stderr.write("\n    %s: %.1f s (bound %d s)\n" % (what, seconds, BOUND))

    def failover(self, t_cut):
        """The agent reaches the backup address; a session works there."""
        hit = self.agent.log.wait(r'client "c": connected to %s:' % re.escape(
            netns.BACKUP_SERVER), 3 * BOUND + 15)
        self.report("agent connected to the backup address after the cut",
                    log_time(hit) - t_cut)
        sess = self.op.session("r1", "shell", wait_ms=10000)
        sess.wait_started(15)
        sess.send("echo fail''over-ok\n")
        sess.read_until(b"failover-ok", 15)
        sess.cancel()
        d = self.op.device("r1")
        self.assertTrue(d.peer.startswith(netns.BACKUP_AGENT + ":"), d.peer)

    def test_idle_link_cut(self):
        amark, smark = self.agent.log.mark(), self.srv.log.mark()
        time.sleep(1)
        t_cut = time.time()
        self.topo.cut_primary()
        limit = BOUND + MARGIN
        a = self.agent.log.wait(r'client "c": disconnected from %s:\d+: ' % re.escape(
            netns.PRIMARY_SERVER), limit + 5, start=amark)
        s = self.srv.log.wait(r"device connection .* closed: .*%s:\d+" % re.escape(
            netns.PRIMARY_AGENT), limit + 5, start=smark)
        ta, ts = log_time(a) - t_cut, log_time(s) - t_cut
        self.report("idle: agent noticed", ta)
        self.report("idle: ncgrpcd noticed", ts)
        self.assertLessEqual(ta, limit, a)
        self.assertLessEqual(ts, limit, s)
        self.failover(t_cut)

    def test_busy_session_link_cut(self):
        sess = self.op.session("r1", "shell")
        sess.wait_started(15)
        sess.send("stty -echo; echo sta''rted\n")
        sess.read_until(b"started", 15)
        shells = [p for p in descendants(self.agent.pid) if srvlib.comm(p) == "sh"]
        self.assertTrue(shells, "no shell under the agent")
        # Output streams without a pause: data is always in flight.
        sess.send("while :; do echo tick-tick-tick-tick-tick-tick; sleep 0.05; done\n")
        sess.read_until(b"tick", 15)
        amark, smark = self.agent.log.mark(), self.srv.log.mark()
        t_cut = time.time()
        self.topo.cut_primary()
        limit = BOUND + MARGIN
        a = self.agent.log.wait(r'client "c": session 1 \(shell\) ended', limit + 5,
                                start=amark)
        s = self.srv.log.wait(r'session \S+ \(shell\) on "r1" ended: ', limit + 5, start=smark)
        sess.wait_done(limit + 5)
        ta, ts = log_time(a) - t_cut, log_time(s) - t_cut
        self.report("busy: agent ended the session", ta)
        self.report("busy: ncgrpcd ended the session", ts)
        self.assertLessEqual(ta, limit, a)
        self.assertLessEqual(ts, limit, s)
        # The operator is told why.
        reason = sess.ended.reason if sess.ended is not None else sess.details
        self.assertTrue(reason, (sess.code, sess.details))
        sys.stderr.write("    operator's reason: %r (status %s)\n" % (reason, sess.code))
        # The device's shell is gone.
        wait_until(lambda: not any(srvlib.pid_alive(p) for p in shells), 5,
                   "the session's shell to exit")
        self.failover(t_cut)


def main():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--ncgrpcd", required=True)
    p.add_argument("--agent", required=True)
    p.add_argument("--stub-dir")
    args, rest = p.parse_known_args()
    CFG["ncgrpcd"], CFG["agent"] = args.ncgrpcd, args.agent
    if args.stub_dir:
        os.environ["NCGRPC_STUB_DIR"] = args.stub_dir
    try:
        netns.Topology.check()
        netns.remove_stale()
        probe = netns.Topology("probe%d" % os.getpid())
        probe.create()
        probe.destroy()
    except netns.Unavailable as e:
        sys.stderr.write("test_fault.py: skipped: %s\n" % e)
        return SKIP
    prog = unittest.main(module=__name__, argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
