#!/usr/bin/python3
"""An ncgrpcd cluster on etcd, on loopback (docs/cluster.md).

A 3-member etcd cluster (Debian's etcd-server, the harness of
tests/etcd/test_etcd.py), three ncgrpcd nodes A, B, C with cluster-etcd,
and one ncgrpc-agent holding DEVICES devices, each configured with all three
node addresses (its main one rotating, so the fleet spreads).  Cases:

  basic        a device added with the CLI on A is valid on C within 1 s
               and connects there; presence names the right node; etcd
               writes per device connect; "cluster status"; kill -9 of B:
               its presence keys go within TTL + margin and its devices are
               back through A and C within waittime + TTL + margin
  etcd-member  kill -9 of the etcd leader: no device is lost, no lease
  etcd-down    every etcd member stopped: the nodes log it and report
               ncgrpcd_cluster_etcd_up 0 within the TTL; etcd restarted:
               they register again and claim every device again

    test_cluster.py --ncgrpcd B --agent B --cli B --case basic [--devices N]

Figures are printed as "figure NAME VALUE" lines.  Every wait is bounded.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "etcd"))
sys.path.insert(0, os.path.join(HERE, "..", "server"))
from test_etcd import Cluster as EtcdCluster  # noqa: E402
from srvlib import Addr, Agent, Client, Ncgrpcd, free_port, registry_line, wait_until  # noqa: E402

TTL = 5        # cluster-lease-ttl of the nodes
TTL_MEMBER = 10  # the default, for the etcd member kill
WAITTIME = 2   # the devices' waittime
MARGIN = 3     # for scheduling, the etcd client's timer, and the loaded CI host
PREFIX = "/ncgrpc/"


def figure(name, value):
    print("figure %s %s" % (name, value), flush=True)


class Node(Ncgrpcd):
    def __init__(self, name, binary, workdir, etcd_eps, ttl):
        os.makedirs(workdir)
        self.name = name
        self.mport = free_port()
        self.caddr = "127.0.0.1:%d" % free_port()
        super().__init__(binary, workdir, extra=[
            "cluster-etcd %s" % etcd_eps, "cluster-node %s" % name,
            "cluster-address %s" % self.caddr,
            "cluster-lease-ttl %d" % ttl,
            "metrics-listen 127.0.0.1:%d" % self.mport])

    def metric(self, name):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.mport,
                                        timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        m = re.search(r"^%s(?:\{[^}]*\})? (\S+)$" % re.escape(name), text, re.M)
        return float(m.group(1)) if m else None

    def kill9(self):
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._out.close()
        self.proc = None


class World:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="ncgrpc-cluster-")
        self.etcd = EtcdCluster(os.path.join(self.tmp, "etcd"))
        os.makedirs(self.etcd.tmp)
        self.nodes = {}
        self.agent = None
        self.secrets = {}
        self.ttl = TTL

    def start(self, ndev):
        self.etcd.start()
        eps = [self.etcd.client[n] for n in self.etcd.names]
        for i, name in enumerate(["A", "B", "C"]):
            # Each node talks to another member first.
            rot = eps[i:] + eps[:i]
            self.nodes[name] = Node(name, self.args.ncgrpcd,
                                    os.path.join(self.tmp, name), ",".join(rot),
                                    self.ttl)
        for n in self.nodes.values():
            n.start()
        self.wait_nodes(3)
        for i in range(ndev):
            did = "dev%03d" % i
            self.secrets[did] = "secret-%d" % i
            self.etcdctl("put", PREFIX + "devices/" + did, registry_line(did, self.secrets[did]))

    def wait_nodes(self, n, timeout=15):
        wait_until(lambda: len(self.keys("nodes/")) == n, timeout, "%d nodes in etcd" % n)

    def etcdctl(self, *args, check=True):
        return self.etcd.etcdctl(*args, check=check)

    def keys(self, sub):
        """{name: value} under PREFIX + sub."""
        r = self.etcdctl("get", "--prefix", PREFIX + sub, check=False)
        if r.returncode != 0:
            return None if sub == "presence/" else {}
        lines = r.stdout.splitlines()
        return {lines[i][len(PREFIX + sub):]: lines[i + 1] for i in range(0, len(lines) - 1, 2)}

    def revision(self):
        r = self.etcdctl("endpoint", "status", "-w", "fields")
        for line in r.stdout.splitlines():
            if line.startswith('"Revision"'):
                return int(line.split(":")[1])
        raise AssertionError("no revision in %r" % r.stdout)

    def fleet(self, ndev):
        """One agent with ndev devices; device i's main node rotates."""
        names = ["A", "B", "C"]
        clients = []
        for i in range(ndev):
            did = "dev%03d" % i
            order = names[i % 3:] + names[:i % 3]
            addrs = [Addr(self.nodes[n].port, cert_file=self.nodes[n].cert) for n in order]
            clients.append(Client("c%d" % i, did, self.secrets[did], addrs, waittime=WAITTIME))
        wd = os.path.join(self.tmp, "agent")
        os.makedirs(wd, exist_ok=True)
        self.agent = Agent(self.args.agent, wd)
        self.agent.configure(clients)
        self.agent.start()

    def cli(self, node, *args, stdin=None, check=True):
        r = subprocess.run([self.args.cli, "-f", self.nodes[node].conf_path] + list(args),
                           capture_output=True, text=True, timeout=30, input=stdin)
        if check and r.returncode != 0:
            raise AssertionError("ncgrpc %s: exit %d\n%s%s" % (" ".join(args), r.returncode,
                                                                r.stdout, r.stderr))
        return r

    def stop(self):
        if self.agent is not None:
            self.agent.stop()
        bad = []
        for n in self.nodes.values():
            alive = n.proc is not None
            rc = n.stop()
            if alive and rc != 0:
                bad.append("node %s exited %r (sanitizer report in %s?)"
                           % (n.name, rc, n.stdout_path))
        self.etcd.stop()
        return bad

    def dump(self):
        for n in self.nodes.values():
            print("--- node %s log tail ---\n%s" % (n.name, n.log.tail(30)))
        if self.agent is not None:
            print("--- agent log tail ---\n%s" % self.agent.log.tail(20))


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def all_present(w, ndev, allowed=("A", "B", "C")):
    p = w.keys("presence/")
    return p is not None and len(p) == ndev and all(v in allowed for v in p.values())


