#!/usr/bin/python3
"""Benchmarks of ncgrpc-agent (not part of ctest).

    bench_agent.py --agent PATH [--mib 200] [--clients 10] [--stub-dir DIR]

Prints:
  - the binary size;
  - the agent's idle RSS with 1 and with --clients clients connected and waiting
    (long-poll Initialize) on a grpcio test NMS, and with 1 client, by
    mapping (the agent's heap, libcrypto, libc, ...), shared or private;
  - the throughput of one shell session streaming MIB MiB of output end to
    end on loopback (command on a pty -> agent -> TLS/HTTP/2 -> grpcio NMS),
    next to two baselines measured in the same run:
      * "local pipe": the same command's output read straight from a pipe,
        i.e. what the generator and a Python reader manage without the agent;
      * "local pty": the same, through a pseudo-terminal (the agent's shell
        sessions run on one);
      * "grpcio device": the same number of bytes sent by a Python grpcio
        client playing the device (same RPCs, 16 KiB messages, same TLS,
        same NMS), so agent/grpcio is a like-for-like ratio;
    and the agent's CPU time per MiB streamed, which a busy machine
    changes far less than it changes the rates.
"""
import sys

sys.dont_write_bytecode = True

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "agent"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "interop"))

# grpcio must not run pthread_atfork handlers: the harness forks (subprocess)
# while its threads run, and the handler once waited forever in fork().
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import grpc  # noqa: E402

from agentlib import Addr, Agent, Client, sh_prepare  # noqa: E402
from nms import NMS  # noqa: E402
import ncgrpc_stubs  # noqa: E402

MiB = 1024 * 1024
END = "<BENCH-END>"


def drain(sess, marker, timeout):
    """Consumes output up to and including marker; returns the characters
    before it.  Keeps memory flat however long the stream."""
    total = 0
    keep = len(marker) - 1

    def take(text):
        i = text.find(marker)
        if i >= 0:
            return i + len(marker)
        n = len(text) - keep
        return n if n > 0 else None

    deadline = time.monotonic() + timeout
    while True:
        chunk = sess.read_until(take, max(0.1, deadline - time.monotonic()))
        if chunk.endswith(marker):
            return total + len(chunk) - len(marker)
        total += len(chunk)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rss_by_mapping(pid):
    """KiB of RSS per mapped file ("[heap]", "[anon]", ...), largest first,
    and how much of it is private (not shared with other processes)."""
    out = {}
    name = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            head = line.split()
            if not line[0].isupper() or ":" not in head[0]:
                name = os.path.basename(head[5]) if len(head) > 5 else "[anon]"
                out.setdefault(name, [0, 0])
            elif head[0] == "Rss:":
                out[name][0] += int(head[1])
            elif head[0] in ("Private_Clean:", "Private_Dirty:"):
                out[name][1] += int(head[1])
    return sorted(out.items(), key=lambda kv: -kv[1][0])


def cpu_s(pid):
    """User plus system CPU seconds of pid so far (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gen_cmd(nbytes):
    # No newline in the data: the pty's onlcr cannot change it.
    return "head -c %d /dev/zero | tr '\\0' x" % nbytes


def bench_local(nbytes):
    t0 = time.monotonic()
    p = subprocess.Popen(["/bin/sh", "-c", gen_cmd(nbytes)], stdout=subprocess.PIPE)
    n = 0
    while True:
        b = p.stdout.read1(1 << 16)
        if not b:
            break
        n += len(b)
    p.wait()
    dt = time.monotonic() - t0
    assert n == nbytes, n
    return dt


def bench_local_pty(nbytes):
    """The same command on a pseudo-terminal, read locally: the pty's share."""
    import pty
    master, slave = pty.openpty()
    subprocess.run(["stty", "-onlcr", "-echo"], stdin=slave, check=True, timeout=10)
    t0 = time.monotonic()
    p = subprocess.Popen(["/bin/sh", "-c", gen_cmd(nbytes)], stdin=slave, stdout=slave,
                         stderr=slave, start_new_session=True)
    os.close(slave)
    n = 0
    try:
        while n < nbytes:
            try:
                b = os.read(master, 1 << 16)
            except OSError:  # EIO: the slave side is closed
                break
            if not b:
                break
            n += len(b)
    finally:
        p.wait()
        os.close(master)
    dt = time.monotonic() - t0
    assert n == nbytes, n
    return dt


