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
  sessions     forwarding on cluster presence (node certificates from the
               CLI, cluster-listen = cluster-address): from every node a
               shell (1 MB out, 0.5 MB in, sha256) and a NETCONF session
               (yuma123 netconfd, when installed) on a device held by each
               node, the holder auditing via node:ORIGIN; then streams
               A->C, C->A, A->B and kill -9 of B: A->C and C->A finish
               byte-exact, A->B ends with "node B (...) connection lost",
               B's devices are back within waittime + TTL + margin, and
               sessions from A and C reach them

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
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "etcd"))
sys.path.insert(0, os.path.join(HERE, "..", "server"))
sys.path.insert(0, HERE)
from test_etcd import Cluster as EtcdCluster  # noqa: E402
import clusterlib  # noqa: E402
from srvlib import Addr, Agent, Client, Ncgrpcd, free_port, registry_line, wait_until  # noqa: E402

TTL = 5        # cluster-lease-ttl of the nodes
TTL_MEMBER = 10  # the default, for the etcd member kill
WAITTIME = 2   # the devices' waittime
MARGIN = 3     # for scheduling, the etcd client's timer, and the loaded CI host
PREFIX = "/ncgrpc/"


def figure(name, value):
    print("figure %s %s" % (name, value), flush=True)


class Node(Ncgrpcd):
    def __init__(self, name, binary, workdir, etcd_eps, ttl, pki=None):
        os.makedirs(workdir)
        self.name = name
        self.mport = free_port()
        self.cport = free_port()
        self.caddr = "127.0.0.1:%d" % self.cport
        extra = ["cluster-etcd %s" % etcd_eps, "cluster-node %s" % name,
                 "cluster-address %s" % self.caddr,
                 "cluster-lease-ttl %d" % ttl,
                 "metrics-listen 127.0.0.1:%d" % self.mport]
        if pki is not None:
            # Forwarding: other nodes dial cluster-address, so it is the
            # cluster-listen address, and the certificate names it.
            extra += clusterlib.cluster_conf(pki, name, self.cport)
        super().__init__(binary, workdir, extra=extra)

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
        self.pki = None
        self.netconfd = None

    def start(self, ndev):
        self.etcd.start()
        eps = [self.etcd.client[n] for n in self.etcd.names]
        for i, name in enumerate(["A", "B", "C"]):
            # Each node talks to another member first.
            rot = eps[i:] + eps[:i]
            self.nodes[name] = Node(name, self.args.ncgrpcd,
                                    os.path.join(self.tmp, name), ",".join(rot),
                                    self.ttl, self.pki)
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

    def with_pki(self):
        """Node certificates "A", "B", "C" from the CLI, for forwarding."""
        d = os.path.join(self.tmp, "pki")
        os.makedirs(d)
        self.pki = clusterlib.Pki(self.args.cli, d).init()
        for n in "ABC":
            self.pki.node(n, "127.0.0.1")

    def fleet(self, ndev, agent_extra=('shell "/bin/sh";',)):
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
        self.agent.configure(clients, agent_extra)
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
        if self.netconfd is not None:
            self.netconfd.stop()
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
    # One bad value in etcd costs only its own device.  It used to stop the
    # whole registry from parsing: every later change was kept out, and a
    # node started then had no devices at all.
    markC = w.nodes["C"].log.mark()
    w.etcdctl("put", PREFIX + "devices/bogus", "bogus junk")
    w.nodes["C"].log.wait(r'cluster: ignoring the registry line of "bogus" in etcd', 5,
                          start=markC)
    w.cli("A", "device", "add", "newdev2")
    w.nodes["C"].log.wait(r"cluster: registry from etcd: %d devices" % (ndev + 2), 5,
                          start=markC)
    w.etcdctl("del", PREFIX + "devices/bogus")
    w.cli("A", "device", "remove", "newdev2")
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
        # Nothing is claimed without a lease (the gauge kept its last count).
        expect(w.nodes[n].metric("ncgrpcd_cluster_devices_claimed") == 0,
               "devices_claimed on %s: %s" % (n, w.nodes[n].metric(
                   "ncgrpcd_cluster_devices_claimed")))
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
    p = w.keys("presence/")
    for n in "ABC":
        per = sum(1 for v in p.values() if v == n)
        wait_until(lambda n=n, per=per:
                   w.nodes[n].metric("ncgrpcd_cluster_devices_claimed") == per, 5,
                   "devices_claimed %d on %s again" % (per, n))


