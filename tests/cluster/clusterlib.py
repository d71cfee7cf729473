"""Two ncgrpcd nodes joined for node-to-node forwarding, for
tests/cluster/test_forward.py and bench/bench_forward.py.

    pki = Pki(cli, workdir)          # ncgrpc cluster ca init / node-cert
    pair = Pair(ncgrpcd, agent, workdir, pki).start()
    pair.a, pair.b                   # srvlib.Ncgrpcd: A forwards to B
    pair.agent                       # ncgrpc-agent of device "dev1" on B

Node A has cluster-static-peer pointing at B's cluster-listen port, so a
session opened on A for a device not connected to A is opened on B.
Everything is on loopback; every wait is bounded.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "server"))
import srvlib  # noqa: E402

DEVICE = "dev1"
SECRET = "fwd-secret-1"


class Pki:
    """The cluster CA and node certificates, made with the ncgrpc CLI."""

    def __init__(self, cli, workdir):
        self.cli = cli
        self.dir = workdir
        self.ca_dir = os.path.join(workdir, "ca")

    def run(self, *args):
        return subprocess.run([self.cli] + list(args), capture_output=True, text=True,
                              timeout=30)

    def init(self):
        r = self.run("cluster", "ca", "init", self.ca_dir)
        if r.returncode != 0:
            raise RuntimeError("ca init failed: %s" % r.stderr)
        return self

    def node(self, name, *addresses):
        args = ["cluster", "node-cert", "--ca", self.ca_dir, "--out", self.dir, name]
        for a in addresses:
            args += ["--address", a]
        r = self.run(*args)
        if r.returncode != 0:
            raise RuntimeError("node-cert failed: %s" % r.stderr)
        return self.files(name)

    def files(self, name):
        return (os.path.join(self.dir, name + ".crt"), os.path.join(self.dir, name + ".key"))

    @property
    def ca(self):
        return os.path.join(self.ca_dir, "ca.crt")


def cluster_conf(pki, name, listen_port, peer_port=None):
    crt, key = pki.files(name)
    lines = ["cluster-listen 127.0.0.1:%d" % listen_port, "cluster-ca %s" % pki.ca,
             "cluster-cert %s" % crt, "cluster-key %s" % key]
    if peer_port is not None:
        lines.append("cluster-static-peer 127.0.0.1:%d" % peer_port)
    return lines


class Pair:
    def __init__(self, ncgrpcd, agent, workdir, pki, agent_extra=('shell "/bin/sh";',)):
        self.workdir = workdir
        self.pki = pki
        self.port_a = srvlib.free_port()
        self.port_b = srvlib.free_port()
        for n in ("node-a", "node-b"):
            if not os.path.exists(pki.files(n)[0]):
                pki.node(n, "127.0.0.1")
        self.a = srvlib.Ncgrpcd(ncgrpcd, self._dir("a"),
                                extra=cluster_conf(pki, "node-a", self.port_a, self.port_b))
        self.b = srvlib.Ncgrpcd(ncgrpcd, self._dir("b"),
                                extra=cluster_conf(pki, "node-b", self.port_b))
        self.b.add_device(DEVICE, SECRET)
        self.a.write_registry()
        self.agent = srvlib.Agent(agent, self._dir("agent"))
        self.agent.configure([srvlib.Client("c0", DEVICE, SECRET, [self.b.addr()],
                                            waittime=1)], list(agent_extra))

    def _dir(self, name):
        d = os.path.join(self.workdir, name)
        os.makedirs(d, exist_ok=True)
        return d

    def start(self):
        self.b.start()
        self.a.start()
        self.agent.start()
        return self

    def stop(self):
        self.agent.stop()
        ra = self.a.stop()
        rb = self.b.stop()
        return ra, rb
