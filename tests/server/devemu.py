"""A device emulator behaving like the Junos JET outbound-https application,
written from the wire contract (docs/protocol.md) with python3-grpcio (it shares no code with
ncgrpc-agent).

    emu = DevEmu("127.0.0.1:4443", ca_pem, "r1", "secret").start()
    emu.wait_waiting(10)        # an Initialize is being held by the server
    ...                          # an operator opens sessions through ncgrpcd
    emu.stop()

Per emulator start a random instance_id is drawn.  The client loop:
  1. a NEW channel (its own TCP+TLS connection: a local subchannel pool),
  2. NcgrpcServerStatusGet, which must answer SUCCESS,
  3. NcgrpcInitialize{instance_id, device_id, secret_key}, a long poll,
  4. on an answer: NcgrpcCommandGet on the same channel with the trailing
     metadata of Initialize (minus grpc-* keys) as request metadata, run in
     its own thread, while the loop goes back to 1 at once.
Failures (UNAUTHENTICATED or a lost connection) wait `waittime` seconds.

Backends are in-process:
  - NETCONF: sends a <hello> (base:1.0, ]]>]]> framing) first, answers each
    <rpc> with an <rpc-reply> holding <ok/>, ends after <close-session>.
  - shell (CSH): each csh_command is one line run with /bin/sh -c in its own
    process group, its output streamed as it comes; kill_signal is sent to
    the running command's process group; "exit" ends the session.
Output is sent as valid UTF-8, never splitting a multi-byte sequence.

Run as a script: devemu.py --target HOST:PORT --ca PEMFILE --device-id ID
--secret S [--count N] (N emulators with ids ID-0..ID-N-1 when N > 1).
"""
import argparse
import codecs
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time

# grpcio must not run pthread_atfork handlers: the harness forks (subprocess)
# while its threads run, and the handler once waited forever in fork().
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pstubs  # noqa: E402

pb = pstubs.load("ncgrpc")

SVC = "/jnx.jet.netconf.Ncgrpc/"
EOM = "]]>]]>"
NC_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
CHUNK = 16 * 1024
_ser = lambda m: m.SerializeToString()  # noqa: E731


class EmuSession:
    """One NcgrpcCommandGet stream of the emulator, and its backend."""

    def __init__(self, emu, channel, session_type, metadata, index):
        self.emu = emu
        self.channel = channel
        self.type = session_type          # "netconf" | "csh"
        self.metadata = metadata          # sent as request metadata
        self.index = index
        self._out = queue.Queue()         # NcgrpcCommandGetRequest; None half-closes
        self.commands = []                # netconf_command / csh_command received
        self.signals = []                 # kill_signal values received
        self.operations = []              # NETCONF rpc operation names
        self.bytes_up = 0
        self.end_reason = None            # backend-exit | cancelled | error: ...
        self.ended = threading.Event()
        self._proc = None                 # running shell command
        self._proc_lock = threading.Lock()
        self._cmdq = queue.Queue()
        self._nc_buf = ""
        self._stopping = False
        self.call = None

    # ----- output to the server ----------------------------------------------------
    def _requests(self):
        while True:
            m = self._out.get()
            if m is None:
                return
            yield m

    def emit(self, text):
        if not text:
            return
        for i in range(0, len(text), CHUNK):
            part = text[i:i + CHUNK]
            self.bytes_up += len(part.encode("utf-8"))
            self._out.put(pb.NcgrpcCommandGetRequest(message=part))

    def finish(self):
        """The backend is over: half-close the stream (status OK from the server)."""
        self._out.put(None)

    # ----- the stream -----------------------------------------------------------------
    def run(self):
        method = self.channel.stream_stream(SVC + "NcgrpcCommandGet",
                                            request_serializer=lambda m: self.emu.encode(m),
                                            response_deserializer=pb.NcgrpcCommandGetResponse.FromString)
        try:
            self.call = method(self._requests(), metadata=self.metadata)
            if self.type == "netconf":
                self.emit(self.emu.netconf_hello(self.index))
            else:
                threading.Thread(target=self._shell_worker, daemon=True).start()
                self.emit(self.emu.prompt)
            for resp in self.call:
                gate = self.emu.read_gate
                if gate is not None:
                    gate.wait(60)   # a device that stops reading its stream
                if resp.kill_signal:
                    self.signals.append(resp.kill_signal)
                which = resp.WhichOneof("command")
                if which == "netconf_command":
                    self.commands.append(resp.netconf_command)
                    self._netconf_input(resp.netconf_command)
                elif which == "csh_command":
                    self.commands.append(resp.csh_command)
                    self._cmdq.put(resp.csh_command)
                if resp.kill_signal:
                    self._kill(resp.kill_signal)
            self.end_reason = self.end_reason or "closed by server"
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.CANCELLED:
                self.end_reason = self.end_reason or "cancelled"
            else:
                self.end_reason = self.end_reason or "error: %s: %s" % (e.code(), e.details())
        finally:
            self._stopping = True
            self._cmdq.put(None)
            self._kill(signal.SIGKILL)
            self._out.put(None)
            self.ended.set()
            try:
                self.channel.close()
            except Exception:
                pass

    def cancel(self):
        if self.call is not None:
            self.call.cancel()

    # ----- NETCONF backend -----------------------------------------------------------
    def _netconf_input(self, text):
        self._nc_buf += text
        while True:
            i = self._nc_buf.find(EOM)
            if i < 0:
                return
            msg, self._nc_buf = self._nc_buf[:i], self._nc_buf[i + len(EOM):]
            if re.search(r"<(\w+:)?hello[\s>]", msg):
                continue
            m = re.search(r"<(?:\w+:)?rpc\b([^>]*)>\s*<(?:\w+:)?([\w-]+)", msg)
            if m is None:
                self.emit('<rpc-reply xmlns="%s"><rpc-error><error-type>rpc</error-type>'
                          '<error-tag>malformed-message</error-tag></rpc-error></rpc-reply>%s'
                          % (NC_NS, EOM))
                continue
            mid = re.search(r'message-id\s*=\s*("[^"]*"|\'[^\']*\')', m.group(1))
            op = m.group(2)
            self.operations.append(op)
            self.emit('<rpc-reply xmlns="%s"%s><ok/></rpc-reply>%s'
                      % (NC_NS, " message-id=" + mid.group(1) if mid else "", EOM))
            if op == "close-session":
                self.end_reason = "backend-exit"
                self.finish()
                return

    # ----- shell backend --------------------------------------------------------------
    def _shell_worker(self):
        while True:
            line = self._cmdq.get()
            if line is None or self._stopping:
                return
            if line.strip() == "exit":
                self.end_reason = "backend-exit"
                self.finish()
                return
            try:
                p = subprocess.Popen(["/bin/sh", "-c", line], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True, close_fds=True)
            except OSError as e:
                self.emit("sh: %s\n" % e)
                continue
            with self._proc_lock:
                self._proc = p
            dec = codecs.getincrementaldecoder("utf-8")("replace")
            while True:
                data = os.read(p.stdout.fileno(), CHUNK)
                if not data:
                    break
                self.emit(dec.decode(data))
            self.emit(dec.decode(b"", final=True))
            p.stdout.close()
            p.wait()
            with self._proc_lock:
                self._proc = None
            self.emit(self.emu.prompt)

    def _kill(self, sig):
        with self._proc_lock:
            p = self._proc
            if p is None or p.poll() is not None:
                return
            try:
                os.killpg(p.pid, sig)
            except OSError:
                pass