# --- sessions: forwarding with cluster presence --------------------------------

SEQ_LINES = 140000  # "seq 1 140000": 1.0 MB out of the device
BLOB = b"".join((b"%06d" % i) + b"0123456789abcdef" * 31 + b"\n" for i in range(1000))  # 503 kB in
# A long-running stream: CHUNKS chunks of CHUNK lines, PAUSE s apart.
CHUNKS, CHUNK, PAUSE = 40, 4000, 0.25


def forwarding():
    """test_forward.py's helpers (grpc, opclient): only this case needs them."""
    import test_forward
    return test_forward


def held_by(w):
    """{node: [devices]} from the presence keys."""
    out = {n: [] for n in w.nodes}
    for d, n in sorted((w.keys("presence/") or {}).items()):
        out.setdefault(n, []).append(d)
    return out


def seq_bytes(first, last):
    return "".join("%d\n" % i for i in range(first, last + 1)).encode()


def stream_cmd():
    return ("i=0; while [ $i -lt %d ]; do seq $((i*%d+1)) $((i*%d+%d)); i=$((i+1)); "
            "sleep %s; done" % (CHUNKS, CHUNK, CHUNK, CHUNK, PAUSE))


def stream_bytes():
    return seq_bytes(1, CHUNKS * CHUNK)


def open_shell(tf, op, did):
    s = op.session(did, "shell", 15000)
    st = s.wait_started(20)
    expect(st.device_id == did, "started on %r, asked for %r" % (st.device_id, did))
    tf.sh_prepare(s)
    return s, st.session_id


def shell_exact(tf, op, did):
    """1 MB out and 0.5 MB in through a shell, each sha256-checked.
    Returns the session number (the holding node's)."""
    s, sid = open_shell(tf, op, did)
    want = seq_bytes(1, SEQ_LINES)
    got = tf.sh_run(s, "seq 1 %d" % SEQ_LINES, timeout=60)
    expect(len(got) == len(want) and tf.hashlib.sha256(got).digest()
           == tf.hashlib.sha256(want).digest(),
           "%s: %d bytes out, want %d, not the same" % (did, len(got), len(want)))
    s.send("sha256sum <<'EOB'\n")
    s.send(BLOB)
    s.send("EOB\n")
    m = re.search(rb"([0-9a-f]{64})  -\n", s.read_until(re.compile(rb"[0-9a-f]{64}  -\n"), 60))
    expect(m.group(1).decode() == tf.hashlib.sha256(BLOB).hexdigest(),
           "%s: the device's sha256 of the input differs" % did)
    s.send("exit\n")
    s.read_all(20)
    expect(s.code == tf.grpc.StatusCode.OK, "%s: shell ended %s %s" % (did, s.code, s.details))
    return sid


def netconf_exact(tf, op, did):
    s = op.session(did, "netconf", 15000)
    st = s.wait_started(20)
    hello = s.read_until(tf.EOM, 20)
    expect(b"urn:ietf:params:netconf:base:1.0" in hello, "%s: hello %r" % (did, hello[:200]))
    s.send(tf.CLIENT_HELLO)
    s.send(tf.rpc(1, "<get-config><source><running/></source></get-config>"))
    reply = s.read_until(tf.EOM, 20)
    expect(re.search(rb'<rpc-reply message-id="1"', reply), "%s: reply %r" % (did, reply[:300]))
    s.send(tf.rpc(2, "<close-session/>"))
    expect(b"<ok/>" in s.read_until(tf.EOM, 20), "%s: close-session" % did)
    s.wait_done(20)
    expect(s.code == tf.grpc.StatusCode.OK, "%s: netconf ended %s %s" % (did, s.code, s.details))
    return st.session_id


