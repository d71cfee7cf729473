"""End-to-end tests of ncgrpc-sshd, the SSH front door: unchanged SSH and
NETCONF clients (python3-ncclient, OpenSSH's ssh, yangcli, paramiko) reach
yuma123's netconfd and /bin/sh behind ncgrpc-agent, through ncgrpcd.

    test_sshd.py --ncgrpcd PATH --agent PATH --sshd PATH --cli PATH [unittest args]

Everything runs on loopback with throwaway keys and directories.  Each class
shares one environment (netconfd, ncgrpcd, one agent per device, sshd);
NCGRPC_TEST_VERBOSE=1 prints the logs after each class.
"""
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import argparse  # noqa: E402
import concurrent.futures  # noqa: E402
import hashlib  # noqa: E402
import fcntl  # noqa: E402
import termios  # noqa: E402
import struct  # noqa: E402
import os  # noqa: E402
import pty  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import select  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402

os.environ.setdefault("GRPC_VERBOSITY", "NONE")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "server"))

import srvlib  # noqa: E402
from opclient import OpClient  # noqa: E402
from srvlib import Agent, Client, LogFile, Ncgrpcd, Netconfd, free_port, \
    wait_until  # noqa: E402

import paramiko  # noqa: E402
from ncclient import manager  # noqa: E402

CFG = {"ncgrpcd": os.environ.get("NCGRPCD"), "agent": os.environ.get("NCGRPC_AGENT"),
       "sshd": os.environ.get("NCGRPC_SSHD"), "cli": os.environ.get("NCGRPC_CLI")}

NC_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
NACM_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"
HELLO_10 = ('<?xml version="1.0" encoding="UTF-8"?>\n<hello xmlns="%s"><capabilities>'
            '<capability>urn:ietf:params:netconf:base:1.0</capability></capabilities>'
            '</hello>]]>]]>' % NC_NS)


def rpc(mid, body):
    return '<rpc message-id="%s" xmlns="%s">%s</rpc>]]>]]>' % (mid, NC_NS, body)


def audit_fields(line):
    out = {}
    for m in re.finditer(r'(\S+?)=("(?:[^"\\]|\\.)*"|\S+)', line):
        v = m.group(2)
        if v.startswith('"'):
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        out[m.group(1)] = v
    return out


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0


