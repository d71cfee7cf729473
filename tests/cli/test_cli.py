#!/usr/bin/python3
"""End-to-end tests of ncgrpc, the operator CLI.

They run the real ncgrpcd (on loopback, with a throwaway directory holding
its configuration, self-signed certificate, registry and socket) and a real
ncgrpc-agent configured with what "ncgrpc device add" printed, whose NETCONF
backend is a trivial fake (see FAKE_NETCONF).

    test_cli.py --ncgrpc BIN --ncgrpcd BIN --agent BIN [unittest args]

Every wait is bounded; every process started here is killed at the end.
"""
import argparse
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

BIN = {}

FAKE_NETCONF = r'''#!/usr/bin/python3
# A NETCONF 1.0 backend for tests: a hello, then one reply per rpc (the
# rpc's size in <data>); <close-session/> gets <ok/> and ends the session.
import os, re, sys
EOM = b"]]>]]>"
out = sys.stdout.buffer
out.write(b'<?xml version="1.0" encoding="UTF-8"?>\n<hello xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><capabilities><capability>urn:ietf:params:netconf:base:1.0</capability></capabilities><session-id>7</session-id></hello>' + EOM)
out.flush()
buf, hello = b"", False
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    buf += chunk
    while EOM in buf:
        msg, buf = buf.split(EOM, 1)
        if not hello:
            hello = True
            continue
        m = re.search(rb'message-id="([^"]*)"', msg)
        head = b'<rpc-reply message-id="' + (m.group(1) if m else b"") + b'" xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">'
        if b"<close-session" in msg:
            out.write(head + b"<ok/></rpc-reply>" + EOM)
            out.flush()
            sys.exit(0)
        out.write(head + b"<data>" + str(len(msg)).encode() + b"</data></rpc-reply>" + EOM)
        out.flush()
'''

CLIENT_HELLO = (b'<?xml version="1.0" encoding="UTF-8"?>\n<hello xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">'
                b'<capabilities><capability>urn:ietf:params:netconf:base:1.0</capability></capabilities></hello>]]>]]>\n')