def audit_find(tf, srv, event, timeout=10, **match):
    deadline = time.monotonic() + timeout
    while True:
        for line in srv.audit.lines():
            f = tf.audit_fields(line)
            if f.get("event") == event and all(f.get(k) == v for k, v in match.items()):
                return f
        if time.monotonic() > deadline:
            raise AssertionError("no audit event %s %r on %s; tail:\n%s"
                                 % (event, match, srv.name, srv.audit.tail(20)))
        time.sleep(0.05)


def check_hop(tf, w, origin, holder, did, sid):
    """The holder audits the session with via node:ORIGIN when forwarded;
    the origin audits the forward to the holder's cluster-address."""
    f = audit_find(tf, w.nodes[holder], "session-start", session=str(sid), device=did)
    if origin == holder:
        expect("node:" not in f.get("via", ""), "local session with via %r" % f.get("via"))
        expect(f.get("operator-uid") == str(os.getuid()), "local uid: %r" % f)
        return
    expect(f.get("via") == "node:%s" % origin, "%s on %s: via %r, want node:%s"
           % (did, holder, f.get("via"), origin))
    expect(f.get("operator") == "uid:%d" % os.getuid(), "operator %r" % f.get("operator"))
    # Session numbers are per node: the holder's name and number together
    # make the session.
    audit_find(tf, w.nodes[origin], "session-forward-end", device=did,
               node="%s (%s)" % (holder, w.nodes[holder].caddr), **{"remote-session": str(sid)})


def every_pair(w, held, fn):
    """fn(origin, holder, device) for each node and a device held by each
    node, three at a time."""
    import concurrent.futures
    jobs = [(o, h, held[h][0]) for o in "ABC" for h in "ABC"]
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        futs = {(o, h): ex.submit(fn, o, h, d) for o, h, d in jobs}
        return {k: f.result(timeout=240) for k, f in futs.items()}


def case_sessions(w, ndev):
    tf = forwarding()
    w.with_pki()
    w.start(ndev)
    extra = ['shell "/bin/sh";']
    if tf.srvlib.Netconfd.available():
        d = os.path.join(w.tmp, "netconfd")
        os.makedirs(d)
        os.chmod(w.tmp, 0o755)
        os.chmod(d, 0o755)
        w.netconfd = tf.srvlib.Netconfd(d).start()
        extra.insert(0, 'netconf-command "%s";' % w.netconfd.command())
    else:
        print("note: yuma123 netconfd not installed: NETCONF sessions skipped")
    w.fleet(ndev, extra)
    wait_until(lambda: all_present(w, ndev), 30, "all %d devices present" % ndev)
    held = held_by(w)
    expect(all(held[n] for n in "ABC"), "every node holds a device: %r" % held)
    ops = {n: tf.opclient.OpClient(w.nodes[n].sock) for n in "ABC"}
    try:
        sessions_matrix(tf, w, ops, held)
        sessions_moved(tf, w, ops)
        sessions_failover(tf, w, ops, held, ndev)
    finally:
        for op in ops.values():
            op.close()


def sessions_matrix(tf, w, ops, held):
    # Every node to a device held by every node: shell, byte-exact.
    t0 = time.monotonic()
    sids = every_pair(w, held, lambda o, h, d: shell_exact(tf, ops[o], d))
    figure("shell_matrix_9x1.5MB_s", "%.2f" % (time.monotonic() - t0))
    for (o, h), sid in sids.items():
        check_hop(tf, w, o, h, held[h][0], sid)
    # And NETCONF.
    if w.netconfd is not None:
        sids = every_pair(w, held, lambda o, h, d: netconf_exact(tf, ops[o], d))
        for (o, h), sid in sids.items():
            check_hop(tf, w, o, h, held[h][0], sid)
            audit_find(tf, w.nodes[h], "netconf-rpc", session=str(sid), operation="get-config")
    # Session open, local against forwarded (a hint only: figures belong
    # to bench/).
    for o, h in (("A", "A"), ("A", "B")):
        t = time.monotonic()
        s = ops[o].session(held[h][0], "shell", 15000)
        s.wait_started(20)
        figure("session_open_%s_to_%s_ms" % (o, h), "%.1f" % ((time.monotonic() - t) * 1000))
        s.cancel()
        s.wait_done(20)