class Sshd:
    """One ncgrpc-sshd reading the ncgrpcd configuration file."""

    def __init__(self, binary, conf_path, workdir):
        self.binary = binary
        self.conf_path = conf_path
        self.log = LogFile(os.path.join(workdir, "sshd.log"))
        self.stdout_path = os.path.join(workdir, "sshd.stdout")
        self.proc = None

    def start(self, timeout=20):
        mark = self.log.mark()
        self._out = open(self.stdout_path, "ab")
        self.proc = subprocess.Popen(srvlib.no_orphan([self.binary, "-d", "-f", self.conf_path]),
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.log.wait(r"listening on", timeout, start=mark, alive=self.alive)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return None
        rc = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        else:
            rc = self.proc.returncode
        self._out.close()
        self.proc = None
        return rc


class Env:
    """netconfd, ncgrpcd with DEVICES (one agent each), keys and ncgrpc-sshd."""

    SECRET = "front-door-secret-%s-0123456789"

    def __init__(self, devices=("router-17",), offline=(), extra=(), emus=()):
        self.tmp = tempfile.mkdtemp(prefix="ncgrpc-sshd-e2e-")
        os.chmod(self.tmp, 0o755)
        self.keys = os.path.join(self.tmp, "keys")
        os.makedirs(self.keys)
        self.port = free_port()
        self.netconfd = Netconfd(self._sub("yuma")).start()
        self.akeys = os.path.join(self.keys, "authorized_keys")
        self.hostkey = os.path.join(self.keys, "ssh_host_ed25519_key")
        sshdir = self._sub("sshd")
        self.srv = Ncgrpcd(CFG["ncgrpcd"], self._sub("srv"), extra=[
            "ssh-listen 127.0.0.1:%d" % self.port, "ssh-host-key %s" % self.hostkey,
            "ssh-authorized-keys %s" % self.akeys,
            "ssh-log-file %s" % os.path.join(sshdir, "sshd.log"),
            "session-wait 3"] + list(extra))
        for d in list(devices) + list(offline) + list(emus):
            self.srv.add_device(d, self.SECRET % d, write=False)
        self.srv.write_registry()
        self.srv.start()
        self.agents = []
        for d in devices:
            a = Agent(CFG["agent"], self._sub("agent"))
            a.configure([Client("c0", d, self.SECRET % d, [self.srv.addr()], waittime=1)],
                        ('shell "/bin/sh";', 'netconf-command "%s";' % self.netconfd.command()))
            a.start()
            self.agents.append(a)
        # Devices without the raw terminal (tests/server/devemu.py): a pty
        # session with them is in line mode, ncgrpc-sshd's ldisc.c.
        self.emus = []
        for d in emus:
            import devemu
            e = devemu.DevEmu(self.srv.target(), self.srv.cert_pem(), d, self.SECRET % d)
            self.emus.append(e.start())
        for d in list(devices) + list(emus):
            self.srv.log.wait(r'device "%s" connected' % re.escape(d), 30)
        self.key = {}
        for name in ("alice", "bob", "carol", "mallory"):
            self.key[name] = self.keygen(name)
        self.write_akeys([
            'operator="alice",devices="router-*" %s alice@laptop' % self.pub("alice"),
            'operator="bob",devices="router-17",sessions="netconf" %s' % self.pub("bob"),
            'operator="carol",devices="*" %s' % self.pub("carol"),
        ])
        self.sshd = Sshd(CFG["sshd"], self.srv.conf_path, sshdir).start()
        self.known_hosts = os.path.join(self.keys, "known_hosts")
        out = subprocess.run([CFG["cli"], "-f", self.srv.conf_path, "ssh-known-hosts",
                              "127.0.0.1"], capture_output=True, timeout=10, check=True)
        with open(self.known_hosts, "wb") as f:
            f.write(out.stdout)
        self.host_fp_line = out.stderr.decode()

    def _sub(self, name):
        d = os.path.join(self.tmp, name)
        n = 1
        while os.path.exists(d):
            n += 1
            d = os.path.join(self.tmp, "%s%d" % (name, n))
        os.makedirs(d)
        return d

    def keygen(self, name, ktype="ed25519"):
        path = os.path.join(self.keys, name)
        args = ["ssh-keygen", "-q", "-t", ktype, "-N", "", "-C", name, "-f", path]
        if ktype == "rsa":
            args += ["-b", "2048", "-m", "PEM"]
        subprocess.run(args, check=True, timeout=30)
        return path

    def pub(self, name):
        with open(self.key[name] + ".pub") as f:
            return " ".join(f.read().split()[:2])

    def write_akeys(self, lines):
        srvlib.write_atomic(self.akeys, "\n".join(lines) + "\n", 0o600)

    def ssh_argv(self, key, user, *args, tty=False):
        argv = ["ssh", "-p", str(self.port), "-i", self.key[key],
                "-o", "UserKnownHostsFile=" + self.known_hosts,
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10",
                "-F", "/dev/null"]
        argv += ["-tt"] if tty else ["-T"]
        return argv + ["%s@127.0.0.1" % user] + list(args)

    def ssh(self, key, user, *args, stdin=b"", timeout=30):
        return subprocess.run(self.ssh_argv(key, user, *args), input=stdin,
                              capture_output=True, timeout=timeout)

    def ssh_text(self, key, user, *args, stdin=b"", timeout=30):
        """As ssh(), with stdout's line ends as "\n": a shell's output is
        what the device's terminal makes of it (docs/internals/sshd.md)."""
        r = self.ssh(key, user, *args, stdin=stdin, timeout=timeout)
        r.stdout = r.stdout.replace(b"\r\n", b"\n")
        return r

    def paramiko(self, key, user="router-17"):
        """A paramiko Transport logged in as USER with KEY's key."""
        t = paramiko.Transport(("127.0.0.1", self.port))
        try:
            t.connect(username=user,
                      pkey=paramiko.Ed25519Key.from_private_key_file(self.key[key]))
        except BaseException:
            t.close()
            raise
        return t

    def nc(self, key, user, **kw):
        return manager.connect(host="127.0.0.1", port=self.port, username=user,
                               key_filename=self.key[key], hostkey_verify=False,
                               allow_agent=False, look_for_keys=False, timeout=30, **kw)

    def audit(self, event, **match):
        out = []
        for line in self.srv.audit.lines():
            f = audit_fields(line)
            if f.get("event") == event and all(f.get(k) == v for k, v in match.items()):
                out.append(f)
        return out

    def wait_audit(self, event, timeout=10, **match):
        wait_until(lambda: self.audit(event, **match), timeout,
                   "audit event=%s %s; tail:\n%s" % (event, match, self.srv.audit.tail()))
        return self.audit(event, **match)[-1]

    def close(self):
        if os.environ.get("NCGRPC_TEST_VERBOSE"):
            sys.stderr.write("\n--- sshd log ---\n%s\n--- ncgrpcd log ---\n%s\n--- audit ---\n%s\n"
                             % (self.sshd.log.tail(200), self.srv.log.tail(100),
                                self.srv.audit.tail(100)))
        rc_sshd = self.sshd.stop()
        try:
            with open(self.sshd.stdout_path, "rb") as f:
                self.sshd_stdout = f.read()[-4000:].decode(errors="replace")
        except OSError:
            self.sshd_stdout = ""
        for a in self.agents:
            a.stop()
        for e in self.emus:
            e.stop()
        rc_srv = self.srv.stop()
        self.netconfd.stop()
        if not os.environ.get("NCGRPC_TEST_KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)
        return rc_sshd, rc_srv


class SshdTestCase(unittest.TestCase):
    DEVICES = ("router-17",)
    OFFLINE = ()
    EXTRA = ()
    maxDiff = 4000

    EMUS = ()

    @classmethod
    def setUpClass(cls):
        cls.env = Env(cls.DEVICES, cls.OFFLINE, cls.EXTRA, cls.EMUS)

    @classmethod
    def tearDownClass(cls):
        rc_sshd, rc_srv = cls.env.close()
        if rc_sshd != 0:
            raise AssertionError("ncgrpc-sshd exited with %s on SIGTERM:\n%s"
                                 % (rc_sshd, cls.env.sshd_stdout))
        if rc_srv not in (0, None):
            raise AssertionError("ncgrpcd exited with %s" % rc_srv)

    def setUp(self):
        self.assertTrue(self.env.sshd.alive(), self.env.sshd.log.tail())
        self.assertTrue(self.env.srv.alive(), self.env.srv.log.tail())


# ---------------------------------------------------------------------------
class NetconfTest(SshdTestCase):
    def test_ncclient_edit_commit(self):
        env = self.env
        m = env.nc("alice", "router-17")
        try:
            self.assertIn("urn:ietf:params:netconf:capability:candidate:1.0",
                          list(m.server_capabilities))
            before = m.get_config(source="running").xml
            self.assertIn("<data", before)
            cfg = ('<config><nacm xmlns="%s"><groups><group><name>front-door</name>'
                   '<user-name>alice</user-name></group></groups></nacm></config>' % NACM_NS)
            self.assertTrue(m.edit_config(target="candidate", config=cfg).ok)
            self.assertTrue(m.commit().ok)
            after = m.get_config(source="running", filter=(
                "subtree", '<nacm xmlns="%s"><groups/></nacm>' % NACM_NS)).xml
            self.assertIn("<name>front-door</name>", after)
            sid = m.session_id
        finally:
            m.close_session()
        self.assertTrue(sid)
        # netconfd ends the session after close-session; under ASan on a
        # busy machine that once took more than 10 s.
        end = env.wait_audit("ssh-session-end", timeout=30, operator="alice",
                             channel="netconf", reason="device closed the session")
        self.assertEqual(end["device"], "router-17")
        # ncclient hangs up once it has the <ok/>; the device's end may
        # come after that, with no one left for the exit status.
        if "exit-status" in end:
            self.assertEqual(end["exit-status"], "0")
        self.assertRegex(end["operator-key"], r"^ssh-ed25519 SHA256:\S+$")
        self.assertRegex(end["source"], r"^127\.0\.0\.1:\d+$")
        self.assertGreater(int(end["bytes-to-device"]), 500)
        self.assertGreater(int(end["bytes-from-device"]), 1000)
        # ncgrpcd recorded who the session was for, beside the uid.
        start = env.wait_audit("session-start", session=end["session"])
        self.assertEqual((start["operator"], start["via"], start["operator-key"],
                          start["operator-source"], start["operator-uid"]),
                         ("alice", "ssh", end["operator-key"], end["source"], str(os.getuid())))
        ops = [f["operation"] for f in env.audit("netconf-rpc", session=end["session"])]
        self.assertEqual(ops[-4:], ["edit-config", "commit", "get-config", "close-session"])
        srv_end = env.wait_audit("session-end", session=end["session"])
        self.assertEqual(srv_end["bytes-from-device"], end["bytes-from-device"])

    def test_client_gone_after_close_session(self):
        """A client that sends <close-session> and vanishes at once: the
        session gets its input and ends as the device ends it."""
        env = self.env
        t = env.paramiko("bob")
        try:
            c = t.open_session(timeout=10)
            c.invoke_subsystem("netconf")
            c.sendall((HELLO_10 + rpc(1, "<close-session/>")).encode())
        finally:
            t.close()  # no EOF, no channel close: the socket goes
        end = env.wait_audit("ssh-session-end", timeout=30, operator="bob",
                             channel="netconf")
        self.assertEqual(end["reason"], "device closed the session", end)
        self.assertNotIn("exit-status", end)  # no one was there for it
        self.assertIn("session", end)
        ops = [f["operation"] for f in env.audit("netconf-rpc", session=end["session"])]
        self.assertEqual(ops, ["close-session"])
        srv_end = env.wait_audit("session-end", session=end["session"])
        self.assertEqual(srv_end["reason"], "device closed the session")
        self.assertEqual(srv_end["bytes-to-device"], end["bytes-to-device"])

    def test_openssh_subsystem(self):
        env = self.env
        self.assertIn("SHA256:", env.host_fp_line)
        with open(env.known_hosts) as f:
            self.assertRegex(f.read(), r"^\[127\.0\.0\.1\]:%d ssh-ed25519 \S+\n$" % env.port)
        data = (HELLO_10 + rpc(1, "<get-config><source><running/></source></get-config>")
                + rpc(2, "<close-session/>")).encode()
        r = env.ssh("alice", "router-17", "-s", "netconf", stdin=data)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout
        self.assertTrue(out.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<hello'),
                        out[:200])
        self.assertLess(len(out), 100000, "left over from another test?")
        self.assertIn(b"urn:ietf:params:netconf:base:1.0", out)
        self.assertIn(b'message-id="1"', out)
        self.assertRegex(out, rb'<rpc-reply message-id="2"[^>]*>\s*<ok/>\s*</rpc-reply>\s*]]>]]>')
        # 1.0 framing end to end: every message ends with ]]>]]>.
        self.assertEqual(out.count(b"]]>]]>"), 3)

    def test_big_reply_byte_exact(self):
        """A reply over 5 MB, through the front door and directly, byte for byte."""
        env = self.env
        users = "".join("<user-name>user-%06d-%s</user-name>" % (i, "x" * 40)
                        for i in range(100))
        self.addCleanup(self._delete_groups)
        m = env.nc("carol", "router-17")
        try:
            # In edits of 100 groups: ncgrpcd hands each NETCONF message to
            # the device as one gRPC message, which the agent takes up to
            # 4 MiB.
            for base in range(0, 900, 100):
                groups = "".join("<group><name>g%04d</name>%s</group>" % (g, users)
                                 for g in range(base, base + 100))
                self.assertTrue(m.edit_config(target="candidate", config=(
                    '<config><nacm xmlns="%s"><groups>%s</groups></nacm></config>'
                    % (NACM_NS, groups))).ok)
            self.assertTrue(m.commit().ok)
            t0 = time.monotonic()
            big = m.get_config(source="running").xml
            dt = time.monotonic() - t0
        finally:
            m.close_session()
        self.assertGreater(len(big), 5 * 1000 * 1000)
        self.assertEqual(big.count("<user-name>"), 90000)
        sys.stderr.write("[ncclient: %.1f MB in %.2f s] " % (len(big) / 1e6, dt))
        # The same rpcs through OpenSSH and through the operator API: the
        # bytes of the replies (message-ids and hello alike) are identical.
        data = (HELLO_10 + rpc(7, "<get-config><source><running/></source></get-config>")
                + rpc(8, "<close-session/>")).encode()
        r = env.ssh("carol", "router-17", "-s", "netconf", stdin=data, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(env.tmp, "via_ssh.xml"), "wb") as f:
            f.write(r.stdout)
        op = OpClient(env.srv.sock)
        try:
            s = op.session("router-17", "netconf", wait_ms=10000)
            s.wait_started(20)
            s.send(data)
            direct = s.read_all(120)
        finally:
            op.close()
        via_ssh = r.stdout
        with open(os.path.join(env.tmp, "direct.xml"), "wb") as f:
            f.write(direct)
        # The hellos differ only in session-id.
        strip = re.compile(rb"<session-id>\d+</session-id>")
        self.assertGreater(len(via_ssh), 5 * 1000 * 1000)
        a, b = strip.sub(b"", via_ssh), strip.sub(b"", bytes(direct))
        if a != b:
            i = next(i for i in range(min(len(a), len(b)) + 1)
                     if i == min(len(a), len(b)) or a[i] != b[i])
            self.fail("replies differ at byte %d of %d/%d: %r / %r"
                      % (i, len(a), len(b), a[i - 100:i + 100], b[i - 100:i + 100]))

    def _delete_groups(self):
        m = self.env.nc("carol", "router-17")
        try:
            m.edit_config(target="candidate", config=(
                '<config xmlns:nc="%s"><nacm xmlns="%s"><groups nc:operation="remove"/>'
                '</nacm></config>' % (NC_NS, NACM_NS)))
            m.commit()
        finally:
            m.close_session()


# ---------------------------------------------------------------------------
class ShellTest(SshdTestCase):
    def test_exec(self):
        env = self.env
        r = env.ssh_text("alice", "router-17", "echo front-$((6*7)); uname -s")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"front-42\n", r.stdout)
        self.assertIn(b"Linux\n", r.stdout)
        end = env.wait_audit("ssh-session-end", channel="exec", operator="alice")
        self.assertEqual(end["exit-status"], "0")
        self.assertEqual(end["pty"], "no")

    def test_client_gone_during_exec(self):
        """A vanished client's command that does not end on EOF is hung
        up after the drain time (2 s), and the line says why."""
        env = self.env
        t = env.paramiko("carol")
        try:
            c = t.open_session(timeout=10)
            c.exec_command("echo $((6*7))-up; sleep 60")
            c.settimeout(20)
            out = b""
            while b"42-up" not in out:  # the device's pty echoes the line
                chunk = c.recv(1000)
                self.assertTrue(chunk, out)
                out += chunk
        finally:
            t.close()
        t0 = time.monotonic()
        end = env.wait_audit("ssh-session-end", timeout=30, operator="carol",
                             channel="exec")
        waited = time.monotonic() - t0
        self.assertRegex(end["reason"], "disconnected", end)
        self.assertNotIn("exit-status", end)
        srv_end = env.wait_audit("session-end", timeout=15, session=end["session"])
        self.assertRegex(srv_end["reason"], "operator went away", srv_end)
        sys.stderr.write("[exec hung up %.1f s after the client left] " % waited)
        self.assertGreater(waited, 1.0)

    def test_shell_without_pty(self):
        env = self.env
        r = env.ssh_text("alice", "router-17", stdin=b"echo a$((1+1))\nprintf 'b%s\\n' 3")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"a2\n", r.stdout)
        self.assertIn(b"b3\n", r.stdout)  # the last line had no newline
        lines = [f["line"] for f in env.audit("shell-line", device="router-17")]
        self.assertIn("echo a$((1+1))", lines)

    def _pty_ssh(self, *args):
        pid, fd = pty.fork()
        if pid == 0:
            try:
                # ssh sends this window in its pty-req.
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
                os.execvp("ssh", self.env.ssh_argv("alice", "router-17", *args, tty=True))
            finally:
                os._exit(127)
        self.addCleanup(self._reap, pid, fd)
        return pid, fd

    def _reap(self, pid, fd):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(pid, 0)
        except OSError:
            pass
        os.close(fd)

    def _read_until(self, fd, pattern, timeout, buf):
        deadline = time.monotonic() + timeout
        while not re.search(pattern, buf[0]):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %r within %ss; got %r" % (pattern, timeout, buf[0][-400:]))
            r, _, _ = select.select([fd], [], [], left)
            if r:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError("ssh ended; got %r" % buf[0][-400:])
                buf[0] += chunk
        return buf[0]

    def test_pty_ctrl_c_stops_sleep(self):
        env = self.env
        pid, fd = self._pty_ssh()
        buf = [b""]
        self._read_until(fd, rb"[#$] $", 20, buf)
        os.write(fd, b"echo ready-$((40+2))\r")
        self._read_until(fd, rb"ready-42\r\n", 10, buf)
        # The window of ssh's pty-req reached the device's pty.
        os.write(fd, b"stty size\r")
        self._read_until(fd, rb"\r\n33 101\r\n", 10, buf)
        os.write(fd, b"sleep 100\r")
        time.sleep(1.0)
        t0 = time.monotonic()
        os.write(fd, b"\x03")
        self._read_until(fd, rb"\^C\r\n", 5, buf)
        os.write(fd, b"echo after-$((2+3))\r")
        self._read_until(fd, rb"after-5\r\n", 10, buf)
        self.assertLess(time.monotonic() - t0, 10, "Ctrl-C did not stop sleep 100")
        # Line editing: a typo erased with DEL.
        os.write(fd, b"echo fixx\x7f-ed\r")
        self._read_until(fd, rb"fix-ed\r\n", 10, buf)
        os.write(fd, b"exit\r")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            select.select([fd], [], [], 0.2)
            try:
                os.read(fd, 65536)
            except OSError:
                pass
        else:
            self.fail("ssh did not end after exit")
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        end = env.wait_audit("ssh-session-end", channel="shell", pty="yes")
        sid = end["session"]
        # pty-req maps onto the raw terminal (the agent offers it), so
        # ^C reached the device's pty as a key, and its own line
        # discipline sent SIGINT; the window went along.
        start = env.wait_audit("session-start", session=sid)
        self.assertEqual(start.get("terminal"), "raw")
        self.assertEqual(start.get("via"), "ssh")

    def test_slow_reader_stops_the_device(self):
        """A client that does not read: memory stays bounded on the way."""
        env = self.env
        n = 3000000
        t = env.paramiko("alice")
        try:
            c = t.open_session(window_size=1 << 20, timeout=10)
            c.exec_command("seq 1 %d" % n)
            time.sleep(1.0)
            sshd0, srv0 = rss_kib(env.sshd.pid), rss_kib(env.srv.pid)
            time.sleep(4.0)  # reading nothing: 1 MiB of window, then stop
            sshd1, srv1 = rss_kib(env.sshd.pid), rss_kib(env.srv.pid)
            out = bytearray()
            c.settimeout(60)
            while True:
                chunk = c.recv(1 << 20)
                if not chunk:
                    break
                out += chunk
            self.assertEqual(c.recv_exit_status(), 0)
        finally:
            t.close()
        with open("/proc/%d/maps" % env.sshd.pid) as f:
            asan = "libasan" in f.read()
        limit = (64 if asan else 16) * 1024
        sys.stderr.write("[stalled: sshd +%d KiB, ncgrpcd +%d KiB] " % (sshd1 - sshd0,
                                                                     srv1 - srv0))
        self.assertLess(sshd1 - sshd0, limit)
        self.assertLess(srv1 - srv0, limit)
        # Every line came, once, in order.
        # exec runs the command and "exit" in the device's shell, whose pty
        # echoes the typed-ahead "exit" wherever it lands in seq's output
        # (between two of seq's writes, even inside a number), and whose
        # prompt may come before seq's first line: "# 1" (docs/internals/
        # sshd.md).  The agent writes the line and its newline separately,
        # so the echo may come in two pieces, "exit" and "\r\n", each
        # anywhere; a newline inside a number splits it in two lines, which
        # are joined back.  Without those, every byte must be there, in order.
        text = bytes(out).replace(b"exit", b"", 1)
        nums = re.findall(rb"^(?:[#$] )?(\d+)\r$", text, re.M)
        for i in range(min(len(nums), n) - 1):
            if nums[i] != str(i + 1).encode():
                if nums[i] + nums[i + 1] == str(i + 1).encode():
                    nums[i:i + 2] = [nums[i] + nums[i + 1]]
                break
        if len(nums) != n:
            got = set(int(x) for x in nums)
            gone = [i for i in range(1, n + 1) if i not in got][:3]
            self.fail("%d lines of %d; missing %r; around the first: %r; head %r"
                      % (len(nums), n, gone,
                         text[max(0, text.find(b"\n%d\r" % (gone[0] - 1))):][:120]
                         if gone else b"", text[:120]))
        self.assertEqual(nums[0], b"1")
        self.assertEqual(nums[-1], str(n).encode())
        self.assertEqual(hashlib.sha256(b"\n".join(nums)).hexdigest(),
                         hashlib.sha256(b"\n".join(str(i).encode()
                                                    for i in range(1, n + 1))).hexdigest())

    def test_device_not_reading_stops_the_client(self):
        """A device that does not read: the client is stopped by the window."""
        env = self.env
        t = env.paramiko("alice")
        try:
            c = t.open_session(timeout=10)
            # A shell busy in sleep: its input piles up in the device's
            # pty, then in the agent, ncgrpcd and here, each bounded.
            c.invoke_shell()
            c.sendall(b"sleep 30\n")
            time.sleep(1.0)
            sshd0 = rss_kib(env.sshd.pid)
            line = b"#" + b"x" * 998 + b"\n"
            sent = 0
            c.settimeout(0.0)
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline and sent < 64 * 1024 * 1024:
                if c.send_ready():
                    sent += c.send(line)
                else:
                    time.sleep(0.01)
            sshd1 = rss_kib(env.sshd.pid)
        finally:
            t.close()
        sys.stderr.write("[client stopped after %d KiB; sshd +%d KiB] "
                         % (sent // 1024, sshd1 - sshd0))
        # Stopped within a few MB (windows and queues on the way), not 64 MiB.
        self.assertLess(sent, 16 * 1024 * 1024)
        with open("/proc/%d/maps" % env.sshd.pid) as f:
            asan = "libasan" in f.read()
        # Under AddressSanitizer every freed copy of those bytes sits in its
        # quarantine (up to 256 MB): RSS says nothing there; `sent` does.
        if not asan:
            self.assertLess(sshd1 - sshd0, 16 * 1024)
        self.assertTrue(env.sshd.alive())

    def test_channels_on_one_connection(self):
        """Several channels at once on one SSH connection (paramiko)."""
        env = self.env
        t = env.paramiko("alice")
        try:
            chans = []
            for i in range(4):
                c = t.open_session(timeout=10)
                c.exec_command("echo chan-%d-$((%d*10))" % (i, i))
                chans.append(c)
            nc = t.open_session(timeout=10)
            nc.invoke_subsystem("netconf")
            nc.sendall((HELLO_10 + rpc(1, "<close-session/>")).encode())
            for i, c in enumerate(chans):
                out = b""
                c.settimeout(20)
                while True:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    out += chunk
                self.assertIn(("chan-%d-%d\r\n" % (i, i * 10)).encode(), out)
                self.assertEqual(c.recv_exit_status(), 0)
            nc.settimeout(20)
            got = b""
            while True:
                chunk = nc.recv(65536)
                if not chunk:
                    break
                got += chunk
            self.assertIn(b"<ok/>", got)
            # More channels than ssh-max-channels (10) at once are refused.
            extra = []
            with self.assertRaises(paramiko.ChannelException):
                for _ in range(11):
                    extra.append(t.open_session(timeout=10))
            self.assertEqual(len(extra), 10)
        finally:
            t.close()


# ---------------------------------------------------------------------------
class RefusalTest(SshdTestCase):
    OFFLINE = ("router-off",)

    def test_unknown_key(self):
        env = self.env
        r = env.ssh("mallory", "router-17", "true")
        self.assertEqual(r.returncode, 255)
        self.assertIn(b"Permission denied (publickey)", r.stderr)
        f = env.wait_audit("ssh-login-refused", reason="unknown key")
        self.assertEqual(f["user"], "router-17")
        self.assertRegex(f["operator-key"], r"^ssh-ed25519 SHA256:")

    def test_key_without_rights(self):
        env = self.env
        # bob: netconf on router-17 only.
        r = env.ssh("bob", "router-17", "uname")
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"ncgrpc-sshd: operator 'bob' may not open exec sessions on device "
                      b"'router-17' (authorized_keys)", r.stderr)
        env.wait_audit("ssh-refused", operator="bob", channel="exec", device="router-17")
        # alice: router-* only.
        r = env.ssh("alice", "switch-1", "-s", "netconf", stdin=HELLO_10.encode())
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"operator 'alice' may not open netconf sessions on device 'switch-1'",
                      r.stderr)
        env.wait_audit("ssh-refused", operator="alice", device="switch-1")
        # alice's key in bob's name.
        r = env.ssh("alice", "bob+router-17", "true")
        self.assertEqual(r.returncode, 255)
        env.wait_audit("ssh-login-refused", user="bob+router-17")
        # But "alice+router-17" is alice.
        r = env.ssh_text("alice", "alice+router-17", "echo ok-$((1+1))")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"ok-2\n", r.stdout)

    def test_unknown_and_offline_devices(self):
        env = self.env
        r = env.ssh("carol", "router-99", "true")
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"ncgrpc-sshd: device 'router-99' is not registered", r.stderr)
        f = env.wait_audit("ssh-session-end", device="router-99")
        self.assertIn("is not registered", f["reason"])
        self.assertEqual(f["exit-status"], "1")
        # Registered, not connected: within session-wait (3 s here).
        t0 = time.monotonic()
        r = env.ssh("carol", "router-off", "-s", "netconf", stdin=HELLO_10.encode())
        dt = time.monotonic() - t0
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"ncgrpc-sshd: device 'router-off' is not connected", r.stderr)
        self.assertLess(dt, 10)
        env.wait_audit("ssh-session-end", device="router-off", channel="netconf")
        # An exec command is one line of the device's shell, without
        # control characters, and not empty.
        for bad in ("echo a\x03b", "echo a\rb", "x" * 4097):
            r = env.ssh("carol", "router-17", bad)
            self.assertEqual(r.returncode, 255, bad)
            self.assertIn(b"exec request failed", r.stderr)
        # A user name that is no device id is refused at login.
        r = env.ssh("carol", "bad/name", "true")
        self.assertEqual(r.returncode, 255)
        env.wait_audit("ssh-login-refused", user="bad/name")

    def test_password_refused(self):
        env = self.env
        # OpenSSH does not even try: only publickey is offered.
        r = subprocess.run(["ssh", "-p", str(env.port), "-F", "/dev/null",
                            "-o", "UserKnownHostsFile=" + env.known_hosts,
                            "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no",
                            "-o", "PreferredAuthentications=password,keyboard-interactive",
                            "router-17@127.0.0.1", "true"],
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 255)
        self.assertIn(b"Permission denied (publickey)", r.stderr)
        # A client that insists gets a refusal and an audit line.
        t = paramiko.Transport(("127.0.0.1", env.port))
        try:
            t.start_client(timeout=10)
            with self.assertRaises(paramiko.AuthenticationException):
                t.auth_password("router-17", "hunter2")
        finally:
            t.close()
        f = env.wait_audit("ssh-login-refused", reason="password authentication is not offered")
        self.assertEqual(f["user"], "router-17")
        self.assertNotIn("hunter2", env.srv.audit.text() + env.sshd.log.text())

    def test_refused_requests_say_why(self):
        """A subsystem other than netconf, or an exec command that is not one
        line, got a bare "request failed": no reason, no audit line."""
        env = self.env
        t = env.paramiko("alice")
        try:
            for request, arg, why in (
                    ("subsystem", "sftp", "only the netconf subsystem is offered"),
                    ("exec", "echo a\necho b", "the command must be one line of at most "
                     "4096 bytes, without control characters")):
                c = t.open_session(timeout=10)
                with self.assertRaises(paramiko.SSHException):
                    if request == "subsystem":
                        c.invoke_subsystem(arg)
                    else:
                        c.exec_command(arg)
                c.settimeout(10)
                self.assertIn(("ncgrpc-sshd: %s: %s" % (request, why)).encode(),
                              c.recv_stderr(4096))
                env.wait_audit("ssh-refused", operator="alice", channel=request, reason=why)
                c.close()
        finally:
            t.close()

    def test_removed_key_opens_no_more_channels(self):
        """Rights were fixed at login: a connection of a key taken out of
        ssh-authorized-keys (ControlMaster, say) went on opening sessions."""
        env = self.env
        t = env.paramiko("alice")
        try:
            c = t.open_session(timeout=10)
            c.exec_command("echo one-$((1+1))")
            c.settimeout(30)
            self.assertIn(b"one-2", c.makefile("rb").read())
            self.assertEqual(c.recv_exit_status(), 0)
            env.write_akeys(['operator="bob",devices="router-17",sessions="netconf" %s'
                             % env.pub("bob")])
            mark = env.sshd.log.mark()
            env.sshd.proc.send_signal(signal.SIGHUP)
            env.sshd.log.wait(r"SIGHUP: 1 authorized keys loaded", 10, start=mark)
            c = t.open_session(timeout=10)
            c.exec_command("echo two")
            c.settimeout(30)
            self.assertEqual(c.makefile("rb").read(), b"")
            self.assertIn(b"this key was removed from ssh-authorized-keys",
                          c.makefile_stderr("rb").read())
            self.assertEqual(c.recv_exit_status(), 1)
            env.wait_audit("ssh-refused", operator="alice",
                           reason="key no longer in ssh-authorized-keys")
        finally:
            t.close()
            env.write_akeys([
                'operator="alice",devices="router-*" %s' % env.pub("alice"),
                'operator="bob",devices="router-17",sessions="netconf" %s' % env.pub("bob"),
                'operator="carol",devices="*" %s' % env.pub("carol")])
            mark = env.sshd.log.mark()
            env.sshd.proc.send_signal(signal.SIGHUP)
            env.sshd.log.wait(r"SIGHUP: 3 authorized keys loaded", 10, start=mark)

    def test_reload_keeps_sessions(self):
        env = self.env
        m = env.nc("alice", "router-17")
        try:
            # dave appears, alice goes; a broken file changes nothing.
            env.key["dave"] = env.keygen("dave")
            env.write_akeys(['operator="dave",devices="*" %s' % env.pub("dave"),
                             'operator="bob",devices="router-17",sessions="netconf" %s'
                             % env.pub("bob")])
            mark = env.sshd.log.mark()
            env.sshd.proc.send_signal(signal.SIGHUP)
            env.sshd.log.wait(r"SIGHUP: 2 authorized keys loaded", 10, start=mark)
            # The open session goes on.
            self.assertIn("<data", m.get_config(source="running").xml)
            r = env.ssh_text("dave", "router-17", "echo dave-$((3*3))")
            self.assertIn(b"dave-9\n", r.stdout)
            r = env.ssh("alice", "router-17", "true")
            self.assertEqual(r.returncode, 255)
            env.write_akeys(["operator=broken"])
            mark = env.sshd.log.mark()
            env.sshd.proc.send_signal(signal.SIGHUP)
            env.sshd.log.wait(r"authorized keys not reloaded, the 2 in force stay: "
                              r"\S+:1: expected an option", 10, start=mark)
            r = env.ssh("dave", "router-17", "true")
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            m.close_session()
            env.write_akeys([
                'operator="alice",devices="router-*" %s' % env.pub("alice"),
                'operator="bob",devices="router-17",sessions="netconf" %s' % env.pub("bob"),
                'operator="carol",devices="*" %s' % env.pub("carol")])
            env.sshd.proc.send_signal(signal.SIGHUP)


