#!/usr/bin/python3
"""Throughput of ncgrpc's test peers against grpcio's, same workload, one run.

    bench_grpc.py --build BUILD_DIR [--seconds S] [--size BYTES] [--python PY]

Runs, over TLS on loopback, for each implementation (ours: ncgrpc-testc ->
ncgrpc-testd; grpcio: pyclient.py -> pyserver.py):
  bench-stream S SIZE   one CommandGet, SIZE-byte messages, 16 in flight
  bench-unary S         ServerStatusGet calls one after another
and prints a table with both figures, the MiB the stream run moved per CPU
second of client and server together (robust on a busy machine, where the
rates are not), and the ratio ours/grpcio.
Exit status: 0 done, 1 a run failed, 2 our binaries are not built (the grpcio
column is still measured).  Not part of ctest.
"""
import sys

sys.dont_write_bytecode = True

import argparse  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
INTEROP = os.path.normpath(os.path.join(HERE, "..", "tests", "interop"))
sys.path.insert(0, INTEROP)
import peers  # noqa: E402

STREAM_RE = re.compile(r"bench-stream messages=(\d+) bytes=(\d+) seconds=([0-9.]+) "
                       r"mib_per_s=([0-9.]+)")
UNARY_RE = re.compile(r"bench-unary calls=(\d+) seconds=([0-9.]+) calls_per_s=([0-9.]+)")


def proc_cpu(pid):
    """CPU seconds (user + system, all threads) a live process has used."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); fields[0] is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(label, server_argv, client_argv, certs, env, seconds, size):
    """Returns {'stream': MiB/s, 'unary': calls/s, 'cpu': MiB per CPU
    second of both processes in the stream run} (None where a run failed).
    The CPU figure holds up on a busy machine, where the rate does not:
    a process waiting for a core uses no CPU."""
    res = {"stream": None, "unary": None, "cpu": None}
    server = peers.Server(server_argv + [
        "--listen", "127.0.0.1:0",
        "--cert", os.path.join(certs, "server.pem"),
        "--key", os.path.join(certs, "server.key")], env, name=label + " server")
    try:
        _, port = server.wait_listening(30)
        base = client_argv + ["--connect", "127.0.0.1:%d" % port,
                              "--ca", os.path.join(certs, "ca.pem")]
        for key, args, rx, col in (
                ("stream", ["bench-stream", str(seconds), str(size)], STREAM_RE, 4),
                ("unary", ["bench-unary", str(seconds)], UNARY_RE, 3)):
            cpu0 = proc_cpu(server.proc.pid) + children_cpu()
            r = peers.run_client(base + args, env, seconds + 60)
            cpu = proc_cpu(server.proc.pid) + children_cpu() - cpu0
            m = rx.fullmatch(r.lines[0]) if r.rc == 0 and r.lines else None
            if m is None:
                sys.stderr.write("%s %s failed:\n%s\n" % (label, args[0], r.describe()))
                continue
            res[key] = float(m.group(col))
            if key == "stream" and cpu > 0:
                res["cpu"] = int(m.group(2)) / (1024.0 * 1024.0) / cpu
            sys.stderr.write("%-7s %s\n" % (label, r.lines[0]))
    except peers.PeerError as e:
        sys.stderr.write("%s: %s\n" % (label, e))
    finally:
        server.stop()
    return res


def fmt(v):
    return "n/a" if v is None else ("%.1f" % v)


def ratio(a, b):
    return "n/a" if a is None or b is None or b == 0 else "%.2fx" % (a / b)


def main():
    p = argparse.ArgumentParser(prog="bench_grpc")
    p.add_argument("--build", required=True, help="CMake build directory")
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--size", type=int, default=65536)
    p.add_argument("--python", default="/usr/bin/python3")
    opts = p.parse_args()
    peers.install_exit_on_signals()

    testd = os.path.join(opts.build, "src", "test", "ncgrpc-testd")
    testc = os.path.join(opts.build, "src", "test", "ncgrpc-testc")
    work = tempfile.mkdtemp(prefix="ncgrpc-bench-")
    try:
        certs = os.path.join(work, "certs")
        subprocess.run([opts.python, os.path.join(INTEROP, "mkcerts.py"), certs],
                       check=True, timeout=60)
        env = peers.child_env(os.path.join(work, "pystubs"))

        ours = {"stream": None, "unary": None, "cpu": None}
        have_ours = all(os.path.isfile(x) and os.access(x, os.X_OK) for x in (testd, testc))
        if have_ours:
            ours = measure("ours", [testd], [testc], certs, env, opts.seconds, opts.size)
        else:
            sys.stderr.write("bench: %s or %s is not built; 'ours' is n/a\n" % (testd, testc))
        grpcio = measure("grpcio", peers.server_command("py", python=opts.python),
                         peers.client_command("py", python=opts.python),
                         certs, env, opts.seconds, opts.size)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [("bidi stream %d B msgs, MiB/s" % opts.size, "stream"),
            ("stream MiB per CPU second", "cpu"),
            ("unary round trips, calls/s", "unary")]
    print("%-32s %12s %12s %12s" % ("workload (%d s, TLS, loopback)" % opts.seconds,
                                     "ours", "grpcio", "ours/grpcio"))
    for title, key in rows:
        print("%-32s %12s %12s %12s" % (title, fmt(ours[key]), fmt(grpcio[key]),
                                         ratio(ours[key], grpcio[key])))
    if not have_ours:
        return 2
    if None in ours.values() or None in grpcio.values():
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