def bench_grpcio_device(nms, certs, nbytes, pb):
    """A Python device: Initialize, then CommandGet streaming nbytes."""
    with open(os.path.join(certs, "ca.pem"), "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    chan = grpc.secure_channel("127.0.0.1:%d" % nms.port, creds)
    init = chan.unary_unary(ncgrpc_stubs.METHOD_INITIALIZE,
                            request_serializer=pb.NcgrpcInitializeRequest.SerializeToString,
                            response_deserializer=pb.NcgrpcInitializeResponse.FromString)
    cmdget = chan.stream_stream(ncgrpc_stubs.METHOD_COMMANDGET,
                                request_serializer=pb.NcgrpcCommandGetRequest.SerializeToString,
                                response_deserializer=pb.NcgrpcCommandGetResponse.FromString)
    result = {}

    def device():
        _, call = init.with_call(pb.NcgrpcInitializeRequest(instance_id=1, device_id="pydev",
                                                             secret_key="k"), timeout=60)
        md = [(k, v) for k, v in call.trailing_metadata() if not k.startswith("grpc-")]
        block = "x" * (16 * 1024)

        def requests():
            sent = 0
            while sent < nbytes:
                n = min(len(block), nbytes - sent)
                yield pb.NcgrpcCommandGetRequest(message=block[:n])
                sent += n
            yield pb.NcgrpcCommandGetRequest(message=END)

        for _ in cmdget(requests(), metadata=md, timeout=600):
            pass
        result["done"] = True

    t = threading.Thread(target=device, daemon=True)
    t.start()
    sess = nms.open_session("pydev", "csh", 30)
    t0 = time.monotonic()
    n = drain(sess, END, 600)
    dt = time.monotonic() - t0
    sess.close()
    t.join(30)
    chan.close()
    assert n == nbytes, (n, nbytes)
    return dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", required=True)
    ap.add_argument("--mib", type=int, default=200)
    ap.add_argument("--clients", type=int, default=10,
                    help="the second idle measure's clients (the first has 1)")
    ap.add_argument("--stub-dir")
    args = ap.parse_args()
    nbytes = args.mib * MiB

    tmp = tempfile.mkdtemp(prefix="bench-agent-")
    certs = os.path.join(tmp, "certs")
    subprocess.run([sys.executable, os.path.join(HERE, "..", "tests", "interop", "mkcerts.py"),
                    certs], check=True, timeout=60)
    with open(os.path.join(certs, "server.pem"), "rb") as f:
        cert = f.read()
    with open(os.path.join(certs, "server.key"), "rb") as f:
        key = f.read()
    if args.clients < 2:
        ap.error("--clients must be at least 2")
    secrets = {"d%d" % i: "k" for i in range(args.clients)}
    secrets["pydev"] = "k"
    nms = NMS(cert, key, secrets, stub_dir=args.stub_dir).start()
    agents = []
    try:
        size = os.path.getsize(args.agent)
        print("binary size: %d bytes (%.0f KiB) %s" % (size, size / 1024.0, args.agent))
        try:
            out = subprocess.run(["size", args.agent], stdout=subprocess.PIPE,
                                 timeout=10).stdout.decode().splitlines()
            print("  " + "\n  ".join(out))
        except OSError:
            pass

        def start_agent(n, name):
            d = os.path.join(tmp, name)
            os.makedirs(d)
            a = Agent(args.agent, d)
            a.configure([Client("c%d" % i, "d%d" % i, "k",
                                [Addr(nms.port, cert_file=os.path.join(certs, "ca.pem"))],
                                waittime=2) for i in range(n)],
                        ['shell "/bin/sh";'])
            agents.append(a)
            return a.start()

        for n in (1, args.clients):
            a = start_agent(n, "idle%d" % n)
            nms.wait_for(lambda: len({r.device_id for r in nms.waiting()
                                      if r.device_id in secrets}) >= n, 30,
                         "%d waiting clients" % n)
            time.sleep(1.0)
            print("idle RSS, %2d client%s waiting: %d KiB" % (n, "" if n == 1 else "s",
                                                             rss_kib(a.pid)))
            if n == 1:
                print("  by mapping (KiB of RSS, of which private):")
                for name, (rss, priv) in rss_by_mapping(a.pid)[:8]:
                    print("    %-28s %6d %6d" % (name, rss, priv))
            a.stop()
            agents.remove(a)
            nms.wait_for(lambda: not nms.waiting(), 30, "old waits to end")

        # Throughput through the agent.
        a = start_agent(1, "stream")
        sess = nms.open_session("d0", "csh", 30)
        sh_prepare(sess)
        rss0 = rss_kib(a.pid)
        peak = [rss0]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.1):
                try:
                    peak[0] = max(peak[0], rss_kib(a.pid))
                except OSError:
                    return

        threading.Thread(target=sample, daemon=True).start()
        t0 = time.monotonic()
        cpu0 = cpu_s(a.pid)
        sess.send_csh("printf '<%%s>' BENCH-START; %s; printf '%s'" % (gen_cmd(nbytes), END))
        drain(sess, "<BENCH-START>", 60)  # the prompt and the like
        n = drain(sess, END, 900)
        dt_agent = time.monotonic() - t0
        cpu_agent = cpu_s(a.pid) - cpu0
        stop.set()
        assert n == nbytes, (n, nbytes)
        sess.send_csh("exit")
        sess.read_all_until_end(30)
        a.stop()
        agents.remove(a)

        dt_local = bench_local(nbytes)
        dt_pty = bench_local_pty(nbytes)
        pb = ncgrpc_stubs.load(args.stub_dir)
        dt_py = bench_grpcio_device(nms, certs, nbytes, pb)

        def rate(dt):
            return nbytes / MiB / dt

        print("shell stream of %d MiB, loopback:" % args.mib)
        print("  ncgrpc-agent      : %7.1f MiB/s  (%.2f s; agent RSS %d KiB -> peak %d KiB)"
              % (rate(dt_agent), dt_agent, rss0, peak[0]))
        # CPU time does not depend on what else the machine runs, as rates do.
        print("  agent CPU         : %7.2f ms/MiB (%.2f s of user+system time)"
              % (cpu_agent * 1000 / (nbytes / MiB), cpu_agent))
        print("  grpcio device     : %7.1f MiB/s  (%.2f s)" % (rate(dt_py), dt_py))
        print("  local pipe        : %7.1f MiB/s  (%.2f s)" % (rate(dt_local), dt_local))
        print("  local pty         : %7.1f MiB/s  (%.2f s)" % (rate(dt_pty), dt_pty))
        print("  agent / grpcio device = %.2f; agent / local pipe = %.2f"
              % (rate(dt_agent) / rate(dt_py), rate(dt_agent) / rate(dt_local)))
        print("  (the NMS is Python grpcio in every case, and often the bottleneck)")
    finally:
        for a in agents:
            a.stop()
        nms.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
