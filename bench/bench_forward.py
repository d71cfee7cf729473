#!/usr/bin/python3
"""Session-open latency through a remote node against a local one.

    bench_forward.py --ncgrpcd PATH --agent PATH --cli PATH [--rounds 200]

Two ncgrpcd nodes on loopback (tests/cluster/clusterlib.py: certificates
from "ncgrpc cluster", node A forwarding to node B with cluster-static-peer)
and one device (ncgrpc-agent, /bin/sh) on node B.  Each round opens a shell
session on the device from B's operator socket (local) and from A's
(forwarded over mutual TLS to B), alternating, and times the Session call
from the request to SessionStarted, and to the first byte of output (the
shell's prompt).  Before each open the device has an idle connection, so
the figures are ncgrpcd's work, not the device's reconnect.  The first
forwarded session, which also dials B, is reported apart.  Loopback only;
not part of ctest.
"""
import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "cluster"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "server"))
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import clusterlib  # noqa: E402
import opclient  # noqa: E402


def one(op, opb):
    opb.wait_device(clusterlib.DEVICE, 20)
    s = op.session(clusterlib.DEVICE, "shell", 10000)
    s.wait_started(20)
    s.read_until(re.compile(rb"[$#] $"), 20)
    r = ((s.t_started - s.t_open) * 1e3, (s.t_first_data - s.t_open) * 1e3)
    s.cancel()
    s.wait_done(20)
    return r


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ncgrpcd", required=True)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-forward-")
    os.chmod(tmp, 0o755)
    pki = clusterlib.Pki(args.cli, tmp).init()
    pair = clusterlib.Pair(args.ncgrpcd, args.agent, tmp, pki).start()
    opa = opclient.OpClient(pair.a.sock)
    opb = opclient.OpClient(pair.b.sock)
    try:
        opb.wait_device(clusterlib.DEVICE, 20)
        one(opb, opb)  # warm up the local path
        first = one(opa, opb)
        res = {"local": ([], []), "remote": ([], [])}
        for i in range(args.rounds):
            for name, op in (("local", opb), ("remote", opa)) if i % 2 == 0 else \
                    (("remote", opa), ("local", opb)):
                st, fb = one(op, opb)
                res[name][0].append(st)
                res[name][1].append(fb)
        print("session-open latency, %d rounds each (ms)" % args.rounds)
        print("%-8s %-16s %8s %8s %8s" % ("path", "until", "median", "p99", "max"))
        for name in ("local", "remote"):
            for label, v in (("SessionStarted", res[name][0]),
                             ("first byte", res[name][1])):
                print("%-8s %-16s %8.2f %8.2f %8.2f" % (name, label, statistics.median(v),
                                                        pct(v, 99), max(v)))
        print("first forwarded session (dials node B): started %.2f ms, first byte %.2f ms"
              % first)
    finally:
        opa.close()
        opb.close()
        pair.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
