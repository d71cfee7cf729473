#!/usr/bin/python3
"""How ncgrpc-agent cuts a shell's output into CommandGet messages.

    bench/bench_chunks.py AGENT [AGENT ...]

For each agent binary: a grpcio NMS (tests/agent/nms.py) opens a shell
session, runs `head -c 20000000 /dev/zero | tr '\\0' a`, and counts the
NcgrpcCommandGetRequest messages that carry it.  A receiver that pays per
message (Juniper's sample server pays a Python call and a log line for each)
runs faster with fewer, larger messages.  Loopback only.
"""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
for d in ("agent", "interop"):
    sys.path.insert(0, os.path.join(HERE, "..", "tests", d))
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import agentlib  # noqa: E402
from nms import NMS  # noqa: E402

SIZE = 20 * 1000 * 1000


def measure(agent_bin, certs, stubs):
    def text(name):
        with open(os.path.join(certs, name)) as f:
            return f.read()

    nms = NMS(text("server.pem"), text("server.key"), {"b1": "bench-secret"},
              stub_dir=stubs).start()
    work = tempfile.mkdtemp(prefix="ncgrpc-bench-chunks-")
    os.chmod(work, 0o755)
    agent = agentlib.Agent(agent_bin, work)
    try:
        agent.configure([agentlib.Client("c0", "b1", "bench-secret",
                                         [agentlib.Addr(nms.port, cert_pem=text("ca.pem"))],
                                         waittime=1)], ['shell "/bin/sh";'])
        agent.start()
        sess = nms.open_session("b1", "csh", 15)
        agentlib.sh_prepare(sess)
        m0, r0 = sess.messages, sess.received
        sess.send_csh("head -c %d /dev/zero | tr '\\0' a; echo; echo END" % SIZE)
        sess.read_until("END\n", 120)
        return sess.messages - m0, sess.received - r0
    finally:
        agent.stop()
        nms.stop()
        shutil.rmtree(work, ignore_errors=True)


def main():
    if len(sys.argv) < 2:
        sys.stderr.write(__doc__)
        return 64
    certs = tempfile.mkdtemp(prefix="ncgrpc-bench-certs-")
    stubs = tempfile.mkdtemp(prefix="ncgrpc-bench-stubs-")
    try:
        subprocess.run([sys.executable, os.path.join(HERE, "..", "tests", "interop",
                                                     "mkcerts.py"), certs],
                       check=True, stdout=subprocess.DEVNULL)
        for agent_bin in sys.argv[1:]:
            n, b = measure(agent_bin, certs, stubs)
            print("%s: %d messages for %d bytes, %.0f bytes per message"
                  % (agent_bin, n, b, b / n))
    finally:
        shutil.rmtree(certs, ignore_errors=True)
        shutil.rmtree(stubs, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
