#!/usr/bin/python3
"""A real terminal on the device (the raw-terminal extension, docs/protocol.md).

    test_terminal.py --ncgrpcd PATH --agent PATH --cli PATH [--certs DIR]
                     [--stub-dir DIR] [unittest args]

RawTmuxTest: `ncgrpc session DEV --shell` in a tmux pane, through ncgrpcd and
ncgrpc-agent on loopback: Tab completion, vi (the file it saves is read back),
top and q, a resized window read with `stty size` on the device, Ctrl-C
ending `sleep 100`, `~~`, `~?`, `~^Z` and fg (the terminal is as it was
while suspended), and `~.` leaving with the local terminal as it was
(`stty -a` before and after).  The screen is read with `tmux capture-pane`.

LineTmuxTest: `--line` with our agent (a pty that echoes, as Junos does):
each line shows once, not twice.

NmsFallbackTest: ncgrpc-agent against a grpcio NMS written from the wire
contract, which does not know the extension: the agent offers it in its
Initialize metadata, and the session stays in line mode (TERM=dumb, lines).

ApiRawTest: the same through the operator API: bad terminal modes and window
sizes refused, TERM and window sizes on the device, a character split
between messages, a 100,000-byte paste relayed uncut, Ctrl-C as a key.

AgentRawTest: ncgrpc-agent against a grpcio NMS that grants the extension
with a bad window and TERM (the agent falls back), then sends window sizes
as field 100, one out of range (ignored); input gets no newline added.

DeviceFallbackTest: ncgrpcd with a grpcio device written from the contract
(tests/server/devemu.py), which does not offer it: ncgrpcd sends it no
extension trailer, relays lines, and the CLI says it is in line mode.

Every wait is a bounded poll.
"""
import sys

sys.dont_write_bytecode = True

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402

os.environ.setdefault("GRPC_VERBOSITY", "NONE")

HERE = os.path.dirname(os.path.abspath(__file__))
for _d in ("server", "agent", "interop"):
    sys.path.insert(0, os.path.join(HERE, "..", _d))

import agentlib  # noqa: E402
# grpcio must not run pthread_atfork handlers: the harness forks (subprocess)
# while its threads run, and the handler once waited forever in fork().
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import grpc  # noqa: E402
import srvlib  # noqa: E402

CFG = {"ncgrpcd": None, "agent": None, "cli": None, "certs": None, "stub_dir": None}
PROMPT = "TT> "


def now():
    return time.monotonic()


class Tmux:
    """One tmux server on a private socket, one window of 100x30 cells."""

    def __init__(self, workdir):
        self.sock = os.path.join(workdir, "tmux.sock")
        self.conf = os.path.join(workdir, "tmux.conf")
        with open(self.conf, "w") as f:
            # No status line: the pane is the whole window.
            f.write("set -g status off\nset -g escape-time 0\n"
                    "set -g default-terminal tmux-256color\n")

    def run(self, *args, check=True):
        return subprocess.run(["tmux", "-S", self.sock, "-f", self.conf] + list(args),
                              check=check, capture_output=True, text=True, timeout=10)

    def start(self, env):
        cmd = "env -i %s /bin/bash --norc --noprofile" % " ".join(
            "%s=%s" % kv for kv in sorted(env.items()))
        self.run("new-session", "-d", "-s", "t", "-x", "100", "-y", "30", cmd)
        return self

    def keys(self, *keys):
        self.run("send-keys", "-t", "t", *keys)

    def type(self, text):
        self.run("send-keys", "-t", "t", "-l", text)

    def line(self, text):
        self.type(text)
        self.keys("Enter")

    def screen(self):
        """The visible screen; tmux drops the spaces at the end of lines."""
        return self.run("capture-pane", "-p", "-t", "t").stdout

    def wait(self, pattern, timeout=10, count=1):
        """Polls the screen until pattern (a regex) matches count times."""
        rx = re.compile(pattern, re.M)
        deadline = now() + timeout
        while True:
            s = self.screen()
            if len(rx.findall(s)) >= count:
                return s
            if now() > deadline:
                raise AssertionError("no %r on the screen within %.1f s:\n%s"
                                     % (pattern, timeout, s))
            time.sleep(0.05)

    def clear(self):
        self.run("clear-history", "-t", "t", check=False)

    def resize(self, x, y):
        self.run("resize-window", "-t", "t", "-x", str(x), "-y", str(y))

    def kill(self):
        self.run("kill-server", check=False)


