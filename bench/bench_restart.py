#!/usr/bin/python3
"""ncgrpcd restart storm: how fast a fleet is back after the daemon restarts.

    bench_restart.py --ncgrpcd PATH --agent PATH [--devices 500] [--agents 5]
                     [--ln 14] [--rounds 2] [--limits site|fleet]

N devices, registered at the default scrypt cost (ln=14, r=8: 16 MiB and
tens of milliseconds per check), connect through a few ncgrpc-agent
processes.  Measured, from the moment ncgrpcd is started until ListDevices
shows all N with an idle connection:
  - the first start (every device does a full TLS handshake and a scrypt
    check);
  - a restart (SIGTERM, start again) with TLS session resumption, the
    default: devices resume with their ticket and skip scrypt;
  - the same restart with `tls-ticket-key none` (the baseline: no tickets,
    a full handshake and a scrypt check per device), in the same sitting.
Each restart is repeated --rounds times.  --limits as in bench_scale.py:
every bench device comes from 127.0.0.1, which the default per-address
limits treat as one site; fleet lifts them.  Loopback only; not part of
ctest.
"""
import argparse
import concurrent.futures
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "server"))
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import opclient  # noqa: E402
import srvlib  # noqa: E402
from opclient import OpClient  # noqa: E402
from srvlib import Addr, Agent, Client, Ncgrpcd, free_port  # noqa: E402
from bench_scale import LIMITS, cpu_s, raise_nofile  # noqa: E402


def wait_all(srv, n, t0, timeout):
    """Seconds from t0 until all n devices are ready (an idle connection
    each).  Counts the CONNECTED events of WatchDevices, which ncgrpcd sends
    as each device authenticates, and then confirms with one listing.
    Listing every device every 0.1 s, as this did before, cost ncgrpcd and
    this script most of a core at 10,000 devices: it slowed what it timed."""
    op = OpClient(srv.sock)
    try:
        w = op.watch(include_current=True)
        seen, t_last = set(), None
        try:
            while len(seen) < n:
                ev = w.next(max(0.001, t0 + timeout - time.monotonic()))
                if ev.kind == opclient.pb.DeviceEvent.CONNECTED:
                    seen.add(ev.device.device_id)
                    t_last = time.monotonic()
        except (TimeoutError, opclient.OpError):
            pass  # the listings below decide
        w.cancel()
        while True:
            ready = sum(1 for d in op.list_devices(timeout=60) if d.idle_connections > 0)
            if ready >= n:
                return (t_last if len(seen) >= n else time.monotonic()) - t0
            if time.monotonic() - t0 > timeout:
                raise SystemExit("only %d of %d devices ready after %.0f s"
                                 % (ready, n, timeout))
            time.sleep(0.1)
    finally:
        op.close()


def fleet_back(srv, agents, n, timeout):
    """Restarts srv; returns the seconds until all n devices are ready, and
    the CPU seconds the new ncgrpcd and the agents used until then."""
    rc = srv.stop(timeout=30)
    if rc not in (0, None):
        raise SystemExit("ncgrpcd exited with %s" % rc)
    ag0 = sum(cpu_s(ag.pid) for ag in agents)
    t0 = time.monotonic()
    srv.start()
    t = wait_all(srv, n, t0, timeout)
    return t, cpu_s(srv.pid), sum(cpu_s(ag.pid) for ag in agents) - ag0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ncgrpcd", required=True)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--agents", type=int, default=5)
    ap.add_argument("--ln", type=int, default=14, help="scrypt cost log2(N)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--limits", choices=("site", "fleet"), default="site")
    a = ap.parse_args()

    n, nag = a.devices, max(1, min(a.agents, a.devices))
    lim = raise_nofile(4 * n + 10000)
    if lim[0] < n + 256:
        raise SystemExit("%d devices need an open-file limit of at least %d, not %d"
                         % (n, n + 256, lim[0]))
    work = tempfile.mkdtemp(prefix="ncgrpc-bench-restart-")
    ids = ["rs-%05d" % i for i in range(n)]
    t = time.monotonic()
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count() or 2) as ex:
        lines = list(ex.map(srvlib.registry_line, ids, ["s-" + d for d in ids],
                            [a.ln] * n, chunksize=16))
    print("registry of %d devices at ln=%d written in %.1f s"
          % (n, a.ln, time.monotonic() - t), flush=True)
    results = {}
    try:
        for mode in ("resumption", "baseline"):
            port = free_port()
            extra = ["auth-checks 64"] + LIMITS[a.limits]
            if mode == "baseline":
                extra.append("tls-ticket-key none")
            srv = Ncgrpcd(os.path.abspath(a.ncgrpcd), os.path.join(work, mode), port=port,
                          extra=extra)
            os.makedirs(srv.workdir)
            with open(srv.devices_path, "w") as f:
                f.write("".join(line + "\n" for line in lines))
            os.chmod(srv.devices_path, 0o600)
            agents = []
            try:
                t0 = time.monotonic()
                srv.start()
                per = (n + nag - 1) // nag
                for k in range(nag):
                    mine = ids[k * per:(k + 1) * per]
                    ag = Agent(os.path.abspath(a.agent), os.path.join(srv.workdir, "ag%d" % k))
                    os.makedirs(ag.workdir)
                    ag.configure([Client("c%d" % i, d, "s-" + d,
                                         [Addr(port, "127.0.0.1", cert_file=srv.cert)],
                                         waittime=1)
                                  for i, d in enumerate(mine)], ('shell "/bin/sh";',))
                    ag.start()
                    agents.append(ag)
                first = wait_all(srv, n, t0, a.timeout)
                again = [fleet_back(srv, agents, n, a.timeout) for _ in range(a.rounds)]
                results[mode] = (first, [x[0] for x in again])
                print("%s: first start %.1f s; restarts %s" % (
                    mode, first, ", ".join(
                        "%.1f s (CPU per device: ncgrpcd %.0f us, agents %.0f us)"
                        % (t, c_srv * 1e6 / n, c_ag * 1e6 / n) for t, c_srv, c_ag in again)),
                    flush=True)
            finally:
                for ag in agents:
                    ag.stop(20)
                srv.stop(timeout=30)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    r, b = results["resumption"], results["baseline"]
    print()
    print("ncgrpcd restart storm: %d devices, %d agents, scrypt ln=%d, %s limits, %d cores"
          % (n, nag, a.ln, a.limits, os.cpu_count() or 0))
    print("%-44s %12s %12s %8s" % ("all devices ready after", "resumption", "baseline",
                                   "ratio"))
    print("%-44s %10.1f s %10.1f s %7.2fx" % ("first start (full handshakes)", r[0], b[0],
                                             b[0] / r[0]))
    for i in range(len(r[1])):
        print("%-44s %10.1f s %10.1f s %7.2fx" % ("restart %d" % (i + 1), r[1][i], b[1][i],
                                                 b[1][i] / r[1][i]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
