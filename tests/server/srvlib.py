"""Helpers of the ncgrpcd end-to-end tests: running ncgrpcd, ncgrpc-agent and
yuma123 netconfd, writing their configurations and the device registry, and
reading logs.

Every child gets PR_SET_PDEATHSIG(SIGKILL) (it dies with the test process
even when CTest kills us) and is stopped by the stop() methods, which the
tests register as cleanups.  Every wait is bounded.  Children are started
from the main thread only: PDEATHSIG fires when the forking *thread* exits.
"""
import base64
import hashlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "agent"))
from agentlib import (Addr, Client, children, comm, conf_quote,  # noqa: E402,F401
                      descendants, free_port, render_conf)

LOG_RX = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+)\[(\d+)\] (\w+): (.*)$")

SETPRIV = "/usr/bin/setpriv"  # util-linux, essential in Debian


def no_orphan(argv):
    """argv run so that the child is killed when this harness dies.

    setpriv(1) sets PR_SET_PDEATHSIG and execs argv.  It replaces a
    preexec_fn that did the same: Python code in the forked child of a
    harness whose grpcio threads run can die on grpcio's state (an absl
    mutex check failed there once), and with a preexec_fn subprocess
    cannot use vfork()."""
    return [SETPRIV, "--pdeathsig", "KILL", "--"] + list(argv)


def registry_line(device_id, secret, ln=10, r=8, p=1):
    """A device registry line (src/nms/registry.h) with a cheap scrypt cost."""
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    salt = os.urandom(16)
    h = hashlib.scrypt(secret, salt=salt, n=1 << ln, r=r, p=p, dklen=32, maxmem=64 << 20)
    return "%s $scrypt$ln=%d,r=%d,p=%d$%s$%s" % (
        device_id, ln, r, p, base64.b64encode(salt).decode(), base64.b64encode(h).decode())


