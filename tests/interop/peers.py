"""Starting, watching and stopping test peers, with every wait bounded.

Used by run_interop.py and bench/bench_grpc.py.  Children get
PR_SET_PDEATHSIG(SIGKILL), so they die with us even if we are killed hard
(CTest timeout), and Server.stop() terminates, waits, and kills if needed.

$NCGRPC_WRAPPER, when set, is a command prefix (split with shlex) put
before the C peers (ncgrpc-testd, ncgrpc-testc), never before the Python
ones: e.g. "valgrind --error-exitcode=99 ...".  Callers scale their waits
by time_scale() then, and treat exit status WRAPPER_ERROR_RC (99) of a
wrapped peer as the wrapper's verdict (see valgrind_report()).
"""
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PYSERVER = os.path.join(HERE, "pyserver.py")
PYCLIENT = os.path.join(HERE, "pyclient.py")

def no_orphan(argv):
    """argv run so that the child is killed when this harness dies:
    setpriv(1) sets PR_SET_PDEATHSIG and execs argv.  No Python code runs
    in the forked child (a preexec_fn did: with grpcio threads running in
    the harness, that can die on grpcio's state)."""
    return ["/usr/bin/setpriv", "--pdeathsig", "KILL", "--"] + list(argv)


def child_env(stub_dir=None):
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env.setdefault("GRPC_VERBOSITY", "ERROR")
    if stub_dir:
        env["NCGRPC_STUB_DIR"] = os.path.abspath(stub_dir)
    return env


WRAPPER_ERROR_RC = 99     # valgrind --error-exitcode of the CTest label
WRAPPER_TIME_SCALE = 10   # waits are this much longer under a wrapper
_VG_LINE = re.compile(r"^==\d+== ")


def wrapper():
    """The command prefix from $NCGRPC_WRAPPER, as a list (may be empty)."""
    return shlex.split(os.environ.get("NCGRPC_WRAPPER", ""))


def time_scale():
    """Factor for timeouts: WRAPPER_TIME_SCALE under a wrapper, else 1."""
    return WRAPPER_TIME_SCALE if wrapper() else 1


def valgrind_report(lines):
    """The wrapper's (valgrind's) lines among a wrapped peer's stderr."""
    return [x for x in lines if _VG_LINE.match(x)]


def server_command(kind, testd=None, python=None):
    """argv prefix of a server peer: kind 'py' (pyserver) or 'c' (testd,
    behind $NCGRPC_WRAPPER if set)."""
    if kind == "py":
        return [python or sys.executable, PYSERVER]
    return wrapper() + [_c_binary(testd, "ncgrpc-testd")]


def client_command(kind, testc=None, python=None):
    """argv prefix of a client peer: kind 'py' (pyclient) or 'c' (testc,
    behind $NCGRPC_WRAPPER if set)."""
    if kind == "py":
        return [python or sys.executable, PYCLIENT]
    return wrapper() + [_c_binary(testc, "ncgrpc-testc")]


def _c_binary(path, what):
    if not path or not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise PeerError("%s not found or not executable: %r" % (what, path))
    return os.path.abspath(path)


class PeerError(Exception):
    pass


class Server:
    """A running server peer whose stdout is collected line by line."""

    LISTEN_RE = re.compile(r"^listening (\S+):(\d+)$")

    def __init__(self, argv, env, name="server"):
        self.name = name
        self.argv = argv
        self.lines = []
        self.times = []         # time.monotonic() at which each line arrived
        self.stderr = []
        self._cond = threading.Condition()
        self._eof = False
        self.proc = subprocess.Popen(no_orphan(argv), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self._t_out = threading.Thread(target=self._read_stdout, daemon=True)
        self._t_err = threading.Thread(target=self._read_stderr, daemon=True)
        self._t_out.start()
        self._t_err.start()
        self.host = None
        self.port = None
        self.killed = False

    def _read_stdout(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
            with self._cond:
                self.lines.append(line)
                self.times.append(time.monotonic())
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self):
        for raw in self.proc.stderr:
            self.stderr.append(raw.decode("utf-8", "backslashreplace").rstrip("\r\n"))

    def wait_lines(self, predicate, timeout):
        """Waits until predicate(lines) is true or timeout; returns its value."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                v = predicate(self.lines)
                if v or self._eof:
                    return v
                left = end - time.monotonic()
                if left <= 0:
                    return v
                self._cond.wait(left)

    def wait_listening(self, timeout=20.0):
        def first_line(lines):
            return lines[0] if lines else None
        line = self.wait_lines(first_line, timeout)
        if line is None:
            rc = self.proc.poll()
            raise PeerError("%s printed no listening line within %.0f s (exit %s)\n%s"
                            % (self.name, timeout, rc, self.describe()))
        m = self.LISTEN_RE.match(line)
        if not m:
            raise PeerError("%s: first line is not 'listening HOST:PORT': %r\n%s"
                            % (self.name, line, self.describe()))
        self.host, self.port = m.group(1), int(m.group(2))
        return self.host, self.port

    def events(self):
        """Lines after the listening line."""
        with self._cond:
            return list(self.lines[1:])

    def timed_events(self):
        """(arrival time, line) for the lines after the listening line."""
        with self._cond:
            return list(zip(self.times[1:], self.lines[1:]))

    def describe(self):
        return ("  argv: %s\n  stdout:\n%s\n  stderr:\n%s"
                % (" ".join(self.argv), _indent(self.lines), _indent(self.stderr[-40:])))

    def stop(self, grace=5.0):
        """Terminates the server and waits for it; kills it if it lingers.
        Returns the exit status (-9 when it had to be killed)."""
        self.killed = False
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait(5)
        self._t_out.join(2)
        self._t_err.join(2)
        return self.proc.returncode


def _indent(lines):
    return "\n".join("    | " + line for line in lines) if lines else "    (none)"


class ClientResult:
    def __init__(self, argv, rc, stdout, stderr, seconds, timed_out):
        self.argv = argv
        self.rc = rc
        self.lines = stdout.splitlines()
        self.stderr = stderr.splitlines()
        self.seconds = seconds
        self.timed_out = timed_out

    def describe(self):
        return ("  argv: %s\n  exit: %s%s after %.2f s\n  stdout:\n%s\n  stderr:\n%s"
                % (" ".join(self.argv), self.rc, " (TIMED OUT, killed)" if self.timed_out else "",
                   self.seconds, _indent(self.lines), _indent(self.stderr[-40:])))


def run_client(argv, env, timeout):
    """Runs a client to completion (killed after timeout seconds)."""
    start = time.monotonic()
    proc = subprocess.Popen(no_orphan(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    return ClientResult(argv, proc.returncode, out.decode("utf-8", "backslashreplace"),
                        err.decode("utf-8", "backslashreplace"),
                        time.monotonic() - start, timed_out)


def install_exit_on_signals():
    """SIGTERM/SIGINT/SIGHUP raise SystemExit so finally blocks reap children."""
    def handler(signum, _frame):
        raise SystemExit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, handler)