def case_basic(w, ndev):
    w.start(ndev)
    rev0 = w.revision()
    w.fleet(ndev)
    t0 = time.monotonic()
    wait_until(lambda: all_present(w, ndev), 30, "all %d devices present" % ndev)
    figure("fleet_connect_s", "%.2f" % (time.monotonic() - t0))
    time.sleep(1)  # anything late would show in the revision
    writes = w.revision() - rev0
    figure("etcd_writes_per_device_connect", "%.2f" % (writes / ndev))
    expect(writes == ndev, "%d etcd writes for %d device connects" % (writes, ndev))
    # Presence names the node each device is connected to (its main node,
    # unless that node was busy checking secrets when it came).
    p = w.keys("presence/")
    held = {}
    for n in "ABC":
        r = subprocess.run([w.args.cli, "-s", w.nodes[n].sock, "devices", "--json"],
                           capture_output=True, text=True, timeout=20)
        for d in re.findall(r'"device_id": *"([^"]+)"', r.stdout):
            expect(d not in held, "%s connected to %s and %s" % (d, held.get(d), n))
            held[d] = n
    expect(held == p, "presence %r\nconnections %r" % (p, held))
    onmain = sum(1 for i in range(ndev) if p["dev%03d" % i] == "ABC"[i % 3])
    figure("devices_on_main_node", "%d/%d" % (onmain, ndev))
    per = {n: sum(1 for v in p.values() if v == n) for n in "ABC"}
    for n in "ABC":
        expect(w.nodes[n].metric("ncgrpcd_cluster_devices_claimed") == per[n],
               "node %s claims %s, presence says %d"
               % (n, w.nodes[n].metric("ncgrpcd_cluster_devices_claimed"), per[n]))
        expect(w.nodes[n].metric("ncgrpcd_cluster_etcd_up") == 1, "etcd_up on %s" % n)
        expect((w.nodes[n].metric("ncgrpcd_etcd_request_seconds_count") or 0) > 0
               or w.nodes[n].metric("ncgrpcd_etcd_request_seconds_bucket") is not None,
               "etcd latency metric on %s" % n)

    # A device added with the CLI on A: valid on C within 1 s, connects there.
    markC = w.nodes["C"].log.mark()
    r = w.cli("A", "device", "add", "newdev")
    t_add = time.monotonic()
    m = re.search(r'secret "([^"]+)"', r.stdout)
    expect(m is not None, "no secret in: %s" % r.stdout)
    expect("registry in etcd" in r.stderr, "cli: %s" % r.stderr)
    w.nodes["C"].log.wait(r"cluster: registry from etcd: %d devices" % (ndev + 1), 5,
                          start=markC)
    dt = time.monotonic() - t_add
    figure("add_on_A_valid_on_C_s", "%.3f" % dt)
    expect(dt < 1.0, "the add took %.3f s to reach C" % dt)
    again = w.cli("A", "device", "add", "newdev", check=False)
    expect(again.returncode != 0 and "already exists" in again.stderr,
           "second add: %d %s" % (again.returncode, again.stderr))
    wd = os.path.join(w.tmp, "agent-new")
    os.makedirs(wd)
    solo = Agent(w.args.agent, wd)
    solo.configure([Client("n", "newdev", m.group(1),
                           [Addr(w.nodes["C"].port, cert_file=w.nodes["C"].cert)],
                           waittime=WAITTIME)])
    solo.start()
    try:
        wait_until(lambda: (w.keys("presence/") or {}).get("newdev") == "C", 15,
                   "newdev present on C")
        w.nodes["C"].audit.wait(r"newdev", 5) if os.path.exists(w.nodes["C"].audit.path) else None
    finally:
        solo.stop()
    wait_until(lambda: "newdev" not in (w.keys("presence/") or {}), 30,
               "newdev's presence gone after it left")
    w.cli("B", "device", "remove", "newdev")
    expect("newdev" not in w.keys("devices/"), "removed")
    bad = w.cli("B", "device", "remove", "newdev", check=False)
    expect(bad.returncode != 0 and "no device" in bad.stderr, "remove twice: %s" % bad.stderr)

    # cluster status
    st = w.cli("B", "cluster", "status").stdout
    print(st)
    for n in "ABC":
        expect(re.search(r"^%s\s+%s\s+alive\s+%d$" % (n, re.escape(w.nodes[n].caddr), per[n]),
                         st, re.M), "status line of %s in:\n%s" % (n, st))
    expect("3 of 3 members healthy" in st, "etcd health in status")
    expect(len(re.findall(r" healthy  (leader|follower)", st)) == 3, "members in status")

    # kill -9 of B.
    onB = [d for d, v in w.keys("presence/").items() if v == "B"]
    expect(len(onB) == per["B"] and onB, "devices on B: %r" % onB)
    w.nodes["B"].kill9()
    t_kill = time.monotonic()
    wait_until(lambda: "B" not in w.keys("nodes/"), TTL + MARGIN, "B's node key gone")
    wait_until(lambda: all_present(w, ndev, ("A", "C")), WAITTIME + TTL + MARGIN,
               "every device back through A and C")
    back = time.monotonic() - t_kill
    figure("devices_back_after_node_kill_s", "%.2f" % back)
    figure("bound_waittime_ttl_margin_s", WAITTIME + TTL + MARGIN)
    st = w.cli("A", "cluster", "status").stdout
    expect(re.search(r"^B\s", st, re.M) is None, "B still listed:\n%s" % st)
    # Sessions-level check: A and C list the devices as connected.
    total = 0
    for n in "AC":
        r = w.cli(n, "-s", w.nodes[n].sock, "devices", check=False) if False else \
            subprocess.run([w.args.cli, "-s", w.nodes[n].sock, "devices", "--json"],
                           capture_output=True, text=True, timeout=20)
        total += r.stdout.count('"device_id"')
    expect(total == ndev, "A and C hold %d devices, want %d" % (total, ndev))


