#!/usr/bin/python3
"""Keystroke echo latency of a raw terminal through ncgrpcd, with N idle devices.

    bench_echo.py --ncgrpcd PATH --agent PATH [--devices 1000] [--agents 10]
                  [--keys 1000] [--neighbours N [--opload PATH]]

One more device (an ncgrpc-agent running bash) gets a RAW shell session
through the operator API (python3-grpcio, tests/server/opclient.py), while
--devices idle devices (as in bench_scale.py: --agents ncgrpc-agent
processes with many client stanzas) hold their long-polling Initialize.
A key is sent (one SessionInput.data of one byte) and the time until its
echo comes back (SessionOutput.data holding it) is measured, --keys times,
alternating "a" and DEL (whose echo starts with "\\b"), one key at a time.

Baseline, in the same run and through the same kind of Python reader
thread: the same keys written to a local pty running bash, and read back
from it, in turns of 100 keys with the session so that both see the same
load.  The ratios of the medians and of the p99s are printed.  Not part of
ctest.

--neighbours N gives the echo device's agent N more devices, on which
ncgrpc-opload opens shell sessions, two at a time, for as long as the keys
are measured: the echo then shares the agent's loop with sessions that
start and end around it, as on a device that automation also uses.
"""
import argparse
import os
import pty
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "server"))
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import srvlib  # noqa: E402
from opclient import OpClient, pb  # noqa: E402
from srvlib import Addr, Agent, Client, Ncgrpcd, free_port  # noqa: E402

from bench_scale import pct, raise_nofile  # noqa: E402

KEYS = ((b"a", b"a"), (b"\x7f", b"\x08"))


def measure(send, wait_for, n):
    """n keys: send(key), then wait_for(echo); seconds each."""
    out = []
    for i in range(n):
        key, echo = KEYS[i % 2]
        t0 = time.perf_counter()
        send(key)
        wait_for(echo)
        out.append(time.perf_counter() - t0)
    return out


class LocalPty:
    """bash on a local pty, its output read by a thread as the session's is."""

    def __init__(self):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve("/bin/bash", ["bash", "--norc", "--noprofile", "-i"],
                      {"PATH": "/usr/bin:/bin", "PS1": "$ ", "TERM": "xterm"})
        self.buf = bytearray()
        self.cond = threading.Condition()
        self.pos = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            r, _, _ = select.select([self.fd], [], [], 1.0)
            if not r:
                continue
            try:
                data = os.read(self.fd, 4096)
            except OSError:
                return
            if not data:
                return
            with self.cond:
                self.buf += data
                self.cond.notify_all()

    def send(self, key):
        os.write(self.fd, key)

    def wait_for(self, pattern, timeout=5):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                i = self.buf.find(pattern, self.pos)
                if i >= 0:
                    self.pos = i + len(pattern)
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("local pty: %r not echoed" % pattern)
                self.cond.wait(left)

    def close(self):
        os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)
        os.close(self.fd)


