"""Network namespaces that a fault test creates for itself, and removes.

    with Topology() as t:       # three namespaces: agent, middle, server
        t.cut_primary()         # the primary path goes dark in the middle

The agent namespace A reaches the server namespace S two ways:
  primary  A a1 10.213.1.1 -- M m1 10.213.1.254 | M m3 10.213.3.254 -- S s3 10.213.3.2
           (M routes between the two veth pairs)
  backup   A a2 10.213.2.1 -- S s2 10.213.2.2 (one veth pair)
Cutting the primary path downs both of M's interfaces on it: A's and S's
ends lose carrier and every packet they send is dropped without an error
(their routes stay), as when a cable or an upstream router dies.  Nothing
here touches the host's interfaces: every veth is created inside a
namespace of ours, and deleting the namespaces removes them.
"""
import os
import subprocess

PRIMARY_SERVER = "10.213.3.2"
PRIMARY_AGENT = "10.213.1.1"
BACKUP_SERVER = "10.213.2.2"
BACKUP_AGENT = "10.213.2.1"


class Unavailable(Exception):
    """Not root, or no network namespaces here: the test is skipped."""


def _ip(*args, check=True):
    r = subprocess.run(["ip"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=10)
    if check and r.returncode != 0:
        raise RuntimeError("ip %s: %s" % (" ".join(args), r.stderr.decode(errors="replace")))
    return r


def remove_stale():
    """Deletes the namespaces of earlier runs whose process is gone (a run
    killed by a timeout cannot clean up after itself)."""
    r = _ip("netns", "list", check=False)
    for line in r.stdout.decode(errors="replace").split("\n"):
        name = line.split(" ")[0]
        if len(name) > 4 and name[:3] == "ncg" and name[3] in "AMS":
            tag = name[4:]
            pid = tag[5:] if tag.startswith("probe") else tag
            if pid.isdigit() and not os.path.exists("/proc/%s" % pid):
                _ip("netns", "del", name, check=False)


class Topology:
    def __init__(self, tag=None):
        tag = tag or str(os.getpid())
        self.A, self.M, self.S = ("ncgA" + tag, "ncgM" + tag, "ncgS" + tag)
        self._made = []

    def __enter__(self):
        self.create()
        return self

    def __exit__(self, *exc):
        self.destroy()

    @staticmethod
    def check():
        if os.geteuid() != 0:
            raise Unavailable("needs root for ip netns")
        try:
            r = _ip("netns", "list", check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise Unavailable("no ip command: %s" % e)
        if r.returncode != 0:
            raise Unavailable("ip netns unavailable: %s" % r.stderr.decode(errors="replace"))

    def create(self):
        self.check()
        for ns in (self.A, self.M, self.S):
            r = _ip("netns", "add", ns, check=False)
            if r.returncode != 0:
                self.destroy()
                raise Unavailable("ip netns add: %s" % r.stderr.decode(errors="replace"))
            self._made.append(ns)
        try:
            A, M, S = self.A, self.M, self.S
            for ns in (A, M, S):
                _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", A, "link", "add", "a1", "type", "veth", "peer", "name", "m1", "netns", M)
            _ip("-n", M, "link", "add", "m3", "type", "veth", "peer", "name", "s3", "netns", S)
            _ip("-n", A, "link", "add", "a2", "type", "veth", "peer", "name", "s2", "netns", S)
            for ns, dev, addr in ((A, "a1", PRIMARY_AGENT + "/24"), (M, "m1", "10.213.1.254/24"),
                                  (M, "m3", "10.213.3.254/24"), (S, "s3", PRIMARY_SERVER + "/24"),
                                  (A, "a2", BACKUP_AGENT + "/24"), (S, "s2", BACKUP_SERVER + "/24")):
                _ip("-n", ns, "addr", "add", addr, "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", A, "route", "add", "10.213.3.0/24", "via", "10.213.1.254")
            _ip("-n", S, "route", "add", "10.213.1.0/24", "via", "10.213.3.254")
            subprocess.run(["ip", "netns", "exec", M, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                           check=True, timeout=10)
        except Exception:
            self.destroy()
            raise

    def cut_primary(self):
        _ip("-n", self.M, "link", "set", "m1", "down")
        _ip("-n", self.M, "link", "set", "m3", "down")

    def restore_primary(self):
        _ip("-n", self.M, "link", "set", "m1", "up")
        _ip("-n", self.M, "link", "set", "m3", "up")

    def exec_prefix(self, ns):
        return ["ip", "netns", "exec", ns]

    def destroy(self):
        while self._made:
            _ip("netns", "del", self._made.pop(), check=False)