class Base(unittest.TestCase):
    maxDiff = 4000

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ncgrpc-term-")
        os.chmod(self.tmp, 0o755)
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def start_ncgrpcd(self, devices):
        srv = srvlib.Ncgrpcd(CFG["ncgrpcd"], os.path.join(self.tmp, "srv"))
        os.makedirs(srv.workdir)
        for dev, secret in devices.items():
            srv.add_device(dev, secret, write=False)
        srv.write_registry()
        srv.start()
        self.addCleanup(self.no_sanitizer_report, srv.stdout_path)
        self.addCleanup(srv.stop)
        return srv

    def start_agent(self, srv, dev, secret):
        a = srvlib.Agent(CFG["agent"], os.path.join(self.tmp, "agent-" + dev))
        os.makedirs(a.workdir)
        a.configure([srvlib.Client("c0", dev, secret, [srv.addr()], waittime=1)],
                    ['shell "/bin/bash";'])
        a.start()
        self.addCleanup(self.no_sanitizer_report, a.stdout_path)
        self.addCleanup(a.stop)
        return a

    def no_sanitizer_report(self, path):
        """Under ASan/UBSan (scripts/test), a report fails the test."""
        try:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return
        self.assertNotRegex(text, r"AddressSanitizer|LeakSanitizer|runtime error:")

    def wait_device(self, srv, dev, timeout=20):
        def idle():
            out = subprocess.run([CFG["cli"], "-f", srv.conf_path, "devices", "--json"],
                                 capture_output=True, text=True, timeout=10).stdout
            try:
                devs = json.loads(out or "[]")
            except ValueError:
                return False
            return any(d.get("device_id") == dev and int(d.get("idle_connections", 0)) > 0
                       for d in devs)
        srvlib.wait_until(idle, timeout, "device %s with an idle connection" % dev)

    def tmux(self):
        if shutil.which("tmux") is None:
            self.skipTest("tmux is not installed")
        t = Tmux(self.tmp)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": self.tmp,
               "TERM": "tmux-256color", "LANG": "C.UTF-8", "PS1": "local$ "}
        t.start(env)
        self.addCleanup(t.kill)
        t.wait(r"^local\$$")
        return t

    def cli_cmd(self, srv, dev, *extra, status=True):
        """The command line of the CLI, followed by its exit status unless
        the test types that itself (a job stopped by ~^Z ends the list)."""
        return "%s -f %s session %s --shell %s%s" % (
            CFG["cli"], srv.conf_path, dev, " ".join(extra),
            "; echo cli-exit=$?" if status else "")


