#!/usr/bin/python3
"""The SSH front door against `ncgrpc session`, in one run.

    bench_sshd.py --ncgrpcd PATH --agent PATH --sshd PATH --cli PATH
                  [--idle 1000] [--rounds 100] [--mb 50] [--bulk-rounds 3]

One ncgrpcd with --idle idle devices (ncgrpc-agent processes, 500 clients
each, long-polling) plus router-17, an agent whose NETCONF backend is
yuma123's netconfd; ncgrpc-sshd in front.  Measured, alternating the two
paths round by round so both see the same machine:

  - hello: time from starting the client to the device's whole <hello> at
    the client: OpenSSH `ssh -s netconf` (new SSH connection, key
    exchange, publickey, channel, operator call) against `ncgrpc session
    router-17 --netconf` (operator socket, operator call); median and p99;
  - bulk: a <get-config> whose reply is --mb MB: MB/s of the whole
    session through ncclient (SSH front door), through OpenSSH's ssh (SSH
    front door, C client) and through `ncgrpc session` (baseline), and
    read locally from yuma123's netconf-subsystem on the device (what
    the agent itself runs: the ceiling of every remote path); --bulk-rounds
    of each, the paths alternating, best and median, over the whole
    session and over the reply only (its first byte to its last: the
    local read has no process start, hello or hello wait of the agent's
    to count).  The last line is ncgrpc session's reply rate over the
    local one.

Not part of ctest.  Figures go to BENCHMARKS.md.
"""
import argparse
import os
import resource
import select
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "server"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "sshd"))
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import srvlib  # noqa: E402
from opclient import OpClient  # noqa: E402
from srvlib import Addr, Agent, Client  # noqa: E402
import test_sshd  # noqa: E402
from test_sshd import CFG, Env, HELLO_10, NACM_NS, rpc  # noqa: E402

EOM = b"]]>]]>"


def pct(xs, p):
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