def case_etcd_member(w, ndev):
    # The default TTL: a leader election (1 s here) and the client's
    # failover fit well within it; with 5 s a keep-alive may miss it
    # (docs/cluster.md, failure modes).
    w.ttl = TTL_MEMBER
    w.start(ndev)
    w.fleet(ndev)
    wait_until(lambda: all_present(w, ndev), 30, "all %d devices present" % ndev)
    marks = {n: w.nodes[n].log.mark() for n in "ABC"}
    leader = w.etcd.leader()
    w.etcd.kill(leader)
    t_kill = time.monotonic()
    samples = 0
    while time.monotonic() - t_kill < 2 * w.ttl + MARGIN:
        p = w.keys("presence/")
        if p is not None:
            samples += 1
            expect(len(p) == ndev, "%d devices present %.1f s after killing etcd member %s"
                   % (len(p), time.monotonic() - t_kill, leader))
        time.sleep(0.3)
    expect(samples >= 5, "only %d presence samples" % samples)
    for n in "ABC":
        lost = w.nodes[n].log.find(r"lost the etcd lease", marks[n])
        expect(not lost, "node %s lost its lease: %r" % (n, lost))
        expect(w.nodes[n].metric("ncgrpcd_cluster_etcd_up") == 1, "etcd_up on %s" % n)
    expect(len(w.keys("nodes/")) == 3, "3 nodes after the member kill")
    # A device added now is still valid everywhere.
    w.cli("A", "device", "add", "late")
    w.nodes["B"].log.wait(r"cluster: registry from etcd: %d devices" % (ndev + 1), 5)
    figure("devices_lost_after_etcd_member_kill", 0)