def rpc(mid, body):
    return ('<rpc message-id="%s" xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">%s</rpc>]]>]]>\n'
            % (mid, body)).encode()


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def wait_for(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out waiting for %s" % what)


def stop(proc):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Env:
    """ncgrpcd with one registered, connected agent (device "dev1")."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ncgrpc-cli-test-")
        self.daemon = self.agent = None
        self.port = free_port()
        self.conf = self.path("ncgrpcd.conf")
        with open(self.conf, "w") as f:
            f.write("# written by tests/cli\n"
                    "listen 127.0.0.1:%d\n" % self.port +
                    "".join("%s %s\n" % (k, self.path(v)) for k, v in (
                        ("certificate", "server.crt"), ("key", "server.key"),
                        ("devices", "devices"), ("audit-log", "audit.log"),
                        ("log-file", "ncgrpcd.log"), ("operator-socket", "op.sock"))) +
                    "name 127.0.0.1\n")
        self.fake = self.path("fake-netconf.py")
        with open(self.fake, "w") as f:
            f.write(FAKE_NETCONF)
        os.chmod(self.fake, 0o755)

    def path(self, name):
        return os.path.join(self.dir, name)

    def cli(self, *args, stdin=subprocess.DEVNULL, input=None, timeout=30, conf=True):
        argv = [BIN["ncgrpc"]] + (["-f", self.conf] if conf else []) + list(args)
        if input is not None:
            stdin = None
        return subprocess.run(argv, stdin=stdin, input=input, capture_output=True,
                              timeout=timeout)

    def start(self):
        with open(self.path("ncgrpcd.stderr"), "wb") as err:
            self.daemon = subprocess.Popen([BIN["ncgrpcd"], "-f", self.conf],
                                           stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=err)
        wait_for(lambda: os.path.exists(self.path("op.sock")) or self.daemon.poll() is not None,
                 15, "ncgrpcd's operator socket")
        if self.daemon.poll() is not None:
            raise AssertionError("ncgrpcd exited: %s" % self.log("ncgrpcd.log"))
        r = self.cli("device", "add", "dev1")
        if r.returncode != 0:
            raise AssertionError("device add dev1 failed: %r" % r.stderr)
        # The agent waits 30 s after a refusal: let ncgrpcd reload first.
        wait_for(lambda: re.search(r"registry reloaded \([^)]*\): 1 devices",
                                   self.log("ncgrpcd.log")), 15, "the registry reload")
        self.agent_conf = self.write_agent_conf("agent.conf", r.stdout.decode())
        self.agent = subprocess.Popen([BIN["agent"], "-f", self.agent_conf],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        self.wait_idle("dev1")

    def write_agent_conf(self, name, stanza):
        path = self.path(name)
        with open(path, "w") as f:
            f.write(stanza)
            f.write('agent {\n    log-file "%s";\n    netconf-command "%s";\n'
                    '    shell "/bin/sh";\n}\n' % (self.path("agent.log"), self.fake))
        return path

    def devices(self):
        r = self.cli("devices", "--json")
        if r.returncode != 0:
            raise AssertionError("devices --json failed: %r" % r.stderr)
        return json.loads(r.stdout)

    def wait_idle(self, dev, timeout=20):
        """Until dev has an idle connection (sessions start at once)."""
        def ready():
            return any(d["device_id"] == dev and d["idle_connections"] > 0
                       for d in self.devices())
        wait_for(ready, timeout, "an idle connection of %s" % dev)

    def log(self, name):
        try:
            with open(self.path(name), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def close(self):
        stop(self.agent)
        stop(self.daemon)
        shutil.rmtree(self.dir, ignore_errors=True)


class CliTest(unittest.TestCase):
    env = None

    @classmethod
    def setUpClass(cls):
        cls.env = Env()
        try:
            cls.env.start()
        except BaseException:
            cls.env.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.env.close()

    def setUp(self):
        # Each session uses up the agent's idle connection; it dials again.
        self.env.wait_idle("dev1")

    # device add / remove

    def test_device_add_stanza_accepted_by_agent(self):
        r = self.env.cli("device", "add", "dev-stanza")
        self.assertEqual(r.returncode, 0, r.stderr)
        text = r.stdout.decode()
        self.assertIn("device-id dev-stanza;", text)
        self.assertRegex(text, r'secret "[A-Za-z0-9_-]{32}"; ## SECRET-DATA\n')
        self.assertIn("address 127.0.0.1 {", text)
        self.assertIn("port %d;" % self.env.port, text)
        with open(self.env.path("server.crt")) as f:
            pem = f.read()
        self.assertIn('trusted-cert "%s";' % pem.replace("\n", "\\n"), text)
        conf = self.env.write_agent_conf("check.conf", text)
        c = subprocess.run([BIN["agent"], "-n", "-f", conf], capture_output=True, timeout=20)
        self.assertEqual(c.returncode, 0, c.stdout + c.stderr)
        with open(self.env.path("devices")) as f:
            self.assertRegex(f.read(), r"(?m)^dev-stanza \$scrypt\$")
        self.assertIn(b'added "dev-stanza"', r.stderr)

    def test_device_add_warns_of_names_the_certificate_lacks(self):
        """A name added after the certificate was made went into the stanza
        without a word, and the device then failed the server name check."""
        conf = self.env.path("renamed.conf")
        with open(self.env.conf) as f:
            text = f.read()
        with open(conf, "w") as f:
            f.write(text.replace(self.env.path("devices"), self.env.path("renamed-devices")) +
                    "name nms.example.net\nname 192.0.2.10\n")
        r = subprocess.run([BIN["ncgrpc"], "-f", conf, "device", "add", "renamed"],
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        err = r.stderr.decode()
        for name in ("nms.example.net", "192.0.2.10"):
            self.assertIn('ncgrpc: warning: the certificate "%s" does not name %s: a device '
                          "that dials it fails the server name check"
                          % (self.env.path("server.crt"), name), err)
        self.assertNotIn("does not name 127.0.0.1", err)
        self.assertIn(b"address nms.example.net", r.stdout)

    def test_device_add_set_form(self):
        r = self.env.cli("device", "add", "dev-set", "--set")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.decode().splitlines()
        prefix = "set system services outbound-https client ncgrpcd "
        self.assertTrue(all(l.startswith(prefix) for l in lines), lines)
        rest = [l[len(prefix):] for l in lines]
        self.assertIn("device-id dev-set", rest)
        self.assertTrue(any(re.fullmatch(r'secret "[A-Za-z0-9_-]{32}"', l) for l in rest), rest)
        self.assertIn("address 127.0.0.1 port %d" % self.env.port, rest)
        self.assertTrue(any(l.startswith('address 127.0.0.1 trusted-cert "-----BEGIN CERTIFICATE-----\\n')
                            for l in rest), rest)

    def test_duplicate_id_refused(self):
        r = self.env.cli("device", "add", "dev1")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, b"")
        self.assertIn(b'device "dev1" already exists', r.stderr)
        r = self.env.cli("device", "add", "dev1", "--secret-stdin", input=b"another\n")
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"already exists", r.stderr)

    def test_secret_stdin_and_remove(self):
        r = self.env.cli("device", "add", "dev-sec", "--secret-stdin", input=b'my "secret"\\x\n')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('secret "my \\"secret\\"\\\\x"; ## SECRET-DATA', r.stdout.decode())
        r = self.env.cli("device", "remove", "dev-sec")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(self.env.path("devices")) as f:
            self.assertNotIn("dev-sec ", f.read())
        r = self.env.cli("device", "remove", "dev-sec")
        self.assertEqual(r.returncode, 1)
        self.assertIn(b'no device "dev-sec"', r.stderr)
        r = self.env.cli("device", "add", "dev-sec2", "--secret-stdin", input=b"$9$abc\n")
        self.assertEqual(r.returncode, 1)

    def test_bad_device_id(self):
        r = self.env.cli("device", "add", "bad id")
        self.assertEqual(r.returncode, 64)

    # devices and watch

    def test_devices_table_and_json(self):
        devs = self.env.devices()
        d = [x for x in devs if x["device_id"] == "dev1"]
        self.assertEqual(len(d), 1, devs)
        d = d[0]
        self.assertEqual(set(d), {"device_id", "peer", "connected_since", "instance_id",
                                  "idle_connections", "active_sessions"})
        self.assertTrue(d["peer"].startswith("127.0.0.1:"), d)
        self.assertLess(abs(int(d["connected_since"]) - time.time()), 3600)
        self.assertGreater(int(d["instance_id"]), 0)
        self.assertGreaterEqual(d["idle_connections"], 1)
        r = self.env.cli("devices")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.decode().splitlines()
        self.assertRegex(lines[0], r"^DEVICE +PEER +CONNECTED +INSTANCE +IDLE +SESSIONS$")
        row = [l for l in lines if l.startswith("dev1 ")]
        self.assertEqual(len(row), 1, lines)
        self.assertRegex(row[0], r"^dev1 +127\.0\.0\.1:\d+ +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "
                                 r"\(\d+[smhd]\S* ago\) +%s +yes \(\d+\) +\d+$" % d["instance_id"])

    def test_watch_current(self):
        p = subprocess.Popen([BIN["ncgrpc"], "-f", self.env.conf, "watch", "--current", "--json"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        try:
            line = p.stdout.readline()
            ev = json.loads(line)
            self.assertEqual(ev["kind"], "CONNECTED")
            self.assertEqual(ev["device"]["device_id"], "dev1")
            p.send_signal(signal.SIGINT)
            self.assertEqual(p.wait(10), 0)
        finally:
            stop(p)
            p.stdout.close()
            p.stderr.close()

    def test_terminal_mode(self):
        """A pty as the terminal, line mode: Ctrl-C reaches the device,
        Ctrl-D ends.  (The raw terminal is tests/session/test_terminal.py.)"""
        pid, fd = pty.fork()
        if pid == 0:
            try:
                os.execv(BIN["ncgrpc"], [BIN["ncgrpc"], "-f", self.env.conf, "session",
                                         "dev1", "--shell", "--line"])
            finally:
                os._exit(127)
        got = b""

        def read_until(pat, timeout=15):
            nonlocal got
            end = time.monotonic() + timeout
            while not re.search(pat, got):
                left = end - time.monotonic()
                self.assertGreater(left, 0, "no %r in %r" % (pat, got))
                r, _, _ = select.select([fd], [], [], left)
                if r:
                    try:
                        d = os.read(fd, 65536)
                    except OSError:
                        d = b""
                    self.assertTrue(d, "terminal closed; got %r" % got)
                    got += d
        try:
            read_until(rb"connected to dev1 \(shell, line mode\) via 127\.0\.0\.1:\d+; "
                       rb"lines are shown once sent; Ctrl-C")
            os.write(fd, b"sleep 100\n")
            time.sleep(0.5)
            os.write(fd, b"\x03")
            os.write(fd, b"echo al\"\"ive\n")
            read_until(rb"\balive\r")
            os.write(fd, b"\x04")
            read_until(rb"ncgrpc: session ended: .*\r\n")
            _, st = os.waitpid(pid, 0)
            pid = None
            self.assertEqual(os.waitstatus_to_exitcode(st), 0)
        finally:
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            os.close(fd)

    # sessions

    def shell_script(self):
        # The pty echoes and turns \n into \r\n until stty runs; the output
        # between the markers must come through byte for byte.
        return (b"stty -echo -onlcr\n"
                b"printf '<B>\\n'; printf 'a  b  \\n\\tc \\n\\n   '; printf '<E>\\n'\n")

    def check_shell_output(self, out):
        i = out.find(b"<B>\n")
        self.assertGreaterEqual(i, 0, out)
        self.assertIn(b"<B>\na  b  \n\tc \n\n   <E>\n", out)

    def test_shell_pipe_byte_exact(self):
        r = self.env.cli("session", "dev1", "--shell", input=self.shell_script())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.check_shell_output(r.stdout)
        self.assertEqual(r.stderr, b"")

    def test_shell_file_stdin(self):
        path = self.env.path("script.sh")
        with open(path, "wb") as f:
            f.write(self.shell_script() + b"printf 'no newline at the end'")
        with open(path, "rb") as f:
            r = self.env.cli("session", "dev1", "--shell", stdin=f)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.check_shell_output(r.stdout)
        self.assertIn(b"no newline at the end", r.stdout)

    def test_shell_large_input(self):
        n = 50000
        script = b"stty -echo -onlcr\nhead -n %d | wc -l\n" % n + (b"y" * 99 + b"\n") * n + b"echo after\n"
        r = self.env.cli("session", "dev1", "--shell", input=script, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, rb"(?s)\b%d\n.*after\n" % n)

    def test_netconf_session(self):
        data = CLIENT_HELLO + rpc(1, "<get-config><source><running/></source></get-config>") + \
            rpc(2, "<close-session/>")
        r = self.env.cli("session", "dev1", "--netconf", input=data)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout
        self.assertTrue(out.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<hello '), out)
        self.assertIn(b"<session-id>7</session-id></hello>]]>]]>", out)
        self.assertIn(b'<rpc-reply message-id="1" xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><data>', out)
        self.assertTrue(out.endswith(b'<rpc-reply message-id="2" xmlns="urn:ietf:params:xml:ns:'
                                     b'netconf:base:1.0"><ok/></rpc-reply>]]>]]>'), out)

    def test_unknown_device(self):
        r = self.env.cli("session", "no-such-device", "--shell", "--wait", "1")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, b"")
        self.assertRegex(r.stderr, rb"^ncgrpc: .*no-such-device.*not registered")

    def test_unreachable_socket(self):
        sock = self.env.path("nothing-here.sock")
        for args in (("devices",), ("session", "dev1", "--shell"), ("watch",)):
            r = self.env.cli("-s", sock, *args, conf=False)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(('"%s"' % sock).encode(), r.stderr)

    def test_usage(self):
        for args in (("bogus",), ("session", "dev1"), ("session", "--shell"),
                     ("session", "dev1", "--shell", "--wait", "x"), ("devices", "extra"), ()):
            r = self.env.cli(*args)
            self.assertEqual(r.returncode, 64, (args, r.stderr))
        r = self.env.cli("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn(b"EXIT STATUS", r.stdout)
        # Help after a command is help, not a usage error (it was exit 64,
        # "unknown option"); the cluster commands have their own page.
        for args in (("session", "--help"), ("session", "dev1", "--shell", "-h"),
                     ("device", "add", "--help"), ("devices", "--help"), ("watch", "-h")):
            r = self.env.cli(*args)
            self.assertEqual((r.returncode, r.stderr), (0, b""), args)
            self.assertIn(b"EXIT STATUS", r.stdout, args)
        for args in (("cluster", "--help"), ("cluster", "ca", "--help"),
                     ("cluster", "node-cert", "-h")):
            r = self.env.cli(*args)
            self.assertEqual((r.returncode, r.stderr), (0, b""), args)
            self.assertIn(b"usage: ncgrpc cluster status", r.stdout, args)
        # After "--" it is an argument again.
        r = self.env.cli("session", "--", "--help")
        self.assertEqual(r.returncode, 64)

    def test_help_and_version_of_every_program(self):
        """--help and --version, as users expect of every program (the daemons
        said "invalid option" and exited 64)."""
        for prog in ("ncgrpc", "ncgrpcd", "agent"):
            name = "ncgrpc-agent" if prog == "agent" else prog
            for flag in ("--help", "-h"):
                r = subprocess.run([BIN[prog], flag], capture_output=True, timeout=10)
                self.assertEqual(r.returncode, 0, (name, flag, r.stderr))
                self.assertRegex(r.stdout, rb"(usage: |SYNOPSIS\n +)%s \[" % name.encode())
                self.assertEqual(r.stderr, b"")
            for flag in ("--version", "-V"):
                r = subprocess.run([BIN[prog], flag], capture_output=True, timeout=10)
                self.assertEqual(r.returncode, 0, (name, flag, r.stderr))
                self.assertRegex(r.stdout, rb"^%s \d+\.\d+\.\d+\n$" % name.encode())
            r = subprocess.run([BIN[prog], "--no-such-option"], capture_output=True, timeout=10)
            self.assertEqual(r.returncode, 64, name)


class FirstStartCheckTest(unittest.TestCase):
    """ncgrpcd -n, the systemd unit's ExecStartPre, on a first install: it
    promised files that the first start could not make (a read-only /etc
    under ProtectSystem), and the unit then failed at its start."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ncgrpcd-check-test-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def check(self, certdir, ticket=None):
        conf = os.path.join(self.dir, "ncgrpcd.conf")
        with open(conf, "w") as f:
            f.write("listen 127.0.0.1:1\n"
                    "certificate %s/server.crt\nkey %s/server.key\n" % (certdir, certdir) +
                    "".join("%s %s\n" % (k, os.path.join(self.dir, v)) for k, v in (
                        ("devices", "devices"), ("audit-log", "audit.log"),
                        ("log-file", "ncgrpcd.log"), ("operator-socket", "op.sock"))) +
                    ("tls-ticket-key %s\n" % ticket if ticket else ""))
        return subprocess.run([BIN["ncgrpcd"], "-n", "-f", conf], capture_output=True,
                              timeout=20)

    def test_missing_files_that_will_be_made(self):
        # One missing level of directory is made at the start, as packagers
        # leave it to the daemon.
        certdir = os.path.join(self.dir, "tls")
        r = self.check(certdir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"server.crt: missing (a self-signed certificate will be made)", r.stdout)
        self.assertIn(b"devices: missing (it will be created empty)", r.stdout)
        self.assertEqual(r.stderr, b"")
        self.assertEqual(sorted(os.listdir(self.dir)), ["ncgrpcd.conf"], "-n makes nothing")

    def test_certificate_that_cannot_be_made(self):
        certdir = os.path.join(self.dir, "no", "such")
        r = self.check(certdir)
        self.assertEqual(r.returncode, 1)
        self.assertIn(("ncgrpcd: certificate %s/server.crt is missing and cannot be made "
                       "there: No such file or directory" % certdir).encode(), r.stderr)

    def test_init_makes_the_first_start_files(self):
        """--init, which the unit runs outside its sandbox (ExecStartPre=+),
        makes what the first start would, and nothing more, and then -n
        (the sandboxed ExecStartPre) passes."""
        certdir = os.path.join(self.dir, "tls")
        self.check(certdir)  # writes the configuration
        conf = os.path.join(self.dir, "ncgrpcd.conf")
        r = subprocess.run([BIN["ncgrpcd"], "--init", "-f", conf], capture_output=True,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        made = {p: os.stat(p).st_mode & 0o777 for p in (
            os.path.join(certdir, "server.crt"), os.path.join(certdir, "server.key"),
            os.path.join(certdir, "tls_ticket_key"), os.path.join(self.dir, "devices"))}
        self.assertEqual(list(made.values()), [0o644, 0o600, 0o600, 0o600])
        self.assertFalse(os.path.exists(os.path.join(self.dir, "ncgrpcd.log")))
        self.assertFalse(os.path.exists(os.path.join(self.dir, "op.sock")))
        before = {p: open(p, "rb").read() for p in made}
        r = subprocess.run([BIN["ncgrpcd"], "-I", "-f", conf], capture_output=True, timeout=30)
        self.assertEqual((r.returncode, r.stderr), (0, b""))
        self.assertEqual({p: open(p, "rb").read() for p in made}, before, "kept as they were")
        r = subprocess.run([BIN["ncgrpcd"], "-n", "-f", conf], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b": 0 devices", r.stdout)
        r = subprocess.run([BIN["ncgrpcd"], "-n", "--init", "-f", conf], capture_output=True,
                           timeout=30)
        self.assertEqual(r.returncode, 64)

    def test_certificate_without_its_key(self):
        # As the start: a key without its certificate is an error, not a
        # certificate to be made (one is made only where neither is).
        open(os.path.join(self.dir, "server.key"), "w").close()
        r = self.check(self.dir)
        self.assertEqual(r.returncode, 1)
        self.assertNotIn(b"certificate will be made", r.stdout)
        self.assertIn(("ncgrpcd: cannot open '%s/server.crt': No such file or directory"
                       % self.dir).encode(), r.stderr)

    def test_cluster_without_forwarding_is_a_warning(self):
        """A node of a cluster without cluster-listen or cluster-address
        passed -n, and then never forwarded a session either way."""
        r = self.check(self.dir)
        conf = os.path.join(self.dir, "ncgrpcd.conf")
        with open(conf, "a") as f:
            f.write("cluster-etcd 127.0.0.1:2379\n")
        r = subprocess.run([BIN["ncgrpcd"], "-n", "-f", conf], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"ncgrpcd: warning: cluster-etcd without cluster-listen: no session is "
                      b"forwarded", r.stderr)
        # What the start refuses, -n refuses too (it said OK, and the unit's
        # start failed).
        with open(conf) as f:
            base = f.read()
        for etcd, why in (("127.0.0.1:2379:9", b'is not a list of etcd endpoints'),
                          ("https://127.0.0.1:2379", b"https endpoints need cluster-etcd-ca")):
            with open(conf, "w") as f:
                f.write(base.replace("cluster-etcd 127.0.0.1:2379\n", "cluster-etcd %s\n" % etcd))
            r = subprocess.run([BIN["ncgrpcd"], "-n", "-f", conf], capture_output=True,
                               timeout=30)
            self.assertEqual(r.returncode, 1, (etcd, r.stderr))
            self.assertIn(why, r.stderr)

    def test_ticket_key_that_cannot_be_made_is_a_warning(self):
        ticket = os.path.join(self.dir, "no", "such", "tls_ticket_key")
        r = self.check(self.dir, ticket)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(("ncgrpcd: warning: tls-ticket-key %s is missing and cannot be made "
                       "there" % ticket).encode(), r.stderr)
        self.assertIn(b"configuration OK", r.stdout)


class ClusterPkiTest(unittest.TestCase):
    def test_node_cert_addresses(self):
        """--address 10.0.0.4:7443 (cluster-address, as the help suggested)
        became DNS:10.0.0.4:7443, and [fd00::1] DNS:[fd00::1]: names no
        handshake matches."""
        d = tempfile.mkdtemp(prefix="ncgrpc-pki-test-")
        try:
            ca = os.path.join(d, "ca")
            r = subprocess.run([BIN["ncgrpc"], "cluster", "ca", "init", ca],
                               capture_output=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            r = subprocess.run([BIN["ncgrpc"], "cluster", "node-cert", "--ca", ca, "--out", d,
                                "n1", "--address", "10.0.0.4:7443"],
                               capture_output=True, timeout=30)
            self.assertEqual(r.returncode, 64)
            self.assertIn(b'without a port, not "10.0.0.4:7443"', r.stderr)
            self.assertFalse(os.path.exists(os.path.join(d, "n1.crt")))
            r = subprocess.run([BIN["ncgrpc"], "cluster", "node-cert", "--ca", ca, "--out", d,
                                "n1", "--address", "[fd00::1]", "--address", "10.0.0.4"],
                               capture_output=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            r = subprocess.run(["openssl", "x509", "-in", os.path.join(d, "n1.crt"), "-noout",
                                "-ext", "subjectAltName"], capture_output=True, text=True,
                               timeout=30)
            self.assertIn("IP Address:FD00:0:0:0:0:0:0:1", r.stdout)
            self.assertIn("IP Address:10.0.0.4", r.stdout)
            self.assertNotIn("[", r.stdout)
        finally:
            shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ncgrpc", required=True)
    ap.add_argument("--ncgrpcd", required=True)
    ap.add_argument("--agent", required=True)
    args, rest = ap.parse_known_args()
    BIN.update(ncgrpc=os.path.abspath(args.ncgrpc), ncgrpcd=os.path.abspath(args.ncgrpcd),
               agent=os.path.abspath(args.agent))
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