def solo_agent(w, name, did, secret, node):
    wd = os.path.join(w.tmp, name)
    os.makedirs(wd)
    a = Agent(w.args.agent, wd)
    a.configure([Client("m", did, secret, [Addr(w.nodes[node].port,
                                                cert_file=w.nodes[node].cert)],
                        waittime=WAITTIME)])
    return a.start()


def sessions_moved(tf, w, ops):
    """A device that left C (its connection died) and came back on A: C still
    keeps it for the broker's linger, but presence names A, so a session on C
    is forwarded there at once instead of waiting for the device on C."""
    r = w.cli("A", "device", "add", "mover")
    secret = re.search(r'secret "([^"]+)"', r.stdout).group(1)
    w.nodes["C"].log.wait(r"cluster: registry from etcd: %d devices" % (len(w.secrets) + 1), 5)
    first = solo_agent(w, "mover-1", "mover", secret, "C")
    second = None
    try:
        wait_until(lambda: (w.keys("presence/") or {}).get("mover") == "C", 15, "mover on C")
        ops["C"].wait_device("mover", 10)
        mark = w.nodes["C"].log.mark()
        first.kill()
        t_gone = time.monotonic()
        second = solo_agent(w, "mover-2", "mover", secret, "A")
        wait_until(lambda: (w.keys("presence/") or {}).get("mover") == "A", 10, "mover on A")
        # C's cache must know too before the session opens there.
        ops["A"].wait_device("mover", 10)
        time.sleep(0.2)
        in_linger = time.monotonic() - t_gone
        s = ops["C"].session("mover", "shell", 8000)
        try:
            st = s.wait_started(6)
        except TimeoutError:
            raise AssertionError("session on C for a device that moved to A %.1f s ago: not "
                                 "started within 6 s (C waits for it locally?)" % in_linger)
        except tf.opclient.OpError as e:
            raise AssertionError("session on C for a device that moved to A: %s" % e)
        lingered = not w.nodes["C"].log.find(r'"mover".*no connection left', mark)
        figure("moved_device_session_in_linger", "yes" if lingered else "no")
        tf.sh_prepare(s)
        expect(tf.sh_run(s, "echo moved-$((6*7))") == b"moved-42\n", "moved session output")
        s.send("exit\n")
        s.read_all(20)
        check_hop(tf, w, "C", "A", "mover", st.session_id)
    finally:
        first.stop()
        if second is not None:
            second.stop()