# ---------------------------------------------------------------------------
class RawTmuxTest(Base):
    """The whole terminal: keys, screen programs, window, signals, escape."""

    def test_raw_terminal(self):
        srv = self.start_ncgrpcd({"tt1": "tt1-secret"})
        agent = self.start_agent(srv, "tt1", "tt1-secret")
        self.wait_device(srv, "tt1")
        t = self.tmux()
        before = os.path.join(self.tmp, "stty.before")
        after = os.path.join(self.tmp, "stty.after")
        t.line("stty -a > %s" % before)
        t.wait(r"^local\$", count=2)
        t.line(self.cli_cmd(srv, "tt1", status=False))
        t.wait(r"connected to tt1 \(shell, raw terminal\)")
        # A prompt we can find, set by keys the device echoes.
        t.line("PS1='%s'; cd %s" % (PROMPT, self.tmp))
        t.wait("^" + PROMPT.strip())
        t.keys("C-l")
        t.wait(r"^TT>$")

        # Tab completion is the device's bash: "ech" + Tab -> "echo ".
        t.type("ech")
        t.keys("Tab")
        t.wait(r"^TT> echo$")
        t.line("tab-done")
        s = t.wait(r"^tab-done$")
        self.assertIn("TT> echo tab-done", s)

        # The window: 100x30 from the start, then resized.
        t.line("stty size")
        t.wait(r"^30 100$")
        t.resize(120, 40)
        t.line("stty size")
        t.wait(r"^40 120$")

        # vi: insert, save, quit; the file on the device is what was typed.
        path = os.path.join(self.tmp, "vi-file.txt")
        t.line("vi -u NONE -N %s" % path)
        t.wait(r"^~\s*$", count=3)
        t.keys("i")
        t.type("hello from vi")
        t.keys("Escape")
        t.line(":wq")
        t.wait(r"^TT>$")
        srvlib.wait_until(lambda: os.path.exists(path), 5, "the file vi saved")
        with open(path) as f:
            self.assertEqual(f.read(), "hello from vi\n")

        # top draws its screen; q ends it.
        t.line("top -d 1")
        t.wait(r"^\s*PID\s+USER", timeout=15)
        t.type("q")
        t.wait(r"^TT>$", timeout=10)

        # Ctrl-C is a key: the device's terminal makes it SIGINT.
        t.line("sleep 100")
        srvlib.wait_until(lambda: any(agentlib.comm(p) == "sleep"
                                      for p in agentlib.descendants(agent.pid)), 10,
                          "sleep 100 on the device")
        t0 = now()
        t.keys("C-c")
        t.wait(r"^TT>$", timeout=5)
        self.assertLess(now() - t0, 3.0)
        t.line("echo status=$?")
        t.wait(r"^status=130$")

        # "~~" at the start of a line (after Enter) sends one "~".
        t.keys("Enter")
        t.wait(r"^TT>$", count=2)
        t.type("~~")
        t.line("/ 2>/dev/null; echo tilde")
        s = t.wait(r"^tilde$")
        self.assertIn("TT> ~/ 2>/dev/null; echo tilde", s)

        # "~?" lists the escapes; "~^Z" suspends ncgrpc (the local shell
        # has the terminal back), and fg takes it back raw.
        t.type("~?")
        t.wait(r"^  ~\^Z  suspend ncgrpc")
        t.type("~")
        t.keys("C-z")
        t.wait(r"^\[1\]\+\s+Stopped")
        t.line("stty -a > %s" % os.path.join(self.tmp, "stty.suspended"))
        t.line("fg")
        t.line("echo back-$((1+1))")
        t.wait(r"^back-2$")

        # "~." at the start of a line leaves; the terminal is as it was.
        t.keys("Enter")
        t.type("~.")
        t.wait(r"^local\$$")
        t.line("echo cli-exit=$?")
        s = t.wait(r"^cli-exit=\d+$")
        self.assertIn("cli-exit=0", s)
        self.assertIn("leaving the session (~.)", s)
        t.line("stty -a > %s" % after)
        srvlib.wait_until(lambda: os.path.exists(after) and os.path.getsize(after) > 0, 5,
                          "stty -a after the session")
        # The window was resized meanwhile: everything else must match.
        size = re.compile(r"rows \d+; columns \d+;")
        with open(before) as f1, open(after) as f2:
            self.assertEqual(size.sub("", f1.read()), size.sub("", f2.read()))
        with open(before) as f1, open(os.path.join(self.tmp, "stty.suspended")) as f2:
            self.assertEqual(size.sub("", f1.read()), size.sub("", f2.read()))
        # The session is over on the device too.
        srvlib.wait_until(lambda: not any(agentlib.comm(p) == "bash"
                                          for p in agentlib.descendants(agent.pid)), 5,
                          "the device's shell gone")
        audit = srv.audit.text()
        self.assertRegex(audit, r"event=session-start .*terminal=raw")
        self.assertRegex(audit, r"event=session-end .*raw-input-messages=\d+")
        self.assertNotIn("event=shell-line", audit)


