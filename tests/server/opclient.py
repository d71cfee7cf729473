"""A python3-grpcio client of the ncgrpcd operator API
(proto/ncgrpc_operator.proto) over its local Unix socket.

    op = OpClient("/run/ncgrpc/operator.sock")
    for d in op.list_devices(): print(d.device_id, d.idle_connections)
    w = op.watch(include_current=True); ev = w.next(5); w.cancel()
    s = op.session("r1", "shell", wait_ms=5000)
    s.wait_started(10)             # SessionStarted, or raises OpError
    s.send(b"echo hi\\n"); s.read_until(b"hi\\n", 5)
    s.signal(2); s.close_input(); s.wait_done(10)
    s.ended, s.code, s.details     # SessionEnded, grpc.StatusCode, text

Every wait is bounded; sessions and watches are cancelled by close().
Run as a script for a quick look: opclient.py SOCKET [list|watch].
"""
import os
import queue
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

pb = pstubs.load("ncgrpc_operator")

SVC = "/ncgrpc.operator.v1.Operator/"
TYPES = {"netconf": pb.NETCONF, "shell": pb.SHELL}


class OpError(Exception):
    def __init__(self, code, details, what=""):
        super().__init__("%s%s: %s" % (what + ": " if what else "", code, details))
        self.code, self.details = code, details