def sessions_failover(tf, w, ops, held, ndev):
    want = stream_bytes()
    for did in ("ghost", "ghost2"):  # registered, never connected
        w.cli("A", "device", "add", did)
    runs = {}
    for o, h in (("A", "C"), ("C", "A"), ("A", "B")):
        s, sid = open_shell(tf, ops[o], held[h][0])
        tok = tf.uuid.uuid4().hex[:12]
        s.send("printf '<%%s>\\n' B%s; %s; printf '\\n<%%s>\\n' E%s\n" % (tok, stream_cmd(), tok))
        runs[(o, h)] = (s, tok)
    # Flowing everywhere, then B dies in the middle of it.
    wait_until(lambda: all(s.received() > 200_000 for s, _ in runs.values()), 20,
               "the streams flowing")
    onB = list(held["B"])
    bound = WAITTIME + TTL + MARGIN
    back = []

    def poll_back():
        while time.monotonic() - t_kill < bound + 5:
            p = w.keys("presence/") or {}
            if all(p.get("dev%03d" % i) in ("A", "C") for i in range(ndev)):
                back.append(time.monotonic() - t_kill)
                return
            time.sleep(0.1)
    poller = threading.Thread(target=poll_back, daemon=True)
    t_kill = time.monotonic()
    w.nodes["B"].kill9()
    poller.start()
    # A stale presence key naming the dead node (B's keys live until its
    # lease runs out): a session fails at once and says which node.
    w.etcdctl("put", PREFIX + "presence/ghost", "B")
    g = ops["A"].session("ghost", "shell", 4000)
    g.wait_done(8)
    expect(g.code == tf.grpc.StatusCode.UNAVAILABLE and "node %s connection failed"
           % w.nodes["B"].caddr in (g.details or ""), "ghost via dead B: %s %s"
           % (g.code, g.details))
    at_kill = {k: s.received() for k, (s, _) in runs.items()}
    # The one through B ends at once, and says why.
    s, _ = runs[("A", "B")]
    s.wait_done(10)
    expect(s.code == tf.grpc.StatusCode.UNAVAILABLE, "via B: %s %s" % (s.code, s.details))
    expect(re.search(r"node B \(127\.0\.0\.1:%d\) connection lost" % w.nodes["B"].cport,
                     s.details or ""), "via B: %r" % s.details)
    expect(s.ended is not None and s.ended.reason == s.details, "via B ended: %r" % s.ended)
    figure("session_via_dead_node_ended_s", "%.2f" % (s.t_done - t_kill))
    # The others go on and finish byte-exact.
    for k in (("A", "C"), ("C", "A")):
        s, tok = runs[k]
        expect(at_kill[k] < len(want), "%s->%s had finished before the kill" % k)
        text = s.read_until(("\n<E%s>\n" % tok).encode(), CHUNKS * PAUSE + 60)
        begin = ("<B%s>\n" % tok).encode()
        got = text[text.index(begin) + len(begin):-len("\n<E%s>\n" % tok)]
        expect(len(got) == len(want) and got == want,
               "%s->%s: %d bytes, want %d, not the same" % (k[0], k[1], len(got), len(want)))
        s.send("exit\n")
        s.read_all(20)
        expect(s.code == tf.grpc.StatusCode.OK, "%s->%s: %s %s" % (k[0], k[1], s.code, s.details))
    # B's devices came back through A and C meanwhile.
    poller.join(bound + 10)
    expect(back and back[0] <= bound, "every device back through A and C: %r (bound %d s)"
           % (back, bound))
    figure("devices_back_after_node_kill_s", "%.2f" % back[0])
    figure("bound_waittime_ttl_margin_s", bound)
    # Once B's node key is gone the stale key names no address: the
    # session waits for the device here, as for a device nobody holds.
    wait_until(lambda: "B" not in w.keys("nodes/"), TTL + MARGIN, "B's node key gone")
    for did in ("ghost", "ghost2"):
        g = ops["C"].session(did, "shell", 1500)
        t = time.monotonic()
        g.wait_done(8)
        expect(g.code not in (None, tf.grpc.StatusCode.OK) and time.monotonic() - t >= 1.2,
               "%s on C: %s %s after %.1f s" % (did, g.code, g.details, time.monotonic() - t))
        if did == "ghost":
            ghost = (g.code, g.details.replace("ghost", "ID"))
    expect(ghost == (g.code, g.details.replace("ghost2", "ID")),
           "stale presence %r, nobody %r" % (ghost, (g.code, g.details)))
    w.etcdctl("del", PREFIX + "presence/ghost")
    # From every surviving node to formerly-B devices, wherever they are now.
    now = w.keys("presence/")
    for o in "AC":
        for d in onB[:3]:
            s, sid = open_shell(tf, ops[o], d)
            want1 = seq_bytes(1, 20000)
            got = tf.sh_run(s, "seq 1 20000")
            expect(got == want1, "%s->%s after the kill: %d bytes" % (o, d, len(got)))
            s.send("exit\n")
            s.read_all(20)
            expect(s.code == tf.grpc.StatusCode.OK, "%s->%s: %s" % (o, d, s.details))
            check_hop(tf, w, o, now[d], d, sid)


CASES = {"basic": case_basic, "etcd-member": case_etcd_member, "etcd-down": case_etcd_down,
         "sessions": case_sessions}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ncgrpcd", required=True)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--case", required=True, choices=sorted(CASES))
    ap.add_argument("--devices", type=int, default=30)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--stub-dir")
    args = ap.parse_args()
    if args.stub_dir:
        os.environ["NCGRPC_STUB_DIR"] = os.path.abspath(args.stub_dir)
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
