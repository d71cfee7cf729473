#!/usr/bin/python3
"""ncgrpcd at scale: N idle devices on one server.

    bench_scale.py --ncgrpcd PATH --agent PATH [--devices 10000] [--agents 10]
                   [--sessions 200] [--concurrency 20] [--gap MS] [--listen 1]

Devices are ncgrpc-agent processes, each with devices/agents `client`
stanzas (one TLS connection per client, long-polling NcgrpcInitialize).
Measured:
  - ncgrpcd RSS before the devices connect and once all N are idle, and
    the difference per device;
  - the time from starting the agents until ListDevices shows all N with an
    idle connection;
  - for --sessions shell sessions on distinct devices (--concurrency at a
    time) at that load: the time from the operator's Session request to
    SessionStarted, to the first byte of device output (the shell prompt),
    and to the output of `echo x`; median and p99.  --gap MS waits that long
    after each session ends before the next open, as an operator's opens
    are spread out (back to back, one session's aftermath lands on the next).
    With one session at a time, the baseline: as many shells started on a
    local pty the same way, one after another, with the devices still
    idle, and their time to the first output byte.
The open-file limit is raised for this process and its children only.
--listen K spreads the devices over K listen addresses 127.0.0.1..K (more
source ports).  Not part of ctest.
"""
import argparse
import concurrent.futures
import os
import resource
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "server"))
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import srvlib  # noqa: E402
from opclient import OpClient  # noqa: E402
from srvlib import Addr, Agent, Client, Ncgrpcd, free_port  # noqa: E402


# ncgrpcd configuration lines of each --limits choice.
FLEET = ["max-connections 1000000", "max-unauthenticated-per-address 100000",
         "auth-checks-per-address 10000", "auth-failures-per-address 100000"]