# ---------------------------------------------------------------------------
class HostileTest(SshdTestCase):
    EXTRA = ("ssh-login-grace-time 3", "ssh-max-startups 50")

    def _working(self):
        r = self.env.ssh_text("alice", "router-17", "echo alive-$((5+5))")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"alive-10\n", r.stdout)

    def test_long_user_name_is_cut_in_the_audit(self):
        """A peer that has not logged in chose the whole user name written to
        the audit log (20,000 bytes made a 20 KB line)."""
        with self.assertRaises(paramiko.AuthenticationException):
            self.env.paramiko("alice", user="x" * 5000 + "+" + "y" * 5000)
        f = self.env.wait_audit("ssh-login-refused",
                                reason="user name is not DEVICE or OPERATOR+DEVICE")
        self.assertEqual(f["user"], "x" * 128)

    def test_connections_have_keepalive(self):
        """SSH connections had no dead-peer detection: a cut client kept its
        slot and its sessions for good.  Now they carry TCP keepalive (and
        TCP_USER_TIMEOUT) from dead-peer-timeout, as device links do."""
        t = self.env.paramiko("alice")
        try:
            # Once nothing is in flight (a retransmission timer shows then).
            for _ in range(50):
                r = subprocess.run(["ss", "-tnoH", "state", "established",
                                    "( sport = :%d )" % self.env.port],
                                   capture_output=True, text=True, timeout=10)
                self.assertEqual(r.returncode, 0, r.stderr)
                if "timer:(on," not in r.stdout:
                    break
                time.sleep(0.1)
            self.assertRegex(r.stdout, r"timer:\(keepalive,", r.stdout)
        finally:
            t.close()

    def test_garbage_before_banner(self):
        s = socket.create_connection(("127.0.0.1", self.env.port), 5)
        s.settimeout(10)
        banner = s.recv(256)
        self.assertTrue(banner.startswith(b"SSH-2.0-"), banner)
        s.sendall(os.urandom(4096) + b"\r\n" + b"\x00" * 4096)
        got = b""
        t0 = time.monotonic()
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
        self.assertLess(time.monotonic() - t0, 8)
        s.close()
        self._working()

    def test_stops_mid_kex(self):
        s = socket.create_connection(("127.0.0.1", self.env.port), 5)
        s.settimeout(10)
        s.sendall(b"SSH-2.0-halfway\r\n")
        self.assertTrue(s.recv(256).startswith(b"SSH-2.0-"))
        # The start of a KEXINIT packet: length, padding, type 20, cookie.
        s.sendall(b"\x00\x00\x01\x2c\x0a\x14" + os.urandom(16))
        t0 = time.monotonic()
        try:
            while s.recv(65536):
                pass
        except ConnectionResetError:
            pass
        dt = time.monotonic() - t0
        s.close()
        self.assertLess(dt, 8, "not closed after the login grace time (3 s)")
        self.env.sshd.log.wait(r"closed: login grace time over", 5)
        self._working()

    def test_thousand_unauthenticated(self):
        env = self.env
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 2100:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
        # An established session before the storm.
        m = env.nc("alice", "router-17")
        rss0 = rss_kib(env.sshd.pid)
        socks = []
        try:
            for _ in range(1000):
                s = socket.socket()
                s.setblocking(False)
                try:
                    s.connect(("127.0.0.1", env.port))
                except BlockingIOError:
                    pass
                socks.append(s)
            time.sleep(1.0)
            for s in socks:
                try:
                    s.send(b"SSH-2.0-idle\r\n")
                except OSError:
                    pass
            time.sleep(1.0)
            rss1 = rss_kib(env.sshd.pid)
            # The session keeps working, and so do ncgrpcd and the device.
            self.assertIn("<data", m.get_config(source="running").xml)
            op = OpClient(env.srv.sock)
            try:
                self.assertEqual([d.device_id for d in op.list_devices()], ["router-17"])
            finally:
                op.close()
        finally:
            for s in socks:
                s.close()
            m.close_session()
        grown = rss1 - rss0
        sys.stderr.write("[sshd RSS +%d KiB with 1000 idle connections] " % grown)
        self.assertLess(grown, 30 * 1024)
        self.assertTrue(env.sshd.log.find(r"dropped: \d+ connections, 50 not authenticated"))
        # After the grace time, logins work again.
        time.sleep(3.5)
        self._working()