class DevEmu:
    def __init__(self, target, ca_pem, device_id, secret, waittime=1.0, prompt="emu% ",
                 server_name=None, instance_id=None):
        self.target = target
        self.ca_pem = ca_pem if isinstance(ca_pem, bytes) else ca_pem.encode()
        self.device_id = device_id
        self.secret = secret
        self.waittime = waittime
        self.prompt = prompt
        self.server_name = server_name
        self.instance_id = instance_id if instance_id is not None else random.getrandbits(63) + 1
        self.sessions = []
        self.encode = _ser                # a CommandGetRequest to its wire bytes, when sent
        self.read_gate = None             # a cleared threading.Event stalls reading
        self.auth_failures = []           # (code, details)
        self.errors = []                  # other Initialize / probe failures
        self.probes = 0
        self.initializes = 0
        self.waiting = threading.Event()  # an Initialize is in flight
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._channels = set()
        self._init_future = None
        self._thread = None
        self._creds = grpc.ssl_channel_credentials(root_certificates=self.ca_pem)
        self._nsessions = 0

    def netconf_hello(self, index):
        return ('<?xml version="1.0" encoding="UTF-8"?>\n<hello xmlns="%s"><capabilities>'
                '<capability>urn:ietf:params:netconf:base:1.0</capability>'
                '<capability>urn:ietf:params:netconf:capability:candidate:1.0</capability>'
                '</capabilities><session-id>%d</session-id></hello>\n%s'
                % (NC_NS, 1000 + index, EOM))

    def _channel(self):
        # A local subchannel pool and a unique argument: never share a connection.
        opts = [("grpc.use_local_subchannel_pool", 1),
                ("grpc.ncgrpc_emu_conn", "%016x" % random.getrandbits(64))]
        if self.server_name:
            opts.append(("grpc.ssl_target_name_override", self.server_name))
        ch = grpc.secure_channel(self.target, self._creds, options=opts)
        with self._lock:
            self._channels.add(ch)
        return ch

    def _drop(self, ch):
        with self._lock:
            self._channels.discard(ch)
        ch.close()

    def start(self):
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name="devemu-%s" % self.device_id)
        self._thread.start()
        return self

    def _loop(self):
        status = None
        while not self._stop.is_set():
            ch = self._channel()
            handed_over = False
            try:
                status = ch.unary_unary(SVC + "NcgrpcServerStatusGet", request_serializer=_ser,
                                        response_deserializer=pb.NcgrpcServerStatusGetResponse.FromString)
                r = status(pb.NcgrpcServerStatusGetRequest(req=pb.REQ_RUNNING), timeout=10)
                self.probes += 1
                if r.status != pb.SUCCESS:
                    raise RuntimeError("server status %d" % r.status)
                init = ch.unary_unary(SVC + "NcgrpcInitialize", request_serializer=_ser,
                                      response_deserializer=pb.NcgrpcInitializeResponse.FromString)
                fut = init.future(pb.NcgrpcInitializeRequest(
                    instance_id=self.instance_id, device_id=self.device_id,
                    secret_key=self.secret))
                with self._lock:
                    self._init_future = fut
                self.initializes += 1
                self.waiting.set()
                try:
                    resp = fut.result()
                finally:
                    self.waiting.clear()
                    with self._lock:
                        self._init_future = None
                trailers = fut.trailing_metadata() or ()
                md = tuple((k, v) for k, v in trailers if not k.startswith("grpc-"))
                ctype = dict(md).get("conn_type")
                stype = "csh" if resp.session_type == pb.CSH else "netconf"
                if ctype is not None and ctype != stype:
                    raise RuntimeError("conn_type %r but session_type %s" % (ctype, stype))
                with self._lock:
                    self._nsessions += 1
                    s = EmuSession(self, ch, stype, md, self._nsessions)
                    self.sessions.append(s)
                handed_over = True
                threading.Thread(target=self._run_session, args=(s,), daemon=True).start()
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                    self.auth_failures.append((e.code(), e.details()))
                elif not self._stop.is_set():
                    self.errors.append((e.code(), e.details()))
                self._stop.wait(self.waittime)
            except Exception as e:
                self.errors.append((None, repr(e)))
                self._stop.wait(self.waittime)
            finally:
                if not handed_over:
                    self._drop(ch)

    def _run_session(self, s):
        try:
            s.run()
        finally:
            with self._lock:
                self._channels.discard(s.channel)

    def wait_waiting(self, timeout):
        if not self.waiting.wait(timeout):
            raise TimeoutError("emulator %s: no Initialize in flight within %.1f s "
                               "(auth failures %s, errors %s)"
                               % (self.device_id, timeout, self.auth_failures[-3:],
                                  self.errors[-3:]))

    def wait_sessions(self, n, timeout):
        deadline = time.monotonic() + timeout
        while len(self.sessions) < n:
            if time.monotonic() > deadline:
                raise TimeoutError("emulator %s: %d of %d sessions" % (self.device_id,
                                                                        len(self.sessions), n))
            time.sleep(0.02)
        return self.sessions[n - 1]

    def stop(self):
        """Drops every connection at once (like a device that goes away)."""
        self._stop.set()
        with self._lock:
            fut, chans = self._init_future, list(self._channels)
            sessions = list(self.sessions)
        if fut is not None:
            fut.cancel()
        for s in sessions:
            s._stopping = True
            s._kill(signal.SIGKILL)
        for ch in chans:
            try:
                ch.close()
            except Exception:
                pass
        if self._thread is not None:
            self._thread.join(10)


