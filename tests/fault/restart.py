"""kill -9 of ncgrpcd with many devices connected, and how fast they return.

Shared by the CTest entry fault.RestartTest (test_restart.py, 50 devices)
and scripts/fault-restart (1,000 devices by default).  Devices are
ncgrpc-agent processes with many `client` stanzas each (one TLS connection
and device id per client), as in bench/bench_scale.py, all on loopback.

run() measures:
  - the time from kill -9 until ncgrpcd's ListDevices shows every device
    with an idle connection again (the restarted ncgrpcd starts at once),
    which must be at most waittime + margin;
  - then, at once, shell sessions on `sessions` distinct devices: each must
    start and run `echo`.
"""
import concurrent.futures
import os
import resource
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "server"))
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import srvlib  # noqa: E402
from srvlib import Addr, Agent, Client, Ncgrpcd, free_port  # noqa: E402


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(want, soft), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def wait_all_ready(op, n, timeout, t0, say):
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        devs = op.list_devices(timeout=60)
        ready = sum(1 for d in devs if d.idle_connections > 0)
        if ready != last:
            say("  %6.1f s: %d devices listed, %d ready" % (time.monotonic() - t0, len(devs),
                                                          ready))
            last = ready
        if ready >= n:
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            raise AssertionError("only %d of %d devices ready %.0f s after the start"
                                 % (ready, n, time.monotonic() - t0))
        time.sleep(0.2)


def one_session(op, dev):
    s = op.session(dev, "shell", wait_ms=5000)
    try:
        s.wait_started(30)
        s.send(b"echo ok-" + dev.encode() + b"\n")
        s.read_until(b"ok-" + dev.encode(), 30)
        s.send(b"exit\n")
        s.read_all(30)
        return None
    except Exception as e:  # reported by the caller
        return "%s: %s" % (dev, e)
    finally:
        s.cancel()


def run(ncgrpcd, agent, workdir, devices=1000, per_agent=100, waittime=10, margin=10.0,
        sessions=20, say=print):
    """Returns a dict of figures; raises AssertionError when a bound is missed."""
    from opclient import OpClient

    n = devices
    nag = max(1, (n + per_agent - 1) // per_agent)
    raise_nofile(4 * n + 4096)
    port = free_port()
    srv = Ncgrpcd(os.path.abspath(ncgrpcd), os.path.join(workdir, "srv"), port=port,
                  extra=["session-limit 10", "session-wait 30"])
    os.makedirs(srv.workdir, exist_ok=True)
    ids = ["dev-%05d" % i for i in range(n)]
    with open(srv.devices_path, "w") as f:
        f.write("# fault-restart registry\n")
        for dev in ids:
            f.write(srvlib.registry_line(dev, "s-" + dev, ln=10, r=1, p=1) + "\n")
    os.chmod(srv.devices_path, 0o600)
    agents = []
    op = None
    fig = {"devices": n, "agents": nag, "waittime": waittime, "margin": margin}
    try:
        srv.start()
        t0 = time.monotonic()
        for k in range(nag):
            mine = ids[k * per_agent:(k + 1) * per_agent]
            ag = Agent(os.path.abspath(agent), os.path.join(workdir, "agent%d" % k))
            os.makedirs(ag.workdir, exist_ok=True)
            ag.configure([Client("c%d" % i, dev, "s-" + dev,
                                 [Addr(port, "127.0.0.1", cert_file=srv.cert)],
                                 waittime=waittime)
                          for i, dev in enumerate(mine)], ('shell "/bin/sh";',))
            ag.start()
            agents.append(ag)
        op = OpClient(srv.sock)
        say("%d devices on %d agents; waiting for all of them" % (n, nag))
        fig["first_connect_s"] = wait_all_ready(op, n, 120 + n / 10.0, t0, say)
        op.close()
        op = None

        say("kill -9 ncgrpcd (pid %d), restarting it at once" % srv.pid)
        t_kill = time.monotonic()
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(10)
        srv._out.close()
        srv.proc = None
        # A fresh log, so that start() waits for the new "started" line.
        srv.log = srvlib.LogFile(os.path.join(srv.workdir, "ncgrpcd.restarted.log"))
        srv.start()
        fig["restart_s"] = time.monotonic() - t_kill
        op = OpClient(srv.sock)
        fig["all_back_s"] = wait_all_ready(op, n, waittime + margin + 60, t_kill, say)
        say("all %d devices back %.1f s after the kill (bound: waittime %d s + margin %.0f s)"
            % (n, fig["all_back_s"], waittime, margin))

        step = max(1, n // max(1, sessions))
        targets = ids[::step][:sessions]
        t_s = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(min(20, len(targets))) as ex:
            errs = [e for e in ex.map(lambda d: one_session(op, d), targets) if e]
        fig["sessions"] = len(targets)
        fig["sessions_failed"] = len(errs)
        fig["sessions_s"] = time.monotonic() - t_s
        say("%d shell sessions right after: %d failed, %.1f s"
            % (len(targets), len(errs), fig["sessions_s"]))
        if errs:
            raise AssertionError("sessions failed after the restart: %s" % errs[:5])
        if fig["all_back_s"] > waittime + margin:
            raise AssertionError("devices back after %.1f s, bound %d + %.0f s"
                                 % (fig["all_back_s"], waittime, margin))
        return fig
    finally:
        if op is not None:
            op.close()
        for ag in agents:
            ag.stop(20)
        srv.stop(timeout=30)