class Watch:
    """A WatchDevices stream; events are queued as they arrive."""

    def __init__(self, call):
        self.call = call
        self.events = queue.Queue()
        self.code = None
        self.details = None
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            for ev in self.call:
                self.events.put(ev)
            self.code, self.details = self.call.code(), self.call.details()
        except grpc.RpcError as e:
            self.code, self.details = e.code(), e.details()
        finally:
            self.done.set()
            self.events.put(None)

    def next(self, timeout):
        """The next event; raises TimeoutError, or OpError when the stream ended."""
        try:
            ev = self.events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("no device event within %.1f s" % timeout)
        if ev is None:
            self.events.put(None)
            raise OpError(self.code, self.details, "WatchDevices ended")
        return ev

    def wait_for(self, kind, device_id, timeout):
        """Skips events until one of kind (a DeviceEvent.Kind) for device_id."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no %s event for %r within %.1f s; saw %s"
                                   % (pb.DeviceEvent.Kind.Name(kind), device_id, timeout,
                                      [(pb.DeviceEvent.Kind.Name(e.kind), e.device.device_id)
                                       for e in seen]))
            ev = self.next(left)
            seen.append(ev)
            if ev.kind == kind and ev.device.device_id == device_id:
                return ev

    def cancel(self):
        self.call.cancel()


class Session:
    """One operator Session call: input from a queue, output collected."""

    def __init__(self, op, device_id, stype, wait_ms=0, first=None):
        self.device_id = device_id
        self._in = queue.Queue()
        if first is None:
            first = pb.SessionInput(open=pb.SessionOpen(device_id=device_id, type=TYPES[stype],
                                                        wait_ms=wait_ms))
        self._in.put(first)
        self._cond = threading.Condition()
        self.buf = bytearray()
        self.pos = 0
        self.chunks = 0
        self.started = None
        self.ended = None
        self.code = None
        self.details = None
        self.t_open = time.monotonic()
        self.t_started = None
        self.t_first_data = None
        self.t_done = None
        self.started_ev = threading.Event()
        self.done = threading.Event()
        self.call = op._session(self._inputs())
        threading.Thread(target=self._run, daemon=True).start()

    def _inputs(self):
        while True:
            m = self._in.get()
            if m is None:
                return
            yield m

    def _run(self):
        try:
            for out in self.call:
                which = out.WhichOneof("output")
                with self._cond:
                    if which == "started":
                        self.started = out.started
                        self.t_started = time.monotonic()
                        self.started_ev.set()
                    elif which == "data":
                        if self.t_first_data is None:
                            self.t_first_data = time.monotonic()
                        self.buf += out.data
                        self.chunks += 1
                    elif which == "ended":
                        self.ended = out.ended
                    self._cond.notify_all()
                if which == "data":
                    self.after_data()
            code, details = self.call.code(), self.call.details()
        except grpc.RpcError as e:
            code, details = e.code(), e.details()
        except Exception as e:  # pragma: no cover - reported through details
            code, details = grpc.StatusCode.UNKNOWN, "client error: %r" % e
        with self._cond:
            self.code, self.details = code, details
            self.t_done = time.monotonic()
            self.done.set()
            self.started_ev.set()
            self._cond.notify_all()
        self._in.put(None)

    def after_data(self):
        """Called by the reader thread after each data message, outside the
        lock: a subclass may sleep here to be a slow reader."""

    # ----- input ------------------------------------------------------------------
    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self._in.put(pb.SessionInput(data=data))

    def signal(self, sig):
        self._in.put(pb.SessionInput(signal=sig))

    def send_raw(self, msg):
        self._in.put(msg)

    def close_input(self):
        """Half-closes the call."""
        self._in.put(None)

    def cancel(self):
        self.call.cancel()
        self._in.put(None)

    # ----- output -----------------------------------------------------------------
    def wait_started(self, timeout):
        if not self.started_ev.wait(timeout):
            raise TimeoutError("session on %r not started within %.1f s"
                               % (self.device_id, timeout))
        if self.started is None:
            raise OpError(self.code, self.details, "Session")
        return self.started

    def read_until(self, pattern, timeout):
        """Consumes and returns output up to and including pattern (bytes or
        compiled bytes regex)."""
        deadline = time.monotonic() + timeout
        back = len(pattern) if isinstance(pattern, bytes) else 4096
        scanned = self.pos
        with self._cond:
            while True:
                start = max(self.pos, scanned - back)
                if isinstance(pattern, bytes):
                    i = self.buf.find(pattern, start)
                    end = i + len(pattern) if i >= 0 else -1
                else:
                    m = pattern.search(self.buf, start)
                    end = m.end() if m else -1
                if end >= 0:
                    out = bytes(self.buf[self.pos:end])
                    self.pos = end
                    return out
                scanned = len(self.buf)
                left = deadline - time.monotonic()
                if self.done.is_set() or left <= 0:
                    raise TimeoutError("%r not seen within %.1f s (call %s: %s); tail: %r"
                                       % (pattern, timeout, self.code, self.details,
                                          bytes(self.buf[-400:])))
                self._cond.wait(min(left, 0.5))

    def read_all(self, timeout):
        """Waits for the end of the call; returns the unread output."""
        self.wait_done(timeout)
        with self._cond:
            out = bytes(self.buf[self.pos:])
            self.pos = len(self.buf)
            return out

    def wait_done(self, timeout):
        if not self.done.wait(timeout):
            raise TimeoutError("session on %r did not end within %.1f s"
                               % (self.device_id, timeout))
        return self.code

    def received(self):
        with self._cond:
            return len(self.buf)


class OpClient:
    def __init__(self, socket_path):
        self.path = socket_path
        self.channel = grpc.insecure_channel("unix:" + socket_path)
        ser = lambda m: m.SerializeToString()  # noqa: E731
        self._list = self.channel.unary_unary(
            SVC + "ListDevices", request_serializer=ser,
            response_deserializer=pb.ListDevicesResponse.FromString)
        self._watch = self.channel.unary_stream(
            SVC + "WatchDevices", request_serializer=ser,
            response_deserializer=pb.DeviceEvent.FromString)
        self._session = self.channel.stream_stream(
            SVC + "Session", request_serializer=ser,
            response_deserializer=pb.SessionOutput.FromString)
        self._open = []

    def list_devices(self, timeout=10):
        return list(self._list(pb.ListDevicesRequest(), timeout=timeout).devices)

    def device(self, device_id, timeout=10):
        for d in self.list_devices(timeout):
            if d.device_id == device_id:
                return d
        return None

    def wait_device(self, device_id, timeout, idle=1):
        """Waits until device_id is listed with at least idle idle connections."""
        deadline = time.monotonic() + timeout
        while True:
            d = self.device(device_id)
            if d is not None and d.idle_connections >= idle:
                return d
            if time.monotonic() > deadline:
                raise TimeoutError("device %r not ready (idle >= %d) within %.1f s: %s"
                                   % (device_id, idle, timeout, d))
            time.sleep(0.05)

    def watch(self, include_current=False):
        w = Watch(self._watch(pb.WatchDevicesRequest(include_current=include_current)))
        self._open.append(w)
        return w

    def session(self, device_id, stype, wait_ms=0, first=None):
        s = Session(self, device_id, stype, wait_ms, first)
        self._open.append(s)
        return s

    def close(self):
        for x in self._open:
            try:
                x.cancel()
            except Exception:
                pass
        self.channel.close()


def main(argv):
    if len(argv) < 2:
        sys.stderr.write("usage: opclient.py SOCKET [list|watch]\n")
        return 64
    op = OpClient(argv[1])
    if len(argv) < 3 or argv[2] == "list":
        for d in op.list_devices():
            print("%s peer=%s since=%d instance=%d idle=%d sessions=%d"
                  % (d.device_id, d.peer, d.connected_since, d.instance_id,
                     d.idle_connections, d.active_sessions))
    else:
        w = op.watch(True)
        try:
            while True:
                ev = w.next(3600)
                print(pb.DeviceEvent.Kind.Name(ev.kind), ev.device.device_id, ev.reason)
        except KeyboardInterrupt:
            pass
    op.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
