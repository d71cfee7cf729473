#!/usr/bin/python3
"""A shell `cat` end to end in C, against the same output on a local pty.

    bench_cat.py --ncgrpcd PATH --agent PATH --cli PATH [--mib 200]
                 [--rounds 3]

The issue's shell target (>= 0.90x a local pty) asks what a user sees, so
both ends here are ours: one ncgrpc-agent (shell /bin/sh) on loopback,
ncgrpcd, and `ncgrpc session DEV --shell` with its standard input a pipe
and its standard output read by this script.  The command writes MIB MiB
of "x" (no newline, so the pty's onlcr changes nothing) between two
markers; the rate counts from the first byte after the start marker to
the end marker.

Baseline, in the same run and through the same reader (a Python loop of
64 KiB reads, timed between the same markers): the same command run by
/bin/sh on a local pseudo-terminal.  Rounds
alternate between the two, so both see the same load; the ratio of the
medians is printed, with the CPU per MiB of the agent, ncgrpcd and the
CLI (/proc/PID/stat; a busy machine moves it far less than the rates).
Not part of ctest.
"""
import argparse
import os
import pty
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "server"))
sys.path.insert(0, HERE)

import srvlib  # noqa: E402
from srvlib import Addr, Agent, Client, Ncgrpcd, free_port  # noqa: E402

from bench_agent import gen_cmd  # noqa: E402
from bench_scale import cpu_s  # noqa: E402

MiB = 1024 * 1024
# Written with printf so that the echo of the command line cannot match.
START, END = b"<CAT-START>", b"<CAT-END>"


def read_between(f, nbytes, timeout):
    """Reads f to its end; returns (bytes between the markers, seconds
    from the first of them to the end marker)."""
    buf = b""
    t0 = None
    n = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        b = f.read1(1 << 16)
        if not b:
            break
        if t0 is None:
            buf += b
            i = buf.find(START)
            if i < 0:
                buf = buf[-len(START):]
                continue
            t0 = time.monotonic()
            b = buf[i + len(START):]
            buf = b""
        # Keep enough of the tail to find a marker cut in two.
        tail = buf + b
        j = tail.find(END)
        if j >= 0:
            n += j - len(buf)
            return n, time.monotonic() - t0
        n += len(b)
        buf = tail[-len(END):]
    raise SystemExit("no end marker (%d bytes after the start)" % n)


def script(nbytes):
    return ("printf '<%%s>' CAT-START; %s; printf '<%%s>' CAT-END\n"
            % gen_cmd(nbytes)).encode()


class PtyReader:
    """read1() of a pty master: EIO, once the slave side is closed, is the end."""

    def __init__(self, fd):
        self.fd = fd

    def read1(self, n):
        try:
            return os.read(self.fd, n)
        except OSError:
            return b""


def local_pty(nbytes):
    """The same script on a local pty: MiB/s between the markers, and the
    CPU seconds of this process reading them (the pty's reader, as the
    agent is in the other path)."""
    master, slave = pty.openpty()
    subprocess.run(["stty", "-echo"], stdin=slave, check=True, timeout=10)
    p = subprocess.Popen(["/bin/sh", "-c", script(nbytes).decode()], stdin=slave,
                         stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        n, dt = read_between(PtyReader(master), nbytes, 900)
    finally:
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        p.wait(60)
        os.close(master)
    if n != nbytes:
        raise SystemExit("local pty: %d bytes between the markers, not %d" % (n, nbytes))
    cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    return nbytes / MiB / dt, cpu


def through(a, srv, nbytes):
    """One session: (MiB/s, CPU seconds of agent, ncgrpcd and the CLI)."""
    c0 = (cpu_s(a.pid), cpu_s(srv.pid))
    p = subprocess.Popen([a.cli_path, "-s", srv.sock, "session", "catdev", "--shell"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    p.stdin.write(script(nbytes))
    p.stdin.close()
    n, dt = read_between(p.stdout, nbytes, 900)
    # The CLI's own CPU: read before it exits.
    try:
        cli = cpu_s(p.pid)
    except OSError:
        cli = float("nan")
    while p.stdout.read1(1 << 16):
        pass
    if p.wait(60) != 0:
        raise SystemExit("ncgrpc session exited with %d" % p.returncode)
    if n != nbytes:
        raise SystemExit("%d bytes between the markers, not %d" % (n, nbytes))
    return nbytes / MiB / dt, (cpu_s(a.pid) - c0[0], cpu_s(srv.pid) - c0[1], cli)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ncgrpcd", required=True)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--mib", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir")
    a = ap.parse_args()
    a.cli_path = os.path.abspath(a.cli)
    nbytes = a.mib * MiB

    work = a.workdir or tempfile.mkdtemp(prefix="ncgrpc-bench-cat-")
    os.makedirs(work, exist_ok=True)
    port = free_port()
    srv = Ncgrpcd(os.path.abspath(a.ncgrpcd), os.path.join(work, "srv"), port=port)
    os.makedirs(srv.workdir, exist_ok=True)
    with open(srv.devices_path, "w") as f:
        f.write(srvlib.registry_line("catdev", "s-catdev", ln=10, r=1, p=1) + "\n")
    os.chmod(srv.devices_path, 0o600)
    ag = None
    try:
        srv.start()
        ag = Agent(os.path.abspath(a.agent), os.path.join(work, "agent"))
        os.makedirs(ag.workdir, exist_ok=True)
        ag.configure([Client("c0", "catdev", "s-catdev", [Addr(port, cert_file=srv.cert)],
                             waittime=2)], ('shell "/bin/sh";',))
        ag.start()
        a.pid = ag.pid
        srvlib.wait_until(lambda: subprocess.run(
            [a.cli_path, "-s", srv.sock, "devices"], stdout=subprocess.PIPE,
            timeout=30).stdout.count(b"catdev") > 0, 30, "catdev connected")
        ours, local, cpu, lcpu = [], [], [], []
        for r in range(a.rounds):
            rate, c = through(a, srv, nbytes)
            ours.append(rate)
            cpu.append(c)
            rate, c = local_pty(nbytes)
            local.append(rate)
            lcpu.append(c)
            print("round %d: ncgrpc %.1f MiB/s, local pty %.1f MiB/s (%.2f)"
                  % (r + 1, ours[-1], local[-1], ours[-1] / local[-1]), flush=True)
        mib = nbytes / MiB
        print("shell cat of %d MiB, %d rounds, alternating:" % (a.mib, a.rounds))
        print("  agent -> ncgrpcd -> ncgrpc session: median %.1f MiB/s, best %.1f"
              % (statistics.median(ours), max(ours)))
        print("  local pty                         : median %.1f MiB/s, best %.1f"
              % (statistics.median(local), max(local)))
        print("  ours / local pty: median %.2f, best %.2f"
              % (statistics.median(ours) / statistics.median(local), max(ours) / max(local)))
        print("  CPU per MiB (median): agent %.2f ms, ncgrpcd %.2f ms, ncgrpc %.2f ms"
              % tuple(statistics.median(c[i] for c in cpu) * 1000 / mib for i in range(3)))
        print("  CPU per MiB of the local pty's reader (this script): %.2f ms"
              % (statistics.median(lcpu) * 1000 / mib))
    finally:
        if ag is not None:
            ag.stop()
        srv.stop()
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
