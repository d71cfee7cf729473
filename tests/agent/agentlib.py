"""Helpers of the ncgrpc-agent end-to-end tests: running the agent, writing
its configuration, reading its log, and inspecting its process.

Every wait is bounded; every process started here is stopped by stop()
(which the tests register as a cleanup), children included.

$NCGRPC_WRAPPER, when set, is a command prefix (split with shlex) put
before ncgrpc-agent, e.g. "valgrind --error-exitcode=99 ...".  The waits
here are then WRAPPER_TIME_SCALE times longer, and stop() raises
AssertionError, with the wrapper's report, unless the agent exits with 0
on SIGTERM (an agent that must be killed was never checked).

Shells run without the machine's rc files: an agent configured with
`shell "/bin/bash"`, or with no shell (root's login shell), gets bash
through bash_norc().
"""
import atexit
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

WRAPPER = shlex.split(os.environ.get("NCGRPC_WRAPPER", ""))
WRAPPER_ERROR_RC = 99    # valgrind --error-exitcode of the CTest label
WRAPPER_TIME_SCALE = 10
SCALE = WRAPPER_TIME_SCALE if WRAPPER else 1
_VG_LINE = re.compile(r"^==\d+== ")

LOG_RX = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z (\S+)\[(\d+)\] (\w+): (.*)$")