# ---------------------------------------------------------------------------
class NcgrpcdDownTest(SshdTestCase):
    def test_check_and_help(self):
        env = self.env
        sshd = CFG["sshd"]
        r = subprocess.run([sshd, "-n", "-f", env.srv.conf_path], capture_output=True,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"ncgrpc-sshd: configuration OK, 3 authorized keys\n")
        broken = os.path.join(env.tmp, "broken_keys")
        with open(broken, "w") as f:
            f.write("# x\noperator=\"a\",devices=\"*\" ssh-ed25519 AAAA\n")
        r = subprocess.run([sshd, "-n", "-f", env.srv.conf_path,
                            "-o", "ssh-authorized-keys=" + broken], capture_output=True,
                           timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.decode(), "ncgrpc-sshd: %s:2: malformed key\n" % broken)
        r = subprocess.run([sshd, "-n", "-f", env.srv.conf_path, "-o", "ssh-listen=nowhere"],
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"command line: ssh-listen: 'nowhere' is not HOST:PORT", r.stderr)
        r = subprocess.run([sshd, "-n", "-f", env.srv.conf_path, "-o", "junk"],
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"expected keyword=value", r.stderr)
        # A host key others may read is refused, as OpenSSH does.
        os.chmod(env.hostkey, 0o644)
        try:
            r = subprocess.run([sshd, "-n", "-f", env.srv.conf_path], capture_output=True,
                               timeout=30)
        finally:
            os.chmod(env.hostkey, 0o600)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"readable by its owner only (mode 0644)", r.stderr)
        self.assertEqual(os.stat(env.hostkey).st_mode & 0o777, 0o600)
        # A missing host key is made at the first start, so "-n" (the
        # unit's ExecStartPre) passes when it can be made, and makes nothing;
        # it used to fail, and the unit never started.
        fresh = os.path.join(env.tmp, "fresh", "ssh_host_ed25519_key")
        r = subprocess.run([sshd, "-n", "-f", env.srv.conf_path,
                            "-o", "ssh-host-key=" + fresh], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(("%s: missing (an ed25519 host key will be made)\n" % fresh).encode(),
                      r.stdout)
        self.assertFalse(os.path.exists(os.path.dirname(fresh)))
        # --init (the unit's ExecStartPre=+) makes it, and keeps it after.
        r = subprocess.run([sshd, "--init", "-f", env.srv.conf_path,
                            "-o", "ssh-host-key=" + fresh], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(os.stat(fresh).st_mode & 0o777, 0o600)
        self.assertTrue(os.path.exists(fresh + ".pub"))
        with open(fresh, "rb") as f:
            made = f.read()
        r = subprocess.run([sshd, "-I", "-f", env.srv.conf_path,
                            "-o", "ssh-host-key=" + fresh], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(fresh, "rb") as f:
            self.assertEqual(f.read(), made)
        r = subprocess.run([sshd, "-n", "-f", env.srv.conf_path,
                            "-o", "ssh-host-key=" + fresh], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn(b"missing", r.stdout)
        nowhere = os.path.join(env.tmp, "no", "such", "ssh_host_ed25519_key")
        r = subprocess.run([sshd, "-n", "-f", env.srv.conf_path,
                            "-o", "ssh-host-key=" + nowhere], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn(("host key \"%s\" is missing and cannot be made there: "
                       "No such file or directory" % nowhere).encode(), r.stderr)
        r = subprocess.run([sshd, "--help"], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0)
        self.assertIn(b"usage: ncgrpc-sshd", r.stdout)
        r = subprocess.run([sshd, "-x"], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 64)

    def test_ncgrpcd_restart(self):
        env = self.env
        m = env.nc("alice", "router-17")
        env.srv.stop()
        # The open session ends; new ones are refused with a message.
        wait_until(lambda: not m.connected, 15, "the session to end")
        r = env.ssh("alice", "router-17", "true")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(b"ncgrpc-sshd: ncgrpcd cannot be reached; try again later", r.stderr)
        env.wait_audit("ssh-refused", reason="ncgrpcd unreachable")
        self.assertTrue(env.sshd.alive())
        # Back: the next connection reaches the device again.
        mark = env.srv.log.mark()
        env.srv.start()
        env.srv.log.wait(r'device "router-17" connected', 30, start=mark)
        r = env.ssh_text("alice", "router-17", "echo back-$((1+2))")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"back-3\n", r.stdout)


# ---------------------------------------------------------------------------
class ConcurrencyTest(SshdTestCase):
    DEVICES = ("router-1", "router-2", "router-3", "router-4", "router-5")
    EXTRA = ("session-limit 8",)

    def test_twenty_ncclient_sessions(self):
        env = self.env

        took = []

        def one(i):
            dev = self.DEVICES[i % 5]
            m = env.nc("alice", dev)
            # ncclient waits 30 s for a reply by default; twenty sessions
            # opening at once under ASan on a loaded machine once took
            # longer.  A reply that never comes still fails.
            m.timeout = 120
            try:
                # Each session sees its own NETCONF session (the one netconfd
                # behind the five agents numbers them), and its replies.
                mine = m.session_id
                t0 = time.monotonic()
                reply = m.get_config(source="running").xml
                took.append(time.monotonic() - t0)
                return dev, mine, "<data" in reply
            finally:
                m.close_session()

        with concurrent.futures.ThreadPoolExecutor(20) as ex:
            results = list(ex.map(one, range(20)))
        sys.stderr.write("[get-config: slowest %.1f s] " % max(took))
        self.assertEqual(len(results), 20)
        self.assertEqual(len({r[1] for r in results}), 20, results)
        for dev, sid, ok in results:
            self.assertTrue(ok, (dev, sid))
        # A channel's line is written when it is freed, which may follow
        # the client's close by a moment.
        wait_until(lambda: len(env.audit("ssh-session-end", channel="netconf")) >= 20, 15,
                   "20 ssh-session-end lines")
        ends = env.audit("ssh-session-end", channel="netconf")
        self.assertEqual(len(ends), 20)
        # ncclient may hang up between the <ok/> of close-session and the
        # device's end, or after the device's end but before ncgrpc-sshd
        # wrote the exit status (seen once under ASan): then no exit
        # status was sent, and the line says so.  One that was sent is 0,
        # and only after the device closed.
        for e in ends:
            if "exit-status" in e:
                self.assertEqual(e["reason"], "device closed the session", e)
                self.assertEqual(e["exit-status"], "0", e)
            else:
                self.assertRegex(e["reason"],
                                 "disconnected|client closed|device closed the session", e)
        # Each SSH connection reached the device its user name named: the
        # ncgrpcd session it used is on that device, for that source.
        per_dev = {}
        for e in ends:
            start = env.wait_audit("session-start", session=e["session"])
            self.assertEqual((start["device"], start["operator-source"]),
                             (e["device"], e["source"]))
            per_dev[e["device"]] = per_dev.get(e["device"], 0) + 1
        self.assertEqual(per_dev, {d: 4 for d in self.DEVICES})


# ---------------------------------------------------------------------------
class YangcliTest(SshdTestCase):
    YANGCLI = "/usr/bin/yangcli"

    def test_yangcli_get_config(self):
        if not os.access(self.YANGCLI, os.X_OK):
            self.skipTest("yangcli is not installed (scripts/install-deps)")
        env = self.env
        # yangcli's libssh2 reads PEM keys.
        env.key["yc"] = env.keygen("yc", "rsa")
        env.write_akeys([
            'operator="alice",devices="router-*" %s' % env.pub("alice"),
            'operator="yc",devices="router-17",sessions="netconf" %s' % env.pub("yc")])
        mark = env.sshd.log.mark()
        env.sshd.proc.send_signal(signal.SIGHUP)
        env.sshd.log.wait(r"SIGHUP: 2 authorized keys loaded", 10, start=mark)
        home = tempfile.mkdtemp(prefix="yangcli-", dir=env.tmp)
        argv = [self.YANGCLI, "--server=127.0.0.1", "--ncport=%d" % env.port,
                "--user=router-17", "--public-key=" + env.key["yc"] + ".pub",
                "--private-key=" + env.key["yc"], "--password=", "--batch-mode",
                "--run-command=sget-config /nacm source=running", "--display-mode=xml",
                "--home=" + home]
        # yangcli wants a terminal: it runs on a pty, and stays at its
        # prompt after the command, so it is ended once the reply is in.
        pid, fd = pty.fork()
        if pid == 0:
            try:
                os.chdir(home)
                os.execve(self.YANGCLI, argv, {"HOME": home, "PATH": os.environ["PATH"],
                                               "TERM": "dumb"})
            finally:
                os._exit(127)
        out = b""
        deadline = time.monotonic() + 60
        try:
            while b"</rpc-reply>" not in out and time.monotonic() < deadline:
                r, _, _ = select.select([fd], [], [], 1)
                if r:
                    try:
                        chunk = os.read(fd, 65536)
                    except OSError:
                        break
                    if not chunk:
                        break
                    out += chunk
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(fd)
        self.assertRegex(out, rb"RPC Data Reply \d+ for session \d+:\s+<rpc-reply[^>]*>\s+<data>",
                         out[-2000:])
        self.assertIn(b'<nacm xmlns="%s"' % NACM_NS.encode(), out)
        env.wait_audit("ssh-session-end", operator="yc", channel="netconf")


class TerminalTest(SshdTestCase):
    """ssh -tt through the front door is a full terminal on the device
    (pty-req and window-change map onto the raw terminal): driven in tmux,
    as tests/session/test_terminal.py drives ncgrpc session.  A device
    without the raw terminal gets line mode."""

    EMUS = ("router-emu",)

    def test_line_mode_password_prompt(self):
        """In line mode ncgrpc-sshd echoes what is typed, except at a
        password prompt, as the device's terminal would not; ncgrpcd
        audits that line by its length only."""
        env = self.env
        t = env.paramiko("alice", "router-emu")
        out = bytearray()

        def until(what, start):
            while out.find(what, start) < 0:
                chunk = c.recv(4096)
                self.assertTrue(chunk, bytes(out))
                out.extend(chunk)
            return out.find(what, start) + len(what)

        try:
            c = t.open_session(timeout=10)
            c.get_pty(term="xterm", width=80, height=24)
            c.invoke_shell()
            c.settimeout(20)
            at = until(b"emu% ", 0)
            c.sendall(b"echo shown-$((6*7))\r")
            at = until(b"shown-42", until(b"echo shown-$((6*7))\r\n", at))
            c.sendall(b"printf 'Password: '; sleep 1\r")
            at = until(b"Password: ", until(b"sleep 1\r\n", at))
            c.sendall(b": hunter2-typed\r")
            at = until(b"emu% ", at)  # the sleep ended; then the line ran
            c.sendall(b"echo after-$((1+1))\r")
            at = until(b"after-2", until(b"echo after-$((1+1))\r\n", at))
            c.sendall(b"exit\r")
            c.recv_exit_status()
        finally:
            t.close()
        self.assertNotIn(b"hunter2", bytes(out))
        end = env.wait_audit("ssh-session-end", operator="alice", device="router-emu")
        self.assertEqual(end["pty"], "yes")
        start = env.wait_audit("session-start", session=end["session"])
        self.assertEqual(start.get("terminal"), "line")
        lines = env.audit("shell-line", session=end["session"])
        self.assertEqual([f.get("line", "(hidden %s)" % f.get("bytes")) for f in lines],
                         ["echo shown-$((6*7))", "printf 'Password: '; sleep 1",
                          "(hidden 15)", "echo after-$((1+1))", "exit"])
        with open(env.srv.audit.path, "rb") as f:
            self.assertNotIn(b"hunter2", f.read())

    def test_full_terminal(self):
        if shutil.which("tmux") is None or shutil.which("vi") is None:
            self.skipTest("tmux and vi are needed (scripts/install-deps)")
        sys.path.insert(0, os.path.join(HERE, "..", "session"))
        from test_terminal import Tmux  # noqa: E402
        env = self.env
        work = tempfile.mkdtemp(prefix="tmux-", dir=env.tmp)
        t = Tmux(work).start({"PATH": os.environ["PATH"], "TERM": "xterm",
                              "HOME": work, "PS1": "local$ "})
        self.addCleanup(t.kill)
        t.line("stty -a > %s/stty.before" % work)
        t.line(" ".join(env.ssh_argv("alice", "router-17", tty=True)))
        t.wait(r"^[#$]$", timeout=20)  # tmux drops the space at the end
        # The device's login shell here is /bin/sh; bash has completion.
        t.line("exec /bin/bash --norc --noprofile")
        t.line("PS1='TT> '; cd %s" % work)
        # Keys go to readline only once bash shows its prompt.
        t.wait(r"^TT>$", timeout=20)
        t.keys("C-l")
        t.wait(r"^TT>$")
        self.assertNotIn("PS1=", t.screen())
        # Tab completion is the device's shell.
        t.type("ech")
        t.keys("Tab")
        t.wait(r"^TT> echo$")
        t.line("tab-done")
        self.assertIn("TT> echo tab-done", t.wait(r"^tab-done$"))
        # The window: tmux's 100x30, then a resize (window-change).
        t.line("stty size")
        t.wait(r"^30 100$")
        t.resize(120, 40)
        t.line("stty size")
        t.wait(r"^40 120$")
        # vi edits a file on the device.
        path = os.path.join(work, "vi-file.txt")
        t.line("vi -u NONE -N %s" % path)
        t.wait(r"^~\s*$", count=3)
        t.keys("i")
        t.type("hello over ssh")
        t.keys("Escape")
        t.line(":wq")
        t.wait(r"^TT>$")
        srvlib.wait_until(lambda: os.path.exists(path), 5, "the file vi saved")
        with open(path) as f:
            self.assertEqual(f.read(), "hello over ssh\n")
        # top draws its screen and q ends it.
        t.line("top -d 1")
        t.wait(r"^\s*PID\s+USER", timeout=15)
        # top reads keys once its first screen is out, and a key it got
        # before (a loaded machine) may be lost: q again until the prompt
        # is the last line (top leaves its screen where it was).
        def prompt_last():
            return t.screen().rstrip("\n").split("\n")[-1] == "TT>"
        for _ in range(5):
            time.sleep(0.5)
            t.type("q")
            try:
                srvlib.wait_until(prompt_last, 3, "the prompt after top")
                break
            except TimeoutError:
                pass
        t.line("echo top-$((1+1))")
        t.wait(r"^top-2$", timeout=10)
        # Ctrl-C stops sleep 100.
        t.line("sleep 100")
        time.sleep(0.5)
        t0 = time.monotonic()
        t.keys("C-c")
        t.line("echo after-$((2+3))")
        t.wait(r"^after-5$", timeout=10)
        self.assertLess(time.monotonic() - t0, 10)
        # Leaving: the local terminal is as it was.
        t.line("clear")
        t.wait(r"^TT>$")
        self.assertNotIn("local$", t.screen())
        t.line("exit")
        t.wait(r"^local\$", timeout=15)
        t.line("stty -a > %s/stty.after" % work)
        srvlib.wait_until(lambda: os.path.exists(os.path.join(work, "stty.after")), 5,
                          "stty -a after")
        time.sleep(0.2)
        with open(os.path.join(work, "stty.before")) as a, \
                open(os.path.join(work, "stty.after")) as b:
            # rows and columns changed with the resize; nothing else may.
            strip = lambda x: re.sub(r"rows \d+; columns \d+;", "", x)  # noqa: E731
            self.assertEqual(strip(a.read()), strip(b.read()))
        end = env.wait_audit("ssh-session-end", channel="shell", pty="yes")
        start = env.wait_audit("session-start", session=end["session"])
        self.assertEqual(start.get("terminal"), "raw")


def main():
    ap = argparse.ArgumentParser(add_help=False)
    for k in ("ncgrpcd", "agent", "sshd", "cli", "stub-dir"):
        ap.add_argument("--" + k)
    args, rest = ap.parse_known_args()
    for k in ("ncgrpcd", "agent", "sshd", "cli"):
        if getattr(args, k):
            CFG[k] = os.path.abspath(getattr(args, k))
    if args.stub_dir:
        os.environ["NCGRPC_STUB_DIR"] = os.path.abspath(args.stub_dir)
    for k in ("ncgrpcd", "agent", "sshd", "cli"):
        if not CFG[k] or not os.access(CFG[k], os.X_OK):
            sys.stderr.write("test_sshd.py: --%s PATH is required (got %r)\n" % (k, CFG[k]))
            return 2
    if not Netconfd.available():
        sys.stderr.write("test_sshd.py: yuma123 netconfd is not installed\n")
        return 2
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    sys.exit(main())