class LineTmuxTest(Base):
    """Line mode in a terminal (--line, or a device without the extension):
    the device echoes each line, the local terminal does not."""

    def test_no_double_echo(self):
        srv = self.start_ncgrpcd({"tl1": "tl1-secret"})
        self.start_agent(srv, "tl1", "tl1-secret")
        self.wait_device(srv, "tl1")
        t = self.tmux()
        t.line(self.cli_cmd(srv, "tl1", "--line"))
        t.wait(r"connected to tl1 \(shell, line mode\)")
        t.line("PS1='%s'" % PROMPT)
        t.wait("^" + PROMPT.strip())
        t.line("echo one-$((40+2))")
        s = t.wait(r"^one-42\r?$")
        self.assertEqual(s.count("echo one-$((40+2))"), 1, s)
        t.keys("C-d")
        s = t.wait(r"^cli-exit=\d+$")
        self.assertIn("cli-exit=0", s)
        audit = srv.audit.text()
        self.assertRegex(audit, r"event=session-start .*terminal=line")
        self.assertIn("line=\"echo one-$((40+2))\"", audit)


# ---------------------------------------------------------------------------
class ApiRawTest(Base):
    """The raw terminal through the operator API: what ncgrpcd checks and
    how raw bytes travel (no line cutting, pieces, split characters)."""

    def setUp(self):
        super().setUp()
        import opclient
        self.pb = opclient.pb
        self.srv = self.start_ncgrpcd({"ar1": "ar1-secret"})
        self.agent = self.start_agent(self.srv, "ar1", "ar1-secret")
        self.wait_device(self.srv, "ar1")
        self.op = opclient.OpClient(self.srv.sock)
        self.addCleanup(self.op.close)

    def open(self, **kw):
        pb = self.pb
        first = pb.SessionInput(open=pb.SessionOpen(device_id="ar1", type=pb.SHELL, **kw))
        return self.op.session("ar1", "csh", first=first)

    def raw_session(self):
        pb = self.pb
        s = self.open(terminal=pb.RAW, window=pb.WindowSize(cols=91, rows=17),
                      term="vt100")
        st = s.wait_started(15)
        self.assertEqual(st.terminal, pb.RAW)
        self.addCleanup(s.cancel)
        s.send(b"PS1='AR''> '; bind 'set enable-bracketed-paste off'\r")
        s.read_until(b"\rAR> ", 10)
        return s

    def test_open_refused(self):
        pb = self.pb
        for kw in ({"terminal": pb.RAW, "window": pb.WindowSize(cols=0, rows=24)},
                   {"terminal": pb.RAW, "window": pb.WindowSize(cols=80, rows=4097)},
                   {"terminal": 7}):
            s = self.open(**kw)
            self.assertEqual(s.wait_done(10), grpc.StatusCode.INVALID_ARGUMENT, kw)
            self.assertIn("terminal mode or window size", s.details)

    def test_window_and_term(self):
        s = self.raw_session()
        s.send(b"echo $TERM $(stty size)\r")
        s.read_until(b"\r\nvt100 17 91\r\n", 10)
        s.send_raw(self.pb.SessionInput(window=self.pb.WindowSize(cols=132, rows=43)))
        s.send(b"stty size\r")
        s.read_until(b"\r\n43 132\r\n", 10)
        # Out of range: the session ends, the device is not asked.
        s.send_raw(self.pb.SessionInput(window=self.pb.WindowSize(cols=132, rows=70000)))
        self.assertEqual(s.wait_done(10), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(s.details, "window size out of range")
        self.assertEqual(self.agent.log.find(r"ignoring a window"), [])

    def test_raw_bytes(self):
        s = self.raw_session()
        # A character split between two messages arrives whole.
        s.send(b"echo x\xc3")
        s.send(b"\xa9y\r")
        s.read_until("\r\nx\u00e9y\r\n".encode(), 10)
        # 100,000 bytes in one message, no newline: relayed uncut (in pieces
        # for the device) to a program that reads the raw terminal.
        path = os.path.join(self.tmp, "paste")
        s.send(("stty raw -echo; head -c 100000 > %s; stty sane; echo pasted-$?\r"
                % path).encode())
        srvlib.wait_until(lambda: any(agentlib.comm(p) == "head"
                                      for p in agentlib.descendants(self.agent.pid)), 10,
                          "head on the device")
        s.send(b"p" * 100000)
        s.read_until(b"pasted-0", 20)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"p" * 100000)
        # Ctrl-C as a key reaches the foreground job through the pty.
        s.send(b"sleep 100\r")
        srvlib.wait_until(lambda: any(agentlib.comm(p) == "sleep"
                                      for p in agentlib.descendants(self.agent.pid)), 10,
                          "sleep on the device")
        s.send(b"\x03")
        s.read_until(b"AR> ", 5)
        s.send(b"exit\r")
        self.assertEqual(s.wait_done(10), grpc.StatusCode.OK)
        audit = self.srv.audit.text()
        self.assertRegex(audit, r"event=session-end .*raw-input-messages=\d+")
        self.assertNotIn("pppp", audit)