def free_port():
    """A loopback TCP port nothing listens on (bound, then released)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def conf_quote(text):
    """A configuration string literal (docs/configuration.md escapes)."""
    return '"' + (text.replace("\\", "\\\\").replace('"', '\\"')
                  .replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")) + '"'


class Addr:
    def __init__(self, port, host="127.0.0.1", cert_pem=None, cert_file=None):
        self.host, self.port = host, port
        self.cert_pem, self.cert_file = cert_pem, cert_file

    def render(self):
        s = "            address %s {\n                port %d;\n" % (self.host, self.port)
        if self.cert_file is not None:
            s += "                trusted-cert-file %s;\n" % conf_quote(self.cert_file)
        else:
            s += "                trusted-cert %s;\n" % conf_quote(self.cert_pem)
        return s + "            }\n"


class Client:
    def __init__(self, name, device_id, secret, addrs, waittime=2, strategy=None):
        self.name, self.device_id, self.secret = name, device_id, secret
        self.addrs, self.waittime, self.strategy = list(addrs), waittime, strategy

    def render(self):
        s = "    client %s {\n        device-id %s;\n        secret %s; ## SECRET-DATA\n" % (
            self.name, self.device_id, conf_quote(self.secret))
        if self.strategy:
            s += "        reconnect-strategy %s;\n" % self.strategy
        if self.waittime is not None:
            s += "        waittime %d;\n" % self.waittime
        s += "".join(a.render() for a in self.addrs)
        return s + "    }\n"


_BASH_NORC = []


def bash_norc():
    """The path of a "bash" that runs /bin/bash --norc --noprofile: bash as
    the tests mean it, interactive, but without root's rc files, which on
    a developer's or CI machine may hook in anything (a pyenv init, for
    one, waits 60 s on a lock that a shell killed during its start left
    behind)."""
    if not _BASH_NORC:
        d = tempfile.mkdtemp(prefix="ncgrpc-test-bash-")
        os.chmod(d, 0o755)
        atexit.register(shutil.rmtree, d, ignore_errors=True)
        path = os.path.join(d, "bash")
        with open(path, "w") as f:
            f.write('#!/bin/sh\nexec /bin/bash --norc --noprofile "$@"\n')
        os.chmod(path, 0o755)
        _BASH_NORC.append(path)
    return _BASH_NORC[0]


def render_conf(clients, log_file, agent_extra=()):
    lines = ["/* written by tests/agent */", "agent {",
             "    log-file %s;" % conf_quote(log_file)]
    extra = ['shell "%s";' % bash_norc() if x.strip() == 'shell "/bin/bash";' else x
             for x in agent_extra]
    if not any(x.lstrip().startswith("shell ") for x in extra):
        extra.append('shell "%s";' % bash_norc())
    lines += ["    %s" % x for x in extra]
    lines += ["}", "outbound-https {"]
    return "\n".join(lines) + "\n" + "".join(c.render() for c in clients) + "}\n"


class LogEntry:
    __slots__ = ("index", "ts", "level", "msg", "raw")

    def __init__(self, index, ts, level, msg, raw):
        self.index, self.ts, self.level, self.msg, self.raw = index, ts, level, msg, raw

    def __repr__(self):
        return self.raw


def _parse_ts(day, ms):
    t = time.strptime(day, "%Y-%m-%dT%H:%M:%S")
    import calendar
    return calendar.timegm(t) + int(ms) / 1000.0


class Agent:
    """One ncgrpc-agent process with its configuration and log in workdir."""

    def __init__(self, binary, workdir, via_symlink=False):
        self.binary = binary
        self.workdir = workdir
        self.log_path = os.path.join(workdir, "outbound_https.log")
        self.stdout_path = os.path.join(workdir, "agent.stdout")
        if via_symlink:
            # The agent watches the directory of the path it was given; a
            # symlink into another directory keeps edits invisible to the
            # watcher, so only SIGHUP reloads.
            real = os.path.join(workdir, "real")
            os.makedirs(real, exist_ok=True)
            os.makedirs(os.path.join(workdir, "link"), exist_ok=True)
            self.real_conf = os.path.join(real, "agent.conf")
            self.conf_path = os.path.join(workdir, "link", "agent.conf")
            os.symlink(self.real_conf, self.conf_path)
        else:
            self.conf_path = self.real_conf = os.path.join(workdir, "agent.conf")
        self.proc = None
        self.pid = None

    # ----- configuration -------------------------------------------------------
    def write_conf(self, text, atomic=True):
        if atomic:
            fd, tmp = tempfile.mkstemp(prefix=".agent.conf.", dir=os.path.dirname(self.real_conf))
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.real_conf)
        else:
            with open(self.real_conf, "w") as f:
                f.write(text)

    def configure(self, clients, agent_extra=(), atomic=True):
        self.write_conf(render_conf(clients, self.log_path, agent_extra), atomic)

    # ----- process -------------------------------------------------------------
    def start(self, debug=False):
        args = WRAPPER + [self.binary, "-f", self.conf_path]
        if debug:
            args.append("-d")
        self._out = open(self.stdout_path, "ab")
        # A variable sessions must not inherit (they get a clean environment).
        env = dict(os.environ, NCGRPC_TEST_MARK="leak-check")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._out, env=env,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     close_fds=True)
        self.pid = self.proc.pid
        self.wait_log(r"ncgrpc-agent \S+ starting", 10)
        return self

    def sighup(self):
        os.kill(self.pid, signal.SIGHUP)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL; kills leftover descendants too.  Returns the
        exit status, or None if it had to be killed.  Behind a wrapper,
        raises AssertionError unless the status is 0."""
        if self.proc is None:
            return None
        rc = None
        kids = descendants(self.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout * SCALE)
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
        if WRAPPER and rc != 0:
            self._wrapper_failed(rc)
        return rc

    def _wrapper_failed(self, rc):
        try:
            with open(self.stdout_path, "rb") as f:
                out = f.read().decode("utf-8", "replace").split("\n")
        except OSError:
            out = []
        report = [x for x in out if _VG_LINE.match(x)] or out[-80:]
        if rc == WRAPPER_ERROR_RC:
            what = "the wrapper (%s) reported errors (exit status %d)" % (
                " ".join(WRAPPER), rc)
        elif rc is None:
            what = "agent had to be killed after SIGTERM: the wrapper never reported"
        else:
            what = "agent exited with %s on SIGTERM, want 0" % rc
        raise AssertionError("%s:\n%s\nlog tail:\n%s"
                             % (what, "\n".join("    | " + x for x in report),
                                self.log_tail()))

    # ----- log ------------------------------------------------------------------
    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                raw = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return []
        out = []
        for i, line in enumerate(raw.split("\n")[:-1]):
            m = LOG_RX.match(line)
            if m:
                out.append(LogEntry(i, _parse_ts(m.group(1), m.group(2)), m.group(5),
                                    m.group(6), line))
            else:  # a NETCONF backend's stderr
                out.append(LogEntry(i, None, None, line, line))
        return out

    def mark(self):
        """Position in the log: later waits can look only after it."""
        return len(self.log())

    def log_tail(self, n=40):
        return "\n".join(e.raw for e in self.log()[-n:])

    def find(self, regex, start=0):
        rx = re.compile(regex)
        return [e for e in self.log()[start:] if e.level is not None and rx.search(e.msg)]

    def wait_log(self, regex, timeout, start=0, count=1):
        """Waits until count lines after start match regex; returns them."""
        timeout *= SCALE
        deadline = time.monotonic() + timeout
        while True:
            hits = self.find(regex, start)
            if len(hits) >= count:
                return hits[:count] if count > 1 else hits[0]
            if time.monotonic() > deadline:
                raise TimeoutError("agent log: %d/%d lines matching %r within %.1f s; "
                                   "log tail:\n%s" % (len(hits), count, regex, timeout,
                                                       self.log_tail()))
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("agent exited with %s; log tail:\n%s\nstdout: %s"
                                   % (self.proc.returncode, self.log_tail(),
                                      open(self.stdout_path, "rb").read()[-2000:]))
            time.sleep(0.05)

    # ----- inspection ------------------------------------------------------------
    def fd_count(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def fds(self):
        out = {}
        for fd in os.listdir("/proc/%d/fd" % self.pid):
            try:
                out[int(fd)] = os.readlink("/proc/%d/fd/%s" % (self.pid, fd))
            except OSError:
                pass
        return out

    def children(self):
        return children(self.pid)

    def zombies(self):
        return [(pid, st) for pid, st in children(self.pid) if st == "Z"]

    def rss_kib(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return None


def _stat(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    # pid (comm) state ppid ...
    rest = s[s.rindex(")") + 2:].split()
    return rest[0], int(rest[1])


def children(ppid):
    """[(pid, state)] of the direct children of ppid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = _stat(int(d))
        if st is not None and st[1] == ppid:
            out.append((int(d), st[0]))
    return out


def descendants(ppid):
    out, todo = [], [ppid]
    while todo:
        p = todo.pop()
        for c, _ in children(p):
            out.append(c)
            todo.append(c)
    return out


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def uid_of(user):
    return pwd.getpwnam(user).pw_uid


# ----- shell session helpers ------------------------------------------------------

def sh_prepare(sess, timeout=15):
    """Waits for the first prompt and makes the pty pass output unchanged
    (no echo, no \\n -> \\r\\n)."""
    sess.read_until(re.compile(r"[$#] $"), timeout)
    tok = uuid.uuid4().hex[:12]
    sess.send_csh("stty -echo -onlcr; printf '<%%s>\\n' R%s" % tok)
    sess.read_until("<R%s>\n" % tok, timeout)


def sh_run(sess, cmd, timeout=20):
    """Runs cmd in a prepared shell session; returns exactly its output.

    The output is framed by markers the echo of the line cannot contain
    ('<%s>' in the line, '<B...>' in the output)."""
    tok = uuid.uuid4().hex[:12]
    sess.send_csh("printf '<%%s>\\n' B%s; %s; printf '\\n<%%s>\\n' E%s" % (tok, cmd, tok))
    text = sess.read_until("\n<E%s>\n" % tok, timeout)
    begin = "<B%s>\n" % tok
    i = text.find(begin)
    if i < 0:
        raise AssertionError("begin marker missing in %r" % text[-500:])
    return text[i + len(begin):-len("\n<E%s>\n" % tok)]