def time_to_hello(argv):
    """Starts argv, returns seconds until the first ]]>]]>, then closes."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    buf = b""
    fd = p.stdout.fileno()
    while EOM not in buf:
        r, _, _ = select.select([fd], [], [], 30)
        if not r:
            p.kill()
            raise RuntimeError("no hello within 30 s from %s" % argv[0])
        chunk = os.read(fd, 65536)
        if not chunk:
            raise RuntimeError("%s ended before the hello" % argv[0])
        buf += chunk
    dt = time.monotonic() - t0
    p.stdin.write((HELLO_10 + rpc(1, "<close-session/>")).encode())
    p.stdin.close()
    p.stdout.read()
    p.wait(30)
    return dt


def bulk_pipe(argv):
    """Runs a client with the hello, the <get-config> and <close-session>
    on its input.  Returns the bytes of output, the seconds of the whole
    run, and the seconds from the reply's first byte (the first after the
    hello) to the end of the output."""
    data = (HELLO_10 + rpc(1, "<get-config><source><running/></source></get-config>")
            + rpc(2, "<close-session/>")).encode()
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdin.write(data)
    p.stdin.close()
    fd, tail, hello, n, t_reply = p.stdout.fileno(), b"", False, 0, None
    while True:
        r, _, _ = select.select([fd], [], [], 600)
        if not r:
            p.kill()
            raise RuntimeError("%s: no output within 600 s" % argv[0])
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        n += len(chunk)
        if hello and t_reply is None:
            t_reply = time.monotonic()
        if not hello and EOM in tail + chunk:
            hello = True
            rest = (tail + chunk).split(EOM, 1)[1]
            if rest.strip():
                t_reply = time.monotonic()
        tail = (tail + chunk)[-(len(EOM) - 1):]
    t1 = time.monotonic()
    err = p.stderr.read()
    if p.wait(30) != 0 or t_reply is None:
        raise RuntimeError("%s: %s" % (argv[0], err[-300:]))
    return n, t1 - t0, t1 - t_reply


def bulk_local(argv, env):
    """The same <get-config> read straight from netconf-subsystem, as the
    agent runs it.  netconfd drops an rpc that it reads together with the
    client's hello, so the rpcs go 0.3 s after the server's hello, and the
    clock starts then: only the reply is timed, which favours this
    baseline over the remote paths (they include their process start and
    hello).  netconf-subsystem stays after close-session until its input
    ends: the input is closed once both replies are in.  Returns the bytes,
    the seconds from the rpcs to the end, and from the reply's first byte
    to the end."""
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=env)
    p.stdin.write(HELLO_10.encode())
    p.stdin.flush()
    fd, tail, eoms, n, t0, t_reply = p.stdout.fileno(), b"", 0, 0, None, None
    while eoms < 3:  # the hello, the get-config reply, the close-session reply
        r, _, _ = select.select([fd], [], [], 60)
        if not r:
            p.kill()
            raise RuntimeError("netconf-subsystem: no output within 60 s "
                               "(%d bytes, %d ends)" % (n, eoms))
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            raise RuntimeError("netconf-subsystem ended after %d bytes" % n)
        seen = (tail + chunk).count(EOM)
        tail = (tail + chunk)[-(len(EOM) - 1):]
        if t0 is not None:
            n += len(chunk)
            if t_reply is None:
                t_reply = time.monotonic()
        if eoms == 0 and seen > 0:
            time.sleep(0.3)
            t0 = time.monotonic()
            p.stdin.write((rpc(1, "<get-config><source><running/></source></get-config>")
                           + rpc(2, "<close-session/>")).encode())
            p.stdin.flush()
        eoms += seen
    t1 = time.monotonic()
    p.stdin.close()
    p.wait(30)
    return n, t1 - t0, t1 - t_reply


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for k in ("ncgrpcd", "agent", "sshd", "cli"):
        ap.add_argument("--" + k, required=True)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--bulk-rounds", type=int, default=3,
                    help="bulk transfers per path, alternating the paths")
    a = ap.parse_args()
    for k in ("ncgrpcd", "agent", "sshd", "cli"):
        CFG[k] = os.path.abspath(getattr(a, k))
    test_sshd.Env.SECRET = "bench-secret-%s-0123456789"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * a.idle + 4096))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    env = Env(("router-17",), extra=("session-limit 64",))
    agents = []
    try:
        # The idle crowd: cheap scrypt, the registry is not what is measured.
        ids = ["idle-%05d" % i for i in range(a.idle)]
        for dev in ids:
            env.srv.devices[dev] = srvlib.registry_line(dev, "s-" + dev, ln=10, r=1, p=1)
        env.srv.write_registry()
        time.sleep(1.5)  # ncgrpcd reloads the registry by itself
        per = 500
        for k in range(0, len(ids), per):
            ag = Agent(CFG["agent"], env._sub("idle"))
            ag.configure([Client("c%d" % i, dev, "s-" + dev,
                                 [Addr(env.srv.port, cert_file=env.srv.cert)], waittime=2)
                          for i, dev in enumerate(ids[k:k + per])], ())
            ag.start()
            agents.append(ag)
        op = OpClient(env.srv.sock)
        deadline = time.monotonic() + 300
        while sum(1 for d in op.list_devices(timeout=60) if d.idle_connections) < a.idle + 1:
            if time.monotonic() > deadline:
                raise SystemExit("the idle devices did not all connect")
            time.sleep(1)
        op.close()
        print("%d idle devices + router-17 connected" % a.idle, flush=True)

        ssh = env.ssh_argv("alice", "router-17", "-s", "netconf")
        cli = [CFG["cli"], "-f", env.srv.conf_path, "session", "router-17", "--netconf"]
        t_ssh, t_cli = [], []
        for _ in range(a.rounds):
            t_ssh.append(time_to_hello(ssh) * 1000)
            t_cli.append(time_to_hello(cli) * 1000)

        # A config of about --mb MB, in edits the agent takes (< 4 MiB).
        users = "".join("<user-name>user-%06d-%s</user-name>" % (i, "x" * 40)
                        for i in range(100))
        ngroups = a.mb * 1000 * 1000 // 8700
        m = env.nc("carol", "router-17")
        try:
            for base in range(0, ngroups, 100):
                groups = "".join("<group><name>g%05d</name>%s</group>" % (g, users)
                                 for g in range(base, min(ngroups, base + 100)))
                assert m.edit_config(target="candidate", config=(
                    '<config><nacm xmlns="%s"><groups>%s</groups></nacm></config>'
                    % (NACM_NS, groups))).ok
            assert m.commit().ok
        finally:
            m.close_session()

        res = {"ncclient": [], "ssh": [], "cli": [], "local": []}
        local = env.netconfd.command().split()
        # What the agent gives it (src/agent/session.c), as sshd would.
        local_env = dict(os.environ, USER="root", LOGNAME="root",
                         SSH_CONNECTION="127.0.0.1 40000 127.0.0.1 830")
        for _ in range(a.bulk_rounds):
            t0 = time.monotonic()
            m = env.nc("carol", "router-17")
            n = len(m.get_config(source="running").xml.encode())
            m.close_session()
            res["ncclient"].append((n, time.monotonic() - t0, None))
            res["ssh"].append(bulk_pipe(env.ssh_argv("carol", "router-17", "-s", "netconf")))
            res["cli"].append(bulk_pipe(cli))
            res["local"].append(bulk_local(local, local_env))

        print()
        print("SSH front door against ncgrpc session: %d idle devices connected, "
              "%d rounds" % (a.idle, a.rounds))
        print("%-46s %10s %10s %8s" % ("connect -> device <hello> at the client",
                                      "median ms", "p99 ms", "ratio"))
        mc, ms = statistics.median(t_cli), statistics.median(t_ssh)
        print("%-46s %10.1f %10.1f %8s" % ("ncgrpc session (baseline)", mc, pct(t_cli, 99),
                                           "1.00x"))
        print("%-46s %10.1f %10.1f %7.2fx" % ("ssh -s netconf via ncgrpc-sshd", ms,
                                              pct(t_ssh, 99), ms / mc))
        print()
        print("%-46s %8s %8s %8s %8s %8s" % (
            "bulk <get-config>, %d rounds, MB/s" % a.bulk_rounds, "MB", "best", "ratio",
            "median", "ratio"))
        whole = {k: sorted(r[0] / 1e6 / r[1] for r in v) for k, v in res.items()}
        reply = {k: sorted(r[0] / 1e6 / r[2] for r in v) for k, v in res.items()
                 if v[0][2] is not None}
        for title, rate in (("whole session", whole), ("reply only", reply)):
            best = {k: v[-1] for k, v in rate.items()}
            mid = {k: statistics.median(v) for k, v in rate.items()}
            print("  %s" % title)
            for k, label in (("cli", "ncgrpc session (baseline)"),
                             ("ssh", "OpenSSH ssh -s netconf via ncgrpc-sshd"),
                             ("ncclient", "ncclient via ncgrpc-sshd"),
                             ("local", "netconf-subsystem on the device (local)")):
                if k in rate:
                    print("%-46s %8.1f %8.1f %7.2fx %8.1f %7.2fx" % (
                        label, res[k][0][0] / 1e6, best[k], best[k] / best["cli"], mid[k],
                        mid[k] / mid["cli"]))
        # The figure: the reply through agent, ncgrpcd and CLI against
        # the same reply read locally, from its first byte to its last.
        print("%-46s %17.2f %17.2f" % ("reply: ncgrpc session / local (goal >= 0.50)",
                                       max(reply["cli"]) / max(reply["local"]),
                                       statistics.median(reply["cli"]) /
                                       statistics.median(reply["local"])))
        return 0
    finally:
        for ag in agents:
            ag.stop(20)
        env.close()


if __name__ == "__main__":
    sys.exit(main())
