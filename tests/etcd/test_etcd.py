#!/usr/bin/python3
"""libncgrpc_etcd against a real 3-member etcd cluster on loopback.

Starts three etcd members (Debian's etcd-server) with data in a temporary
directory, then drives ncgrpc-etcdctl (src/etcd/etcdctl.c) and compares with
etcdctl where useful: put/get/cas/delete, a watch that sees events in order,
lease expiry and keep-alive, kill -9 of the leader while a watch and a
lease run on it, and a watch from a compacted revision (resync).

    test_etcd.py --ctl build/src/etcd/ncgrpc-etcdctl

Every wait is bounded; the whole run takes about 30 s.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class Cluster:
    def __init__(self, tmp):
        self.tmp = tmp
        ports = free_ports(6)
        self.names = ["m0", "m1", "m2"]
        self.client = {n: "127.0.0.1:%d" % ports[i] for i, n in enumerate(self.names)}
        self.peer = {n: "http://127.0.0.1:%d" % ports[3 + i] for i, n in enumerate(self.names)}
        self.procs = {}

    def start(self):
        initial = ",".join("%s=%s" % (n, self.peer[n]) for n in self.names)
        for n in self.names:
            log = open(os.path.join(self.tmp, n + ".log"), "w")
            self.procs[n] = subprocess.Popen(
                [ETCD, "--name", n, "--data-dir", os.path.join(self.tmp, n),
                 "--listen-client-urls", "http://" + self.client[n],
                 "--advertise-client-urls", "http://" + self.client[n],
                 "--listen-peer-urls", self.peer[n],
                 "--initial-advertise-peer-urls", self.peer[n],
                 "--initial-cluster", initial,
                 "--initial-cluster-token", "ncgrpc-test",
                 "--heartbeat-interval", "100", "--election-timeout", "1000",
                 "--logger", "zap"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            r = self.etcdctl("endpoint", "health", check=False)
            if r.returncode == 0:
                return
            time.sleep(0.3)
        raise SystemExit("etcd cluster not healthy in 20 s")

    def endpoints(self, first=None, alive_only=False):
        names = [n for n in self.names if not alive_only or n in self.procs]
        if first is not None:
            names.remove(first)
            names.insert(0, first)
        return ",".join(self.client[n] for n in names)

    def etcdctl(self, *args, check=True):
        return subprocess.run(
            [ETCDCTL, "--endpoints", self.endpoints(alive_only=True),
             "--dial-timeout", "2s", "--command-timeout", "5s"] + list(args),
            capture_output=True, text=True, timeout=20, check=check,
            env=dict(os.environ, ETCDCTL_API="3"))

    def leader(self):
        out = self.etcdctl("endpoint", "status", "-w", "json").stdout
        for st in json.loads(out):
            h = st["Status"]["header"]
            if st["Status"]["leader"] == h["member_id"]:
                ep = st["Endpoint"].replace("http://", "")
                for n in self.names:
                    if self.client[n] == ep:
                        return n
        raise AssertionError("no leader in " + out)

    def kill(self, n):
        p = self.procs.pop(n)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)

    def stop(self):
        for p in self.procs.values():
            p.send_signal(signal.SIGKILL)
        for p in self.procs.values():
            p.wait(timeout=10)
        self.procs = {}


class Ctl:
    def __init__(self, path, cluster):
        self.path = path
        self.cluster = cluster

    def argv(self, eps, args):
        return [self.path, "-e", eps] + [str(a) for a in args]

    def run(self, *args, eps=None, ok=True):
        eps = eps or self.cluster.endpoints()
        r = subprocess.run(self.argv(eps, args), capture_output=True,
                           text=True, timeout=30)
        if ok and r.returncode != 0:
            raise AssertionError("ncgrpc-etcdctl %s: exit %d\n%s%s" % (
                " ".join(map(str, args)), r.returncode, r.stdout, r.stderr))
        return r.stdout.splitlines()

    def spawn(self, *args, eps=None):
        eps = eps or self.cluster.endpoints()
        return subprocess.Popen(self.argv(eps, args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)


def finish(p, timeout):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError("still running after %d s:\n%s%s" % (timeout, out, err))
    return p.returncode, out.splitlines(), err


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError("timed out: " + what)


def get_keys(ctl, key, prefix=True):
    lines = ctl.run("get", key, *(["prefix"] if prefix else []))
    return [l.split()[1] for l in lines if l.startswith("kv ")]


def test_kv(c, ctl):
    rev = int(ctl.run("put", "/kv/a", "1")[0].split()[1])
    ctl.run("put", "/kv/b", "2")
    lines = ctl.run("get", "/kv/", "prefix")
    expect(lines[:2] == ["kv /kv/a 1 %d 0" % rev, "kv /kv/b 2 %d 0" % (rev + 1)],
           "get: %r" % lines)
    # The same as etcdctl says.
    peer = c.etcdctl("get", "--prefix", "/kv/").stdout.split()
    expect(peer == ["/kv/a", "1", "/kv/b", "2"], "etcdctl get: %r" % peer)
    # Compare-and-swap: create only if absent, then replace at a revision.
    expect(ctl.run("cas", "/kv/a", "x", 0) == ["cas failed mod %d" % rev], "cas absent")
    expect(ctl.run("cas", "/kv/a", "x", rev)[0].startswith("cas ok"), "cas at rev")
    expect(ctl.run("cas", "/kv/a", "y", rev)[0].startswith("cas failed"), "cas stale")
    expect(ctl.run("cas", "/kv/new", "n", 0)[0].startswith("cas ok"), "cas create")
    expect(c.etcdctl("get", "--print-value-only", "/kv/a").stdout.strip() == "x",
           "etcdctl sees the cas")
    expect(ctl.run("del", "/kv/", "prefix")[0].startswith("deleted 3 "), "delete")
    expect(get_keys(ctl, "/kv/") == [], "deleted")
    st = ctl.run("status")
    expect(sum(1 for l in st if l.startswith("member ")) == 3, "members: %r" % st)
    expect(st[-1].startswith("leader "), "status: %r" % st)


def test_watch(c, ctl):
    w = ctl.spawn("watch", "/w/", 1, 0, 5, 15)
    time.sleep(0.5)  # the watch is created at "now"
    c.etcdctl("put", "/w/1", "a")
    c.etcdctl("put", "/w/2", "b")
    c.etcdctl("del", "/w/1")
    c.etcdctl("put", "/other", "z")
    ctl.run("put", "/w/3", "c")
    ctl.run("put", "/w/2", "d")
    rc, lines, err = finish(w, 20)
    expect(rc == 0, "watch exit %d: %r %s" % (rc, lines, err))
    ev = [" ".join(l.split()[:-1]) for l in lines]
    expect(ev == ["put /w/1 a", "put /w/2 b", "delete /w/1", "put /w/3 c",
                  "put /w/2 d"], "watch events: %r" % lines)
    revs = [int(l.split()[-1]) for l in lines]
    expect(revs == sorted(set(revs)), "revisions in order: %r" % revs)


def test_lease(c, ctl):
    # Granted, key put on it, the holder exits without revoking: the key
    # goes within the TTL (2 s) plus etcd's expiry check.
    t0 = time.time()
    out = ctl.run("lease", 2, "/l/once", "v", 0)
    expect(out[0].startswith("lease ") and "put ok" in out, "lease: %r" % out)
    expect(get_keys(ctl, "/l/once", False) == ["/l/once"], "key on lease")
    wait_for(lambda: get_keys(ctl, "/l/once", False) == [], 6, "lease expiry")
    print("lease expiry: key gone %.1f s after grant" % (time.time() - t0))
    # Revoke deletes at once.
    out = ctl.run("lease", 5, "/l/rev", "v", 0, "revoke")
    expect(out[-1] == "lost 0 revoked", "revoke: %r" % out)
    expect(get_keys(ctl, "/l/rev", False) == [], "revoked key gone")


def test_leader_kill(c, ctl):
    leader = c.leader()
    eps = c.endpoints(first=leader)
    # A watch and a lease holder that both use the leader first.
    w = ctl.spawn("watch", "/k/", 1, 0, 6, 25, eps=eps)
    h = ctl.spawn("lease", 5, "/k2/held", "v", 9, eps=eps)
    time.sleep(0.7)
    for i in (1, 2, 3):
        ctl.run("put", "/k/%d" % i, "v%d" % i)
    expect(get_keys(ctl, "/k2/held", False) == ["/k2/held"], "held key")
    t_kill = time.time()
    c.kill(leader)
    # Reads go on at once through the others (retried within the call's
    # deadline), with the dead member listed first.
    expect(get_keys(ctl, "/k/") == ["/k/1", "/k/2", "/k/3"], "read after kill")
    print("leader %s killed: a read through the others in %.2f s" %
          (leader, time.time() - t_kill))
    # A write sent while the members still follow the dead leader may be
    # lost with it: the library reports such a write (its fate unknown)
    # rather than retry it, as etcd's own client does.  So wait for the
    # new leader, as a caller would, then write with the dead one first.
    def elected():
        try:
            return c.leader() != leader
        except (AssertionError, subprocess.SubprocessError, ValueError):
            return False
    wait_for(elected, 10, "a new leader")
    print("new leader %.2f s after the kill" % (time.time() - t_kill))
    for i in (4, 5, 6):
        ctl.run("put", "/k/%d" % i, "v%d" % i, eps=eps)
    print("leader %s killed: 3 puts through the others in %.2f s" %
          (leader, time.time() - t_kill))
    rc, lines, err = finish(w, 30)
    expect(rc == 0, "watch exit %d: %r %s" % (rc, lines, err))
    keys = [l.split()[1] for l in lines]
    expect(keys == ["/k/%d" % i for i in range(1, 7)],
           "watch across the kill: %r\n%s" % (lines, err))
    expect("conn down" in err, "the watch saw its connection go: %s" % err)
    # Past the TTL after the kill, the lease is still kept alive.
    wait_for(lambda: time.time() - t_kill > 6, 10, "ttl after kill")
    expect(get_keys(ctl, "/k2/held", False) == ["/k2/held"],
           "lease kept alive across the leader kill")
    rc, lines, err = finish(h, 15)
    expect(rc == 0 and lines[-1] == "held", "holder: %r %s" % (lines, err))


def test_compaction(c, ctl):
    rev = int(ctl.run("put", "/c/1", "a")[0].split()[1])
    ctl.run("put", "/c/2", "b")
    last = int(ctl.run("put", "/c/3", "c")[0].split()[1])
    c.etcdctl("compact", str(last))
    w = ctl.spawn("watch", "/c/", 1, rev + 1, 1, 15)
    time.sleep(0.7)
    ctl.run("put", "/c/4", "d")
    rc, lines, err = finish(w, 20)
    expect(rc == 0, "watch exit %d: %r %s" % (rc, lines, err))
    expect(len(lines) == 2 and lines[0].startswith("resync "), "resync: %r" % lines)
    expect(int(lines[0].split()[1]) >= last, "resync revision: %r" % lines)
    expect(lines[1].startswith("put /c/4 d "), "after resync: %r" % lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ctl", required=True)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ncgrpc-etcd-")
    c = Cluster(tmp)
    ctl = Ctl(a.ctl, c)
    t0 = time.time()
    ok = False
    try:
        c.start()
        print("cluster up in %.1f s" % (time.time() - t0))
        for t in (test_kv, test_watch, test_lease, test_leader_kill,
                  test_compaction):
            t1 = time.time()
            t(c, ctl)
            print("%s: ok (%.1f s)" % (t.__name__, time.time() - t1))
        print("bench: " + "; ".join(ctl.run("bench", 200)))
        ok = True
    finally:
        c.stop()
        if not ok:
            for n in c.names:
                p = os.path.join(tmp, n + ".log")
                if os.path.exists(p):
                    sys.stdout.write("--- %s (tail)\n" % n)
                    sys.stdout.writelines(open(p).readlines()[-15:])
        shutil.rmtree(tmp, ignore_errors=True)
    print("all etcd tests passed in %.1f s" % (time.time() - t0))


if __name__ == "__main__":
    main()