def case_etcd_down(w, ndev):
    w.start(ndev)
    w.fleet(ndev)
    wait_until(lambda: all_present(w, ndev), 30, "all %d devices present" % ndev)
    marks = {n: w.nodes[n].log.mark() for n in "ABC"}
    w.etcd.stop()
    t_stop = time.monotonic()
    for n in "ABC":
        w.nodes[n].log.wait(r"lost the etcd lease .*no longer claims", TTL + MARGIN,
                            start=marks[n])
    figure("etcd_loss_noticed_s", "%.2f" % (time.monotonic() - t_stop))
    for n in "ABC":
        expect(w.nodes[n].metric("ncgrpcd_cluster_etcd_up") == 0, "etcd_up 0 on %s" % n)
        expect((w.nodes[n].metric("ncgrpcd_etcd_errors_total") or 0) >= 0, "errors metric")
    # The devices stay connected meanwhile.
    time.sleep(2)
    held = 0
    for n in "ABC":
        r = subprocess.run([w.args.cli, "-s", w.nodes[n].sock, "devices", "--json"],
                           capture_output=True, text=True, timeout=20)
        held += r.stdout.count('"device_id"')
    expect(held == ndev, "devices still connected while etcd is down: %d" % held)
    marks = {n: w.nodes[n].log.mark() for n in "ABC"}
    w.etcd.start()
    t_back = time.monotonic()
    for n in "ABC":
        w.nodes[n].log.wait(r"etcd is back: registered again", 30, start=marks[n])
    wait_until(lambda: all_present(w, ndev) and len(w.keys("nodes/")) == 3, 2 * TTL + MARGIN,
               "every device claimed again")
    figure("reclaimed_after_etcd_back_s", "%.2f" % (time.monotonic() - t_back))
    # They stay claimed once the old leases run out.
    time.sleep(TTL + 1)
    expect(all_present(w, ndev), "presence after the old leases expired")
    for n in "ABC":
        wait_until(lambda n=n: w.nodes[n].metric("ncgrpcd_cluster_etcd_up") == 1, 5,
                   "etcd_up 1 on %s" % n)


CASES = {"basic": case_basic, "etcd-member": case_etcd_member, "etcd-down": case_etcd_down}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ncgrpcd", required=True)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--case", required=True, choices=sorted(CASES))
    ap.add_argument("--devices", type=int, default=30)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    w = World(args)
    ok = False
    try:
        CASES[args.case](w, args.devices)
        ok = True
    finally:
        if not ok:
            w.dump()
        bad = w.stop()
        if ok and bad:
            ok = False
            print("\n".join(bad))
        if ok and not args.keep:
            shutil.rmtree(w.tmp, ignore_errors=True)
        else:
            print("work directory kept: %s" % w.tmp)
    if not ok:
        sys.exit(1)
    print("ok: %s" % args.case)


if __name__ == "__main__":
    main()