# ---------------------------------------------------------------------------
class NmsFallbackTest(Base):
    """ncgrpc-agent and an NMS that does not know the extension."""

    def test_agent_stays_in_line_mode(self):
        from nms import NMS

        def pem(name):
            with open(os.path.join(CFG["certs"], name)) as f:
                return f.read()

        nms = NMS(pem("server.pem"), pem("server.key"), {"fb1": "fb1-secret"},
                  stub_dir=CFG["stub_dir"]).start()
        self.addCleanup(nms.stop)
        a = agentlib.Agent(CFG["agent"], os.path.join(self.tmp, "agent"))
        os.makedirs(a.workdir)
        a.configure([agentlib.Client("c0", "fb1", "fb1-secret",
                                     [agentlib.Addr(nms.port, cert_pem=pem("ca.pem"))],
                                     waittime=1)], ['shell "/bin/bash";'])
        a.start()
        self.addCleanup(a.stop)
        sess = nms.open_session("fb1", "csh", 15)
        # The agent offered the extension, as unknown metadata...
        init = [r for r in nms.inits if r.state == "granted"][-1]
        self.assertIn(("ncgrpc-terminal", "raw"), init.metadata)
        # ...which this NMS ignored: no grant came back, and the stream
        # carries only the contract's metadata.
        self.assertEqual([k for k, _ in sess.metadata if k.startswith("ncgrpc-")], [])
        sess.read_until(re.compile(r"[$#] $"), 15)
        # Line mode: csh_command is a line (the agent adds the newline), and
        # the shell's terminal is the plain one of line mode.
        sess.send_csh("echo term=$TERM size=$(stty size)")
        out = sess.read_until(re.compile(r"term=\S+ size=\d+ \d+"), 10)
        self.assertRegex(out, r"term=dumb size=24 80")
        sess.send_csh("exit")
        self.assertTrue(sess.ended.wait(10))
        self.assertFalse(a.find(r"raw terminal"))


class AgentRawTest(Base):
    """ncgrpc-agent alone, against a grpcio NMS that grants the extension
    with bad values, and sends window sizes as field 100."""

    def test_agent_raw(self):
        from nms import NMS

        def pem(name):
            with open(os.path.join(CFG["certs"], name)) as f:
                return f.read()

        nms = NMS(pem("server.pem"), pem("server.key"), {"ag1": "ag1-secret"},
                  stub_dir=CFG["stub_dir"]).start()
        self.addCleanup(nms.stop)
        a = agentlib.Agent(CFG["agent"], os.path.join(self.tmp, "agent"))
        os.makedirs(a.workdir)
        a.configure([agentlib.Client("c0", "ag1", "ag1-secret",
                                     [agentlib.Addr(nms.port, cert_pem=pem("ca.pem"))],
                                     waittime=1)], ['shell "/bin/bash";'])
        a.start()
        self.addCleanup(a.stop)
        sess = nms.open_session("ag1", "csh", 15, trailers=(
            ("ncgrpc-terminal", "raw"), ("ncgrpc-window", "0x24"),
            ("ncgrpc-term", "xterm;reboot")))
        pb = nms.pb

        def window(raw):
            # Field 100 is not in ncgrpc.proto: python keeps it as an
            # unknown field and sends it on, as a peer would.
            return pb.NcgrpcCommandGetResponse.FromString(b"\xa2\x06" + bytes([len(raw)]) + raw)

        sess.read_until(re.compile(r"[$#] $"), 15)
        # No newline is added: "ech" waits for the rest of the line.
        sess.send_csh("PS1='AG''> '; ech")
        sess.send_csh("o $TERM $(stty size)\r")
        out = sess.read_until(re.compile(r"[\r\n]\S+ \d+ \d+\r\n"), 10)
        # A bad size and a bad type fall back to 80x24 and xterm.
        self.assertRegex(out, r"[\r\n]xterm 24 80\r\n$")
        sess._send(window(b"\x08\x78\x10\x28"))  # 120x40
        sess.send_csh("stty size\r")
        sess.read_until(re.compile(r"[\r\n]40 120\r\n"), 10)
        sess._send(window(b"\x08\x00\x10\x28"))  # 0x40: ignored
        sess.send_csh("stty size\r")
        sess.read_until(re.compile(r"[\r\n]40 120\r\n"), 10)
        a.wait_log(r"ignoring a window of 0x40 from the server: out of range", 5)
        self.assertTrue(a.find(r"session \d+ \(shell, raw terminal\) started"))
        self.assertTrue(a.find(r"ignoring an invalid terminal type"))
        self.assertTrue(a.find(r"ignoring an invalid window size"))
        sess.send_csh("exit\r")
        self.assertTrue(sess.ended.wait(10))