def initialize_once(target, ca_pem, device_id, secret, instance_id=1, timeout=5.0,
                    server_name=None):
    """One probe and one NcgrpcInitialize on a fresh connection, as a device
    would send them.  Returns (grpc.StatusCode, details): UNAUTHENTICATED for
    a refused device, DEADLINE_EXCEEDED when the server held the long poll."""
    if isinstance(ca_pem, str):
        ca_pem = ca_pem.encode()
    opts = [("grpc.use_local_subchannel_pool", 1),
            ("grpc.ncgrpc_emu_conn", "%016x" % random.getrandbits(64))]
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    ch = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca_pem),
                             options=opts)
    try:
        st = ch.unary_unary(SVC + "NcgrpcServerStatusGet", request_serializer=_ser,
                            response_deserializer=pb.NcgrpcServerStatusGetResponse.FromString)
        r = st(pb.NcgrpcServerStatusGetRequest(), timeout=timeout)
        if r.status != pb.SUCCESS:
            raise RuntimeError("server status %d" % r.status)
        init = ch.unary_unary(SVC + "NcgrpcInitialize", request_serializer=_ser,
                              response_deserializer=pb.NcgrpcInitializeResponse.FromString)
        try:
            init(pb.NcgrpcInitializeRequest(instance_id=instance_id, device_id=device_id,
                                            secret_key=secret), timeout=timeout)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details()
    finally:
        ch.close()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", required=True)
    ap.add_argument("--ca", required=True, help="PEM file the server certificate chains to")
    ap.add_argument("--device-id", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--count", type=int, default=1)
    a = ap.parse_args(argv[1:])
    with open(a.ca, "rb") as f:
        ca = f.read()
    ids = [a.device_id] if a.count == 1 else ["%s-%d" % (a.device_id, i) for i in range(a.count)]
    emus = [DevEmu(a.target, ca, i, a.secret).start() for i in ids]
    try:
        while True:
            time.sleep(5)
            for e in emus:
                sys.stderr.write("%s: init=%d sessions=%d auth-failures=%d errors=%s\n"
                                 % (e.device_id, e.initializes, len(e.sessions),
                                    len(e.auth_failures), e.errors[-1:]))
    except KeyboardInterrupt:
        pass
    for e in emus:
        e.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