def report(name, xs):
    ms = [x * 1000 for x in xs]
    print("%-28s n=%d median %.3f ms  p99 %.3f ms  max %.3f ms"
          % (name, len(ms), statistics.median(ms), pct(ms, 99), max(ms)), flush=True)
    return statistics.median(ms), pct(ms, 99)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ncgrpcd", required=True)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--agents", type=int, default=10)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--neighbours", type=int, default=0,
                    help="more devices on the echo device's agent, with sessions opened "
                    "on them while the keys are measured")
    ap.add_argument("--opload", help="ncgrpc-opload; default: beside --ncgrpcd's build "
                    "(src/test/ncgrpc-opload)")
    ap.add_argument("--workdir")
    a = ap.parse_args()

    if a.opload is None:
        a.opload = os.path.join(os.path.dirname(os.path.abspath(a.ncgrpcd)), "..", "test",
                                "ncgrpc-opload")
    n, nag = a.devices, max(1, min(a.agents, a.devices))
    raise_nofile(4 * n + 10000)
    work = a.workdir or tempfile.mkdtemp(prefix="ncgrpc-bench-echo-")
    os.makedirs(work, exist_ok=True)
    port = free_port()
    srv = Ncgrpcd(os.path.abspath(a.ncgrpcd), os.path.join(work, "srv"), port=port,
                  extra=["session-wait 60"])
    os.makedirs(srv.workdir, exist_ok=True)
    nbs = ["nb-%04d" % i for i in range(a.neighbours)]
    ids = ["idle-%05d" % i for i in range(n)] + ["echo-dev"] + nbs
    with open(srv.devices_path, "w") as f:
        for dev in ids:
            f.write(srvlib.registry_line(dev, "s-" + dev, ln=10, r=1, p=1) + "\n")
    os.chmod(srv.devices_path, 0o600)
    agents = []
    local = None
    load = None
    try:
        srv.start()
        op = OpClient(srv.sock)
        per = (n + nag - 1) // nag
        for k in range(nag):
            mine = ids[k * per:min(n, (k + 1) * per)]
            if not mine:
                break
            ag = Agent(os.path.abspath(a.agent), os.path.join(work, "agent%d" % k))
            os.makedirs(ag.workdir, exist_ok=True)
            ag.configure([Client("c%d" % i, d, "s-" + d, [Addr(port, cert_file=srv.cert)],
                                 waittime=2) for i, d in enumerate(mine)],
                         ('shell "/bin/sh";',))
            ag.start()
            agents.append(ag)
        ag = Agent(os.path.abspath(a.agent), os.path.join(work, "agent-echo"))
        os.makedirs(ag.workdir, exist_ok=True)
        # bash as the baseline runs it, without the machine's rc files
        # (a pyenv or conda hook there can take seconds to start).
        shell = os.path.join(work, "bash-norc")
        with open(shell, "w") as f:
            f.write("#!/bin/sh\nexec /bin/bash --norc --noprofile \"$@\"\n")
        os.chmod(shell, 0o755)
        ag.configure([Client("c%d" % i, d, "s-" + d, [Addr(port, cert_file=srv.cert)],
                             waittime=2) for i, d in enumerate(["echo-dev"] + nbs)],
                     ('shell "%s";' % shell,))
        ag.start()
        agents.append(ag)
        t0 = time.monotonic()
        while True:
            ready = sum(1 for d in op.list_devices(timeout=60) if d.idle_connections > 0)
            if ready >= n + 1 + len(nbs):
                break
            if time.monotonic() - t0 > 600:
                raise SystemExit("only %d of %d devices ready" % (ready, n + 1))
            time.sleep(1)
        print("%d idle devices, echo-dev and %d neighbours ready in %.1f s; ncgrpcd RSS "
              "%d KiB" % (n, len(nbs), time.monotonic() - t0, srvlib.rss_kib(srv.pid)),
              flush=True)

        first = pb.SessionInput(open=pb.SessionOpen(
            device_id="echo-dev", type=pb.SHELL, terminal=pb.RAW, term="xterm",
            window=pb.WindowSize(cols=100, rows=30)))
        s = op.session("echo-dev", "csh", first=first)
        if not s.wait_started(30) or s.started is None:
            raise SystemExit("no session: %s %s" % (s.code, s.details))
        if s.started.terminal != pb.RAW:
            raise SystemExit("the session is not RAW")
        s.send(b"PS1='$ '\r")
        s.read_until(b"\x1b[?2004h$ ", 10)
        local = LocalPty()
        local.wait_for(b"$ ", 10)
        if nbs:
            # Far more opens than the keys take; stopped once they are done.
            load = subprocess.Popen([a.opload, "-s", srv.sock, "-c", "2"],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            load.stdin.write(("\n".join(nbs * 200) + "\n").encode())
            load.stdin.close()
            time.sleep(1)
        # Warm up, then measure both in turns of 100 keys, so that both
        # see the same load of this shared machine.
        measure(s.send, lambda e: s.read_until(e, 5), 50)
        measure(local.send, local.wait_for, 50)
        remote, base = [], []
        for i in range(0, a.keys, 100):
            k = min(100, a.keys - i)
            remote += measure(s.send, lambda e: s.read_until(e, 5), k)
            base += measure(local.send, local.wait_for, k)

        if load is not None:
            load.kill()
            load.wait()
        m1, p1 = report("local pty (baseline)", base)
        m2, p2 = report("through ncgrpcd, %d idle%s" % (
            n, ", %d neighbours opening" % len(nbs) if nbs else ""), remote)
        print("ratio: median %.1fx, p99 %.1fx" % (m2 / m1, p2 / p1), flush=True)
        s.cancel()
    finally:
        if load is not None and load.poll() is None:
            load.kill()
            load.wait()
        if local is not None:
            local.close()
        for ag in agents:
            try:
                ag.stop()
            except ValueError:
                # A process gone while /proc was read (agentlib): it is
                # stopped all the same.
                pass
        srv.stop()
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