LIMITS = {
    "site": [],
    "fleet": FLEET,
    "none": FLEET + ["max-unauthenticated 100000", "auth-checks 10000"],
}


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with open("/proc/sys/fs/nr_open") as f:
            cap = int(f.read())
    except OSError:
        cap = hard
    target = min(max(want, soft), cap)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(target, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def cpu_s(pid, children=False, tid=None):
    """User plus system CPU seconds of pid so far, with those of its
    children it has waited for (/proc/PID/stat); with tid, of that thread
    alone (/proc/PID/task/TID/stat)."""
    path = "/proc/%d/stat" % pid if tid is None else "/proc/%d/task/%d/stat" % (pid, tid)
    with open(path) as f:
        x = f.read().rsplit(")", 1)[1].split()
    ticks = int(x[11]) + int(x[12]) + (int(x[13]) + int(x[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ncgrpcd", required=True)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--devices", type=int, default=10000)
    ap.add_argument("--agents", type=int, default=10)
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--gap", type=int, default=0,
                    help="ms after a session ends before the next open (C client): "
                    "opens spread out, not back to back")
    ap.add_argument("--listen", type=int, default=1, help="listen addresses 127.0.0.1..K")
    ap.add_argument("--connect-timeout", type=float, default=600)
    ap.add_argument("--limits", choices=("site", "fleet", "none"), default="site",
                    help="ncgrpcd's pre-authentication limits. site: the defaults; every "
                    "bench device comes from 127.0.0.1, which they treat as one site (32 "
                    "logging in at once, 8 secret checks at once, and checks in flight "
                    "count against its 50 failures a minute). fleet: as a fleet from "
                    "many addresses sees them: the per-address limits and max-connections "
                    "lifted, the global ones (max-unauthenticated 1024, auth-checks 32) kept. "
                    "none: every limit lifted")
    ap.add_argument("--client", choices=("c", "python"), default="c",
                    help="the operator client of the session phase: ncgrpc-opload (c), "
                    "or Python threads on one connection, which at 20 at a time measure "
                    "mostly themselves")
    ap.add_argument("--opload", help="ncgrpc-opload; default: beside --ncgrpcd's build "
                    "(src/test/ncgrpc-opload)")
    ap.add_argument("--cli", help="ncgrpc, timed listing the devices; default: beside "
                    "--ncgrpcd's build (src/cli/ncgrpc)")
    ap.add_argument("--waittime", type=int, default=2,
                    help="each client's wait before its next pass over its servers "
                    "(ncgrpc-agent's default is 30)")
    ap.add_argument("--other-processes", type=int, default=0, metavar="N",
                    help="start N idle processes besides the bench's, as a device runs "
                    "daemons: the end of a session used to look at every process")
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    if a.opload is None:
        a.opload = os.path.join(os.path.dirname(os.path.abspath(a.ncgrpcd)), "..", "test",
                                "ncgrpc-opload")
    if a.cli is None:
        a.cli = os.path.join(os.path.dirname(os.path.abspath(a.ncgrpcd)), "..", "cli",
                             "ncgrpc")
    if a.client == "c" and not os.access(a.opload, os.X_OK):
        raise SystemExit("no ncgrpc-opload at %s (build it, or give --opload)" % a.opload)

    n, nag = a.devices, max(1, min(a.agents, a.devices))
    lim = raise_nofile(4 * n + 10000)
    # ncgrpcd holds one descriptor per device and keeps NCGRPCD_FD_RESERVE
    # (src/server/ncgrpcd.c) for the operator socket.  Without
    # CAP_SYS_RESOURCE no process here can go past the hard limit.
    if lim[0] < n + 256:
        raise SystemExit("%d devices need an open-file limit of at least %d; this "
                         "process may raise it only to %d (hard limit, see "
                         "/proc/sys/fs/nr_open and CAP_SYS_RESOURCE)"
                         % (n, n + 256, lim[0]))
    work = a.workdir or tempfile.mkdtemp(prefix="ncgrpc-bench-scale-")
    os.makedirs(work, exist_ok=True)
    print("workdir %s, RLIMIT_NOFILE %s" % (work, lim), flush=True)

    port = free_port()
    hosts = ["127.0.0.%d" % (i + 1) for i in range(a.listen)]
    srv = Ncgrpcd(os.path.abspath(a.ncgrpcd), os.path.join(work, "srv"), port=port,
                  listen=["%s:%d" % (h, port) for h in hosts],
                  extra=["session-limit 100", "session-wait 60"] + LIMITS[a.limits]
                  # The certificate ncgrpcd makes must name every listen address.
                  + ["name %s" % h for h in hosts[1:]])
    os.makedirs(srv.workdir, exist_ok=True)
    ids = ["bench-%05d" % i for i in range(n)]
    t0 = time.monotonic()
    # A cheap scrypt cost: the registry's speed is not what is measured here.
    with open(srv.devices_path, "w") as f:
        f.write("# bench_scale registry\n")
        for dev in ids:
            f.write(srvlib.registry_line(dev, "s-" + dev, ln=10, r=1, p=1) + "\n")
    os.chmod(srv.devices_path, 0o600)
    print("registry of %d devices written in %.1f s" % (n, time.monotonic() - t0), flush=True)
    agents = []
    others = []
    try:
        for _ in range(a.other_processes):
            others.append(subprocess.Popen(["sleep", "100000"], stdin=subprocess.DEVNULL,
                                           start_new_session=True))
        if others:
            print("%d other processes started" % len(others), flush=True)
        srv.start()
        time.sleep(0.5)
        rss0 = srvlib.rss_kib(srv.pid)
        op = OpClient(srv.sock)

        per = (n + nag - 1) // nag
        srv_cpu_idle = cpu_s(srv.pid)
        # ncgrpcd's main thread is its event loop; the others are libuv's
        # threadpool, where the secret checks (scrypt) run.
        srv_loop_idle = cpu_s(srv.pid, tid=srv.pid)
        t_start = time.monotonic()
        for k in range(nag):
            mine = ids[k * per:(k + 1) * per]
            if not mine:
                break
            ag = Agent(os.path.abspath(a.agent), os.path.join(work, "agent%d" % k))
            os.makedirs(ag.workdir, exist_ok=True)
            clients = [Client("c%d" % i, dev, "s-" + dev,
                              [Addr(port, hosts[(k * per + i) % len(hosts)], cert_file=srv.cert)],
                              waittime=a.waittime)
                       for i, dev in enumerate(mine)]
            ag.configure(clients, ('shell "/bin/sh";',))
            ag.start()
            agents.append(ag)
        print("%d agents started in %.1f s" % (len(agents), time.monotonic() - t_start),
              flush=True)

        deadline = time.monotonic() + a.connect_timeout
        last = -1
        while True:
            devs = op.list_devices(timeout=60)
            ready = sum(1 for d in devs if d.idle_connections > 0)
            if ready != last:
                print("  %6.1f s: %d devices, %d ready" % (time.monotonic() - t_start,
                                                             len(devs), ready), flush=True)
                last = ready
            if ready >= n:
                break
            if time.monotonic() > deadline:
                raise SystemExit("only %d of %d devices ready after %.0f s"
                                 % (ready, n, a.connect_timeout))
            time.sleep(1)
        t_connect = time.monotonic() - t_start
        # CPU of the connect phase (the agents started with it).
        cpu_conn = (cpu_s(srv.pid) - srv_cpu_idle, sum(cpu_s(ag.pid) for ag in agents))
        loop_conn = cpu_s(srv.pid, tid=srv.pid) - srv_loop_idle
        time.sleep(2)
        rss1 = srvlib.rss_kib(srv.pid)
        t_list = time.monotonic()
        devs = op.list_devices(timeout=60)
        t_list = time.monotonic() - t_list
        # The same through `ncgrpc devices` (C), best of 3: the Python
        # client's decoding is part of the figure above.
        t_cli = float("nan")
        if os.access(a.cli, os.X_OK):
            for _ in range(3):
                t = time.monotonic()
                r = subprocess.run([a.cli, "-s", srv.sock, "devices", "--json"],
                                   stdout=subprocess.DEVNULL, timeout=120)
                t = time.monotonic() - t
                if r.returncode == 0 and not t > t_cli:
                    t_cli = t

        # Sessions at load.
        step = max(1, n // max(1, a.sessions))
        targets = ids[::step][:a.sessions]
        cpu0 = (cpu_s(srv.pid), sum(cpu_s(ag.pid) for ag in agents),
                sum(cpu_s(ag.pid, True) for ag in agents))
        if a.client == "c":
            started, first, nbad, t_s = opload(a, srv.sock, targets, work)
        else:
            started, first, nbad, t_s = pyload(a, op, targets)
        time.sleep(0.5)  # the agents reap the last shells
        cpu1 = (cpu_s(srv.pid), sum(cpu_s(ag.pid) for ag in agents),
                sum(cpu_s(ag.pid, True) for ag in agents))
        # The baseline, with the devices still connected and idle.
        local = local_opens(len(targets), a.gap) if a.concurrency == 1 else []
        ms_per = [(y - x) * 1000 / max(1, len(targets)) for x, y in zip(cpu0, cpu1)]
        rss2 = srvlib.rss_kib(srv.pid)
        agent_rss = sum(srvlib.rss_kib(ag.pid) or 0 for ag in agents)

        print()
        print("ncgrpcd scale benchmark: %d devices (%d agents x %d clients), %d listen "
              "address(es), %s limits" % (n, len(agents), per, len(hosts), a.limits))
        print("%-52s %s" % ("metric", "value"))
        print("%-52s %d KiB" % ("ncgrpcd RSS, no devices", rss0))
        print("%-52s %d KiB" % ("ncgrpcd RSS, %d idle devices" % n, rss1))
        print("%-52s %.1f KiB" % ("RSS per idle device", (rss1 - rss0) / float(n)))
        print("%-52s %.1f s" % ("time to connect all devices", t_connect))
        print("%-52s %.0f / %.0f us" % ("CPU to connect, per device: ncgrpcd / agents",
                                         cpu_conn[0] * 1e6 / n, cpu_conn[1] * 1e6 / n))
        # What the loop can take when the devices' side of the handshakes
        # runs elsewhere, as it does in a real fleet (here the agents share
        # the same cores).
        print("%-52s %.0f us, %.0f devices/s" % (
            "  of ncgrpcd's, on its loop: per device, capacity", loop_conn * 1e6 / n,
            n / loop_conn if loop_conn > 0 else float("nan")))
        print("%-52s %.0f ms" % ("ListDevices with %d devices" % n, t_list * 1000))
        print("%-52s %.0f ms" % ("ncgrpc devices --json (C CLI), best of 3", t_cli * 1000))
        print("%-52s %d (%d at a time%s, %s client), %.1f s, %d failed"
              % ("shell sessions", len(targets), a.concurrency,
                 ", %d ms apart" % a.gap if a.gap else "",
                 "C" if a.client == "c" else "Python", t_s, nbad))
        print("%-52s %.1f / %.1f ms" % ("Session -> SessionStarted, median / p99",
                                         med(started), pct(started, 99)))
        print("%-52s %.1f / %.1f ms" % ("Session -> first output byte, median / p99",
                                         med(first), pct(first, 99)))
        if local:
            print("%-52s %.1f / %.1f ms" % ("baseline, local pty: first output byte, med / p99",
                                             med(local), pct(local, 99)))
            print("%-52s %.2f / %.2f" % ("first output byte, ratio to the baseline, med / p99",
                                          med(first) / med(local),
                                          pct(first, 99) / pct(local, 99)))
        print("%-52s %.2f / %.2f / %.2f ms" % (
            "CPU per session: ncgrpcd / agents / their shells", ms_per[0], ms_per[1],
            ms_per[2] - ms_per[1]))
        print("%-52s %d KiB" % ("ncgrpcd RSS after the sessions", rss2))
        print("%-52s %d KiB" % ("agents' RSS (sum)", agent_rss))
        op.close()
        return 1 if nbad else 0
    finally:
        for p in others:
            p.kill()
            p.wait()
        for ag in agents:
            ag.stop(20)
        rc = srv.stop(timeout=30)
        if rc not in (0, None):
            print("ncgrpcd exited with %s" % rc)
        if not a.keep and not a.workdir:
            shutil.rmtree(work, ignore_errors=True)


def local_opens(n, gap_ms):
    """The baseline of the session phase: n times, one after another, what
    the agent's shell sessions run (/bin/sh on a new pty, as the leader of
    its own session, with the agent's environment), started here with
    posix_spawn(), which clones as the agent does.  Each is driven as
    ncgrpc-opload drives a session: the prompt, "echo x" and its output,
    "exit", the end.  Returns the ms from the pty's opening to the first
    output byte, one per open."""
    env = {"HOME": "/", "USER": "root", "LOGNAME": "root", "SHELL": "/bin/sh",
           "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "LANG": "C.UTF-8", "TERM": "dumb"}
    first = []
    for _ in range(n):
        t0 = time.monotonic()
        master, slave = os.openpty()
        try:
            pid = os.posix_spawn("/bin/sh", ["/bin/sh"], env, setsid=True, file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.ttyname(slave), os.O_RDWR, 0),
                (os.POSIX_SPAWN_DUP2, 0, 1), (os.POSIX_SPAWN_DUP2, 0, 2)])
        finally:
            os.close(slave)
        out, t_first, step = b"", None, 0
        deadline = t0 + 30
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 1.0)
            if not r:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the shell and its pty are gone
                break
            if not data:
                break
            if t_first is None:
                t_first = time.monotonic()
            out += data
            if step == 0 and b" " in out:
                step, out = 1, b""
                os.write(master, b"echo x\n")
            elif step == 1 and b"\r\nx\r\n" in out:
                step = 2
                os.write(master, b"exit\n")
        os.close(master)
        os.waitpid(pid, 0)
        if t_first is not None:
            first.append((t_first - t0) * 1000)
        time.sleep(gap_ms / 1000.0)
    return first


def opload(a, sock, targets, work):
    """The sessions through ncgrpc-opload (src/test): started and first-byte
    times in ms, the number that failed, and the seconds they took.  Its
    output, a line per session, is kept in the workdir (opload.out)."""
    r = subprocess.run([a.opload, "-s", sock, "-c", str(a.concurrency), "-w", "30000",
                        "-g", str(a.gap)],
                       input="".join(t + "\n" for t in targets), capture_output=True,
                       text=True, timeout=600)
    with open(os.path.join(work, "opload.out"), "w") as f:
        f.write(r.stdout + r.stderr)
    started, first, bad, secs = [], [], 0, float("nan")
    for line in r.stdout.splitlines():
        w = line.split()
        kv = dict(x.split("=", 1) for x in w[1:] if "=" in x)
        if w and w[0] == "session":
            if kv["status"] != "OK":
                bad += 1
            if float(kv["started"]) >= 0:
                started.append(float(kv["started"]))
            if float(kv["first"]) >= 0:
                first.append(float(kv["first"]))
        elif w and w[0] == "summary":
            secs = float(kv["seconds"])
    if r.returncode != 0 or len(started) + bad < len(targets):
        sys.stderr.write(r.stderr[-2000:])
        bad = max(bad, len(targets) - len(started))
    return started, first, bad, secs


def pyload(a, op, targets):
    """The same sessions from Python threads on one OpClient connection
    (tests/server/opclient.py).  At 20 at a time the client itself is the
    bottleneck: it used more CPU than ncgrpcd and the agents together."""
    def one(dev):
        s = op.session(dev, "shell", wait_ms=30000)
        s.wait_started(60)
        s.read_until(b" ", 60)          # the prompt: first output
        s.send(b"echo x\n")
        s.read_until(b"x\r\n", 60)
        s.send(b"exit\n")
        s.read_all(60)
        return (s.t_started - s.t_open, s.t_first_data - s.t_open,
                s.code.name)

    t_s = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(a.concurrency) as ex:
        res = list(ex.map(one, targets))
    t_s = time.monotonic() - t_s
    started = [r[0] * 1000 for r in res]
    first = [r[1] * 1000 for r in res]
    return started, first, sum(1 for r in res if r[2] != "OK"), t_s


if __name__ == "__main__":
    sys.exit(main())
