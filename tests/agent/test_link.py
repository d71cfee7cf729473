#!/usr/bin/python3
"""ncgrpc-agent against hostile or strict servers: keepalive backoff that is
bounded and comes back down, the per-client session limit, escaping of
peer text in the log, and the warning about a readable configuration.

    test_link.py --agent PATH [--certs DIR] [--stub-dir DIR] [unittest args]

Same harness as test_agent.py (agentlib.py, the grpcio NMS of nms.py).
"""
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import os  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# grpcio must not run pthread_atfork handlers: the harness forks (subprocess)
# while its threads run, and the handler once waited forever in fork().
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import grpc  # noqa: E402
import test_agent  # noqa: E402
from agentlib import Client  # noqa: E402
from test_agent import AgentTestCase  # noqa: E402

# gRPC Core's server ping policy (docs/protocol.md), made quick: STRICT
# sends GOAWAY too_many_pings at the second PING under 10 s apart after
# the first; LAX accepts a PING every 100 ms.
STRICT = [("grpc.http2.min_ping_interval_without_data_ms", 10000),
          ("grpc.http2.max_ping_strikes", 1)]
LAX = [("grpc.http2.min_ping_interval_without_data_ms", 100),
       ("grpc.http2.max_ping_strikes", 1000)]
FAST_PINGS = ('shell "/bin/sh";', "keepalive-interval 1;", "keepalive-interval-max 2;",
              "keepalive-timeout 5;")


class LinkKeepaliveTest(AgentTestCase):
    """Finding 8: too_many_pings doubled the interval for good."""

    def test_interval_capped(self):
        nms = self.new_nms({"r": "k"})
        nms.stop()
        nms.options = STRICT
        nms.start()
        agent = self.new_agent([Client("c", "r", "k", [self.addr(nms)], waittime=2)],
                               agent_extra=FAST_PINGS)
        first = agent.wait_log(r"asked for fewer pings \(too_many_pings\); "
                               r"keepalive interval now 2 s", 20)
        # The next connection pings every 2 s, is refused again, and the
        # interval stays at keepalive-interval-max instead of doubling.
        second = agent.wait_log(r"asked for fewer pings", 30, start=first.index + 1)
        self.assertRegex(second.msg, r"stays at its maximum, 2 s", agent.log_tail())
        self.assertEqual(agent.find(r"keepalive interval now [0-9]*[13-9]\d* s"), [],
                         agent.log_tail())

    def test_interval_comes_back_down(self):
        nms = self.new_nms({"r": "k"})
        nms.stop()
        nms.options = STRICT
        nms.start()
        agent = self.new_agent([Client("c", "r", "k", [self.addr(nms)], waittime=2)],
                               agent_extra=FAST_PINGS)
        agent.wait_log(r"keepalive interval now 2 s", 20)
        # The server changes its policy (a restart with another config).
        nms.stop()
        nms.options = LAX
        nms.start()
        mark = agent.mark()
        nms.wait_waiting("r", 15)
        # Five PINGs 2 s apart are acknowledged without a complaint (10 s,
        # and slack for a loaded machine); the next connection (opened when
        # a session takes this one) goes back to the configured 1 s.
        time.sleep(14)
        sess = self.shell(nms, "r")
        agent.wait_log(r"accepted keepalive pings every 2 s; new connections ping "
                       r"every 1 s", 10, start=mark)
        sess.cancel()


class LinkSessionLimitTest(AgentTestCase):
    """Finding 9: a server that grants every Initialize got 36 shells in 4 s."""

    def grant_all(self, nms, seconds):
        """Grants every waiting Initialize for a while; returns the sessions."""
        got = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                got.append(nms.open_session("r", "csh", timeout=0.5))
            except TimeoutError:
                pass
        for s in got:
            self.addCleanup(self._end_session, s)
        return got

    def test_default_limit_16(self):
        nms = self.new_nms({"r": "k"})
        agent = self.new_agent([Client("c", "r", "k", [self.addr(nms)], waittime=2)])
        nms.wait_waiting("r", 10)
        got = self.grant_all(nms, 6)
        self.assertEqual(len(got), 16, agent.log_tail())
        agent.wait_log(r'client "c": 16 sessions, at the session limit', 5)
        # No connection waits at the limit: nothing more can be granted.
        time.sleep(1)
        self.assertEqual(nms.waiting("r"), [])
        self.assertEqual(sum(1 for _ in agent.find(r"session \d+ \(shell\) started")), 16)
        # One session ends: a connection waits again.
        mark = agent.mark()
        got[0].cancel()
        agent.wait_log(r"below the session limit again", 10, start=mark)
        nms.wait_waiting("r", 10)

    def test_configured_limit(self):
        nms = self.new_nms({"r": "k"})
        agent = self.new_agent([Client("c", "r", "k", [self.addr(nms)], waittime=2)],
                               agent_extra=('shell "/bin/sh";', "session-limit 3;"))
        nms.wait_waiting("r", 10)
        got = self.grant_all(nms, 4)
        self.assertEqual(len(got), 3, agent.log_tail())
        agent.wait_log(r'client "c": 3 sessions, at the session limit', 5)


class LinkLogEscapeTest(AgentTestCase):
    """Finding 11: the server's grpc-message was logged raw."""

    def test_grpc_message_escaped(self):
        nms = self.new_nms({"r": "k"})
        forged = "2026-01-01T00:00:00.000Z ncgrpc-agent[1] info: forged"
        nms.init_abort = (grpc.StatusCode.UNAUTHENTICATED,
                          "no\n%s\x1b[2J\x1b]0;title\x07" % forged)
        agent = self.new_agent([Client("c", "r", "k", [self.addr(nms)], waittime=2)])
        hit = agent.wait_log(r"authentication failed at ", 15)
        self.assertIn("no\\x0a" + forged + "\\x1b[2J\\x1b]0;title\\x07", hit.msg)
        with open(agent.log_path, "rb") as f:
            raw = f.read()
        self.assertNotIn(b"\x1b", raw)
        self.assertNotIn(b"\x07", raw)
        self.assertFalse(any(line.startswith(forged.encode()) for line in raw.split(b"\n")))


class LinkConfigModeTest(AgentTestCase):
    """Finding 12: no warning about a configuration others can read."""

    WARN = r"holds secrets but is readable by others \(mode 0644\); chmod 600 it"

    def test_readable_config_warned(self):
        nms = self.new_nms({"r": "k"})
        agent = self.new_agent([Client("c", "r", "k", [self.addr(nms)], waittime=2)],
                               start=False)
        os.chmod(agent.conf_path, 0o644)
        agent.start()
        agent.wait_log(self.WARN, 5)
        nms.wait_waiting("r", 10)

    def test_private_config_not_warned(self):
        nms = self.new_nms({"r": "k"})
        agent = self.new_agent([Client("c", "r", "k", [self.addr(nms)], waittime=2)])
        nms.wait_waiting("r", 10)
        self.assertEqual(agent.find(r"holds secrets"), [])


def main():
    import argparse
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--agent")
    p.add_argument("--certs")
    p.add_argument("--stub-dir")
    args, rest = p.parse_known_args()
    cfg = test_agent.CFG
    if args.agent:
        cfg["agent"] = args.agent
    if args.certs:
        cfg["certs"] = args.certs
    if args.stub_dir:
        cfg["stub_dir"] = args.stub_dir
    if not cfg["agent"] or not cfg["certs"]:
        sys.stderr.write("test_link.py: need --agent PATH and --certs DIR\n")
        return 64
    prog = unittest.main(module=__name__, argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