def write_atomic(path, text, mode=0o600):
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                               dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def wait_until(pred, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError("%s: not within %.1f s" % (what, timeout))
        time.sleep(interval)


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return False
    return st[st.rindex(")") + 2] != "Z"


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


class LogFile:
    """A log written by one of our children, read from a mark on."""

    def __init__(self, path):
        self.path = path

    def lines(self):
        try:
            with open(self.path, "rb") as f:
                return f.read().decode("utf-8", "replace").split("\n")[:-1]
        except FileNotFoundError:
            return []

    def text(self):
        try:
            with open(self.path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def mark(self):
        return len(self.lines())

    def tail(self, n=40):
        return "\n".join(self.lines()[-n:])

    def find(self, regex, start=0):
        rx = re.compile(regex)
        return [ln for ln in self.lines()[start:] if rx.search(ln)]

    def wait(self, regex, timeout, start=0, count=1, alive=None):
        deadline = time.monotonic() + timeout
        while True:
            hits = self.find(regex, start)
            if len(hits) >= count:
                return hits[0] if count == 1 else hits[:count]
            if time.monotonic() > deadline:
                raise TimeoutError("%s: %d/%d lines matching %r within %.1f s; tail:\n%s"
                                   % (self.path, len(hits), count, regex, timeout, self.tail()))
            if alive is not None and not alive():
                raise RuntimeError("%s: process died; tail:\n%s" % (self.path, self.tail()))
            time.sleep(0.05)


# $NCGRPC_SERVER_WRAPPER, when set, is a command prefix (split with shlex)
# for ncgrpcd, such as valgrind with --error-exitcode=99: stop() raises when
# ncgrpcd exits with that status (the CTest label "valgrind").
SERVER_WRAPPER = shlex.split(os.environ.get("NCGRPC_SERVER_WRAPPER", ""))
SERVER_WRAPPER_ERROR_RC = 99


class Ncgrpcd:
    """One ncgrpcd with its configuration, registry, certificate and logs in workdir."""

    def __init__(self, binary, workdir, port=None, extra=(), listen=None):
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.listen = listen or ["127.0.0.1:%d" % self.port]
        self.conf_path = os.path.join(workdir, "ncgrpcd.conf")
        self.cert = os.path.join(workdir, "server.crt")
        self.key = os.path.join(workdir, "server.key")
        self.devices_path = os.path.join(workdir, "devices")
        self.sock = os.path.join(workdir, "op.sock")
        self.log = LogFile(os.path.join(workdir, "ncgrpcd.log"))
        self.audit = LogFile(os.path.join(workdir, "audit.log"))
        self.stdout_path = os.path.join(workdir, "ncgrpcd.stdout")
        self.extra = list(extra)
        self.devices = {}
        self.proc = None
        self.pid = None

    def write_conf(self):
        lines = ["# written by tests/server"]
        lines += ["listen %s" % x for x in self.listen]
        lines += ["certificate %s" % self.cert, "key %s" % self.key,
                  "devices %s" % self.devices_path, "operator-socket %s" % self.sock,
                  "log-file %s" % self.log.path, "audit-log %s" % self.audit.path,
                  "name 127.0.0.1", "name localhost"]
        lines += self.extra
        write_atomic(self.conf_path, "\n".join(lines) + "\n", 0o644)

    def write_registry(self):
        text = "# ncgrpc device registry (tests/server)\n" + "".join(
            line + "\n" for line in self.devices.values())
        write_atomic(self.devices_path, text)

    def add_device(self, device_id, secret, write=True):
        self.devices[device_id] = registry_line(device_id, secret)
        if write:
            self.write_registry()

    def start(self, debug=False, timeout=20):
        self.write_conf()
        if not os.path.exists(self.devices_path):
            self.write_registry()
        argv = SERVER_WRAPPER + [self.binary, "-f", self.conf_path]
        if debug:
            argv.append("-d")
        self._out = open(self.stdout_path, "ab")
        mark = self.log.mark()  # a restart must not take the last run's line
        self.proc = subprocess.Popen(no_orphan(argv), stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT,
                                     close_fds=True)
        self.pid = self.proc.pid
        self.log.wait(r"ncgrpcd \S+ started", timeout, start=mark, alive=self.alive)
        wait_until(lambda: os.path.exists(self.sock), timeout, "operator socket")
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        os.kill(self.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Signals, waits, kills if needed.  Returns the exit status, or None
        when it had to be killed."""
        if self.proc is None:
            return None
        rc = None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        else:
            rc = self.proc.returncode
        self._out.close()
        self.proc = None
        if SERVER_WRAPPER and rc == SERVER_WRAPPER_ERROR_RC:
            raise AssertionError("ncgrpcd under %s found errors:\n%s"
                                 % (SERVER_WRAPPER[0], self.stdout()[-6000:]))
        return rc

    def stdout(self):
        try:
            with open(self.stdout_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def cert_pem(self):
        with open(self.cert, "rb") as f:
            return f.read()

    def addr(self, host="127.0.0.1"):
        return Addr(self.port, host, cert_file=self.cert)

    def target(self):
        return "127.0.0.1:%d" % self.port


class Agent:
    """One ncgrpc-agent, like tests/agent/agentlib.Agent but dying with us."""

    def __init__(self, binary, workdir):
        self.binary = binary
        self.workdir = workdir
        self.conf_path = os.path.join(workdir, "agent.conf")
        self.log = LogFile(os.path.join(workdir, "outbound_https.log"))
        self.stdout_path = os.path.join(workdir, "agent.stdout")
        self.proc = None
        self.pid = None

    def configure(self, clients, agent_extra=('shell "/bin/sh";',)):
        write_atomic(self.conf_path, render_conf(clients, self.log.path, agent_extra))

    def start(self, debug=False):
        argv = [self.binary, "-f", self.conf_path] + (["-d"] if debug else [])
        self._out = open(self.stdout_path, "ab")
        self.proc = subprocess.Popen(no_orphan(argv), stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT,
                                     close_fds=True)
        self.pid = self.proc.pid
        self.log.wait(r"ncgrpc-agent \S+ starting", 10, alive=self.alive)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL the agent and its session processes (a device that dies)."""
        kids = descendants(self.pid)
        self.proc.kill()
        self.proc.wait(10)
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def stop(self, timeout=10):
        if self.proc is None:
            return None
        rc = None
        kids = descendants(self.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        else:
            rc = self.proc.returncode
        for pid in kids + descendants(self.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self._out.close()
        self.proc = None
        return rc


class Netconfd:
    """yuma123 netconfd on its own ncxserver socket, started by the tests."""

    NETCONFD = "/usr/sbin/netconfd"
    SUBSYSTEM = "/usr/sbin/netconf-subsystem"

    @classmethod
    def available(cls):
        return all(os.access(p, os.X_OK) for p in (cls.NETCONFD, cls.SUBSYSTEM))

    def __init__(self, workdir):
        self.dir = workdir
        self.sock = os.path.join(workdir, "ncxserver.sock")
        self.log = os.path.join(workdir, "netconfd.log")
        self.errlog = os.path.join(workdir, "netconfd.stderr")
        self.proc = None

    def start(self, timeout=20, attempts=3):
        """Starts netconfd; a start that dies at once is retried (it is the
        tests' peer, not what they test), with its log shown on stderr."""
        for attempt in range(attempts):
            try:
                return self._start(timeout)
            except RuntimeError as e:
                tail = ""
                for path in (self.log, self.errlog):
                    try:
                        with open(path, errors="replace") as f:
                            tail += f.read()[-1000:]
                    except OSError:
                        tail += "(no %s)" % os.path.basename(path)
                sys.stderr.write("netconfd start %d of %d failed: %s; its log:\n%s\n"
                                 % (attempt + 1, attempts, e, tail))
                if attempt + 1 == attempts:
                    raise RuntimeError("%s; log: %s" % (e, tail[-300:]))
                for p in (self.sock, self.log):
                    try:
                        os.unlink(p)
                    except OSError:
                        pass
                time.sleep(0.5)

    def _start(self, timeout):
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": self.dir, "USER": "root",
               "LANG": "C.UTF-8"}
        with open(self.errlog, "wb") as err:
            self.proc = subprocess.Popen(
                no_orphan([self.NETCONFD, "--ncxserver-sockname=" + self.sock,
                           "--superuser=root", "--no-startup", "--config=/dev/null",
                           "--home=" + self.dir, "--log=" + self.log, "--log-level=info",
                           "--hello-timeout=0", "--idle-timeout=0"]),
                cwd=self.dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err)
        wait_until(lambda: os.path.exists(self.sock) or self.proc.poll() is not None,
                   timeout, "netconfd socket")
        if self.proc.poll() is not None:
            raise RuntimeError("netconfd exited with %s" % self.proc.returncode)
        return self

    def command(self):
        return "%s --ncxserver-sockname=830@%s" % (self.SUBSYSTEM, self.sock)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


def raw_tls_connect(port, alpn=None, cafile=None, timeout=5):
    """A TLS client socket to 127.0.0.1:port (no certificate check unless cafile)."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(s, server_hostname="127.0.0.1")