class DeviceFallbackTest(Base):
    """ncgrpcd and a device that does not offer the extension (devemu.py)."""

    def test_ncgrpcd_and_cli_stay_in_line_mode(self):
        import devemu

        srv = self.start_ncgrpcd({"emu1": "emu1-secret"})
        emu = devemu.DevEmu(srv.target(), srv.cert_pem(), "emu1", "emu1-secret").start()
        self.addCleanup(emu.stop)
        emu.wait_waiting(20)
        t = self.tmux()
        t.line(self.cli_cmd(srv, "emu1"))
        s = t.wait(r"connected to emu1 \(shell, line mode\)")
        self.assertIn("ncgrpc: emu1 does not offer a raw terminal: line mode", s)
        t.line("echo fallback-ok")
        t.wait(r"fallback-ok")
        emu.wait_sessions(1, 10)
        es = emu.sessions[-1]
        srvlib.wait_until(lambda: "echo fallback-ok" in es.commands, 5,
                          "the line on the device")
        # Lines, as the contract says; no extension metadata or trailer.
        self.assertEqual([k for k, _ in es.metadata if k.startswith("ncgrpc-")], [])
        t.keys("C-d")
        s = t.wait(r"^cli-exit=\d+$", timeout=15)
        self.assertIn("cli-exit=0", s)
        self.assertRegex(srv.audit.text(), r"event=session-start .*terminal=line")


def main():
    ap = argparse.ArgumentParser(add_help=False)
    for k in ("ncgrpcd", "agent", "cli", "certs", "stub-dir"):
        ap.add_argument("--" + k)
    args, rest = ap.parse_known_args()
    for k in ("ncgrpcd", "agent", "cli", "certs", "stub_dir"):
        if getattr(args, k):
            CFG[k] = getattr(args, k)
    if CFG["stub_dir"]:
        os.environ["NCGRPC_STUB_DIR"] = CFG["stub_dir"]
    if not (CFG["agent"] and CFG["ncgrpcd"] and CFG["cli"]):
        sys.stderr.write("test_terminal.py: need --ncgrpcd, --agent and --cli\n")
        return 64
    tmp_certs = None
    if not CFG["certs"]:
        tmp_certs = tempfile.mkdtemp(prefix="ncgrpc-term-certs-")
        subprocess.run([sys.executable, os.path.join(HERE, "..", "interop", "mkcerts.py"),
                        tmp_certs], check=True, timeout=60, stdout=subprocess.DEVNULL)
        CFG["certs"] = tmp_certs
    try:
        prog = unittest.main(module=__name__, argv=[sys.argv[0]] + rest, exit=False,
                             verbosity=2)
        return 0 if prog.result.wasSuccessful() else 1
    finally:
        if tmp_certs:
            shutil.rmtree(tmp_certs, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
