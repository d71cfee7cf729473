"""A test NMS for the ncgrpc-agent end-to-end tests (python3-grpcio).

It plays the role of Juniper's published sample server, driven from test
code instead of a console, and keeps a record of what it saw:

    nms = NMS(cert_pem, key_pem, {"r1": "s3cret"}).start()
    sess = nms.open_session("r1", "csh", timeout=10)
    sess.send_csh("echo hi")
    out = sess.read_until("hi\n", timeout=5)
    sess.cancel()
    nms.stop()

Wire behaviour (docs/protocol.md):
  - NcgrpcServerStatusGet answers SUCCESS.
  - NcgrpcInitialize with an unknown device or a wrong secret is aborted
    with UNAUTHENTICATED.  Otherwise the call waits (long poll) until the
    test asks for a session on that device (open_session), then answers
    session_type and sets the trailing metadata conn_type = netconf|csh.
  - NcgrpcCommandGet is matched to the granted Initialize by connection
    (context.peer(), which names the device's TCP endpoint), its request
    metadata must carry conn_type, and it is bridged to a Session object.
    Output is the concatenation of NcgrpcCommandGetRequest.message, kept
    byte-exact: nothing is stripped or re-encoded.

Only the standard library, grpcio and the stubs of tests/interop are used.
"""
import bisect
import collections
import os
import queue
import re
import sys
import threading
import time
from concurrent import futures

# grpcio must not run pthread_atfork handlers: the harness forks (subprocess)
# while its threads run, and the handler once waited forever in fork().
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "interop"))
import ncgrpc_stubs  # noqa: E402

SESSION_TYPES = ("netconf", "csh")

# Request metadata that belongs to HTTP/2 or gRPC, not to the application.
_TRANSPORT_KEYS = {"te", "content-type", "user-agent", "host", ":authority",
                   "authority", "accept-encoding", "grpc-accept-encoding"}


class NMSError(Exception):
    pass


def _now():
    return time.monotonic()


class InitRecord:
    """One NcgrpcInitialize call as the NMS saw it."""

    def __init__(self, device_id, instance_id, peer, secret_ok):
        self.device_id = device_id
        self.instance_id = instance_id
        self.peer = peer
        self.secret_ok = secret_ok
        self.time = _now()
        self.wall = time.time()
        # rejected | waiting | granted | cancelled
        self.state = "waiting" if secret_ok else "rejected"
        self.session_type = None
        self.ended = threading.Event()

    def __repr__(self):
        return "<Init %s inst=%d peer=%s %s>" % (self.device_id, self.instance_id,
                                               self.peer, self.state)


class Session:
    """The NMS end of one NcgrpcCommandGet stream.

    Output (device -> NMS) is kept as received, in order; read_until and
    read_all_until_end consume it from a read cursor.  Input goes down
    through send_netconf / send_csh / send_kill.
    """

    def __init__(self, nms, init, context, metadata):
        self.nms = nms
        self.init = init
        self.device_id = init.device_id
        self.session_type = init.session_type
        self.peer = context.peer()
        self.metadata = metadata        # custom request metadata, (key, value)
        self._context = context
        self._out = queue.Queue()       # responses to send; None ends the call
        self._cond = threading.Condition()
        self._chunks = []               # unread and partly read output
        self._starts = []               # absolute offset of each chunk
        self._total = 0                 # characters received so far
        self._pos = 0                   # read cursor (absolute)
        self._scanned = 0               # read_until searched up to here
        self.messages = 0               # CommandGetRequests received
        self.ended = threading.Event()  # the device's side is over
        self.end_reason = None          # 'eof' (half-close) | 'cancelled' | 'error: ...'
        self.finished = threading.Event()  # the whole RPC terminated
        self.opened = _now()
        self.closed_at = None

    # ----- input to the device -------------------------------------------------
    def _send(self, resp):
        if self.finished.is_set():
            raise NMSError("session is over (%s)" % self.end_reason)
        self._out.put(resp)

    def send_netconf(self, text, kill_signal=0):
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        self._send(self.nms.pb.NcgrpcCommandGetResponse(netconf_command=text,
                                                        kill_signal=kill_signal))

    def send_csh(self, line, kill_signal=0):
        if isinstance(line, bytes):
            line = line.decode("utf-8")
        self._send(self.nms.pb.NcgrpcCommandGetResponse(csh_command=line,
                                                        kill_signal=kill_signal))

    def send_kill(self, sig):
        """kill_signal alone (no command)."""
        self._send(self.nms.pb.NcgrpcCommandGetResponse(kill_signal=sig))

    def close(self):
        """Ends the call from the server side with status OK."""
        self._out.put(None)

    def cancel(self):
        """Cancels the stream (RST_STREAM CANCEL to the device)."""
        self._context.cancel()
        self._out.put(None)

    # ----- output from the device ----------------------------------------------
    def _feed(self, text):
        with self._cond:
            self.messages += 1
            if text:
                self._starts.append(self._total)
                self._chunks.append(text)
                self._total += len(text)
            self._cond.notify_all()

    def _end(self, reason):
        with self._cond:
            if self.end_reason is None:
                self.end_reason = reason
                self.closed_at = _now()
            self.ended.set()
            self._cond.notify_all()
        self.nms._notify()

    def _range(self, a, b):
        """Output characters [a, b) (absolute offsets, a >= first kept)."""
        if a >= b:
            return ""
        i = bisect.bisect_right(self._starts, a) - 1
        parts = []
        while i < len(self._chunks) and self._starts[i] < b:
            s = self._starts[i]
            c = self._chunks[i]
            parts.append(c[max(0, a - s):min(len(c), b - s)])
            i += 1
        return "".join(parts)

    def _consume_to(self, pos):
        self._pos = pos
        # Drop chunks entirely before the cursor.
        k = bisect.bisect_right(self._starts, pos) - 1
        if k > 0:
            del self._chunks[:k]
            del self._starts[:k]

    @property
    def received(self):
        """Characters received so far (read or not)."""
        with self._cond:
            return self._total

    def peek(self):
        """Unread output, without consuming it."""
        with self._cond:
            return self._range(self._pos, self._total)

    def read_until(self, pattern, timeout, lookback=65536):
        """Waits for pattern in the unread output and returns the output up to
        the end of the match, consuming it.

        pattern: a str (literal), a compiled regex, or a callable taking the
        unread text and returning the number of characters to consume (or
        None/False for "not yet"; True consumes everything).  Literal and
        regex matches must be shorter than lookback.  Raises TimeoutError or
        EOFError (stream ended first) with the unread tail in the message.
        """
        deadline = _now() + timeout
        if isinstance(pattern, bytes):
            pattern = pattern.decode("utf-8")
        if isinstance(pattern, str):
            rx = re.compile(re.escape(pattern))
        elif hasattr(pattern, "search"):
            rx = pattern
        else:
            rx = None
        with self._cond:
            self._scanned = self._pos
            while True:
                if rx is not None:
                    start = max(self._pos, self._scanned - lookback)
                    window = self._range(start, self._total)
                    m = rx.search(window)
                    if m:
                        end = start + m.end()
                        out = self._range(self._pos, end)
                        self._consume_to(end)
                        return out
                    self._scanned = self._total
                else:
                    text = self._range(self._pos, self._total)
                    n = pattern(text)
                    if n is not None and n is not False:
                        n = len(text) if n is True else n
                        self._consume_to(self._pos + n)
                        return text[:n]
                if self.ended.is_set():
                    raise EOFError("stream ended (%s) before %r; unread tail: %r"
                                   % (self.end_reason, pattern, self._tail()))
                left = deadline - _now()
                if left <= 0:
                    raise TimeoutError("no %r within %.1f s; unread tail: %r"
                                       % (pattern, timeout, self._tail()))
                self._cond.wait(min(left, 1.0))

    def _tail(self, n=400):
        return self._range(max(self._pos, self._total - n), self._total)

    def read_all_until_end(self, timeout):
        """Waits for the end of the stream; returns the unread output."""
        deadline = _now() + timeout
        with self._cond:
            while not self.ended.is_set():
                left = deadline - _now()
                if left <= 0:
                    raise TimeoutError("stream still open after %.1f s; unread tail: %r"
                                       % (timeout, self._tail()))
                self._cond.wait(min(left, 1.0))
            out = self._range(self._pos, self._total)
            self._consume_to(self._total)
            return out

    def wait_finished(self, timeout):
        return self.finished.wait(timeout)

    def __repr__(self):
        return "<Session %s %s peer=%s end=%s>" % (self.device_id, self.session_type,
                                                  self.peer, self.end_reason)


class NMS:
    """The server.  Thread-safe; every wait is bounded."""

    def __init__(self, cert_pem, key_pem, secrets, host="127.0.0.1", port=0,
                 stub_dir=None, workers=128, options=()):
        self.pb = ncgrpc_stubs.load(stub_dir)
        self.cert_pem = cert_pem if isinstance(cert_pem, bytes) else cert_pem.encode()
        self.key_pem = key_pem if isinstance(key_pem, bytes) else key_pem.encode()
        self.secrets = dict(secrets)
        self.host = host
        self.port = port
        self.workers = workers
        self._server = None
        self._cond = threading.Condition()
        self.status_calls = []        # (time, peer)
        self.inits = []               # InitRecord, in arrival order
        self.sessions = []            # Session, in arrival order
        self.stream_errors = []       # CommandGet streams refused, with why
        self._granted = {}            # peer -> InitRecord awaiting its CommandGet
        self._session_waiters = {}    # id(InitRecord) -> Session once opened
        self.running = False
        self.read_delay = 0.0         # seconds per message: simulates a slow NMS
        self.options = list(options)  # extra grpc.server options (ping policy...)
        # (grpc.StatusCode, details): every Initialize is aborted with it.
        self.init_abort = None

    # ----- lifecycle -----------------------------------------------------------
    def start(self):
        pb = self.pb
        handlers = {
            "NcgrpcServerStatusGet": grpc.unary_unary_rpc_method_handler(
                self._status,
                request_deserializer=pb.NcgrpcServerStatusGetRequest.FromString,
                response_serializer=pb.NcgrpcServerStatusGetResponse.SerializeToString),
            "NcgrpcInitialize": grpc.unary_unary_rpc_method_handler(
                self._initialize,
                request_deserializer=pb.NcgrpcInitializeRequest.FromString,
                response_serializer=pb.NcgrpcInitializeResponse.SerializeToString),
            "NcgrpcCommandGet": grpc.stream_stream_rpc_method_handler(
                self._command_get,
                request_deserializer=pb.NcgrpcCommandGetRequest.FromString,
                response_serializer=pb.NcgrpcCommandGetResponse.SerializeToString),
        }
        # Each waiting Initialize and each session holds a worker (a session
        # also has a reader thread of its own), so the pool must be large.
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.workers),
            handlers=[grpc.method_handlers_generic_handler(ncgrpc_stubs.SERVICE, handlers)],
            options=[("grpc.so_reuseport", 0),
                     ("grpc.max_receive_message_length", 8 * 1024 * 1024)]
            + self.options)
        creds = grpc.ssl_server_credentials([(self.key_pem, self.cert_pem)])
        port = server.add_secure_port("%s:%d" % (self.host, self.port), creds)
        if port == 0:
            raise NMSError("cannot listen on %s:%d" % (self.host, self.port))
        self.port = port  # a restart binds the same port again
        server.start()
        self._server = server
        self.running = True
        return self

    def stop(self, grace=0):
        """Stops listening and cancels every call (sessions too)."""
        server, self._server = self._server, None
        # Stop first: calls are cancelled under the handlers, which then
        # return without an answer (the devices see the connection go).
        if server is not None:
            server.stop(grace).wait(10)
        self.running = False
        with self._cond:
            self._granted.clear()
            self._cond.notify_all()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def _notify(self):
        with self._cond:
            self._cond.notify_all()

    # ----- RPC handlers ----------------------------------------------------------
    def _status(self, request, context):
        with self._cond:
            self.status_calls.append((_now(), context.peer()))
            self._cond.notify_all()
        return self.pb.NcgrpcServerStatusGetResponse(status=self.pb.SUCCESS)

    def _initialize(self, request, context):
        device = request.device_id
        expected = self.secrets.get(device)
        ok = expected is not None and request.secret_key == expected
        rec = InitRecord(device, request.instance_id, context.peer(), ok)
        # Custom request metadata, as sent (an offer of an extension, say).
        rec.metadata = [(k.lower(), v) for k, v in context.invocation_metadata() or ()
                        if not k.startswith(":") and k.lower() not in _TRANSPORT_KEYS]
        with self._cond:
            self.inits.append(rec)
            self._cond.notify_all()
        if self.init_abort is not None:
            rec.state = "rejected"
            rec.ended.set()
            context.abort(*self.init_abort)
        if not ok:
            rec.ended.set()
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "invalid secret for device '%s'" % device)
        done = threading.Event()
        if not context.add_callback(done.set):
            done.set()
        with self._cond:
            while rec.state == "waiting":
                if done.is_set() or not context.is_active() or not self.running:
                    rec.state = "cancelled"
                    rec.ended.set()
                    self._cond.notify_all()
                    return None
                self._cond.wait(0.2)
            # Granted by open_session: the next CommandGet on this
            # connection belongs to it.
            self._granted[rec.peer] = rec
            self._cond.notify_all()
        context.set_trailing_metadata((("conn_type", rec.session_type),)
                                      + tuple(getattr(rec, "trailers", ())))
        rec.ended.set()
        return self.pb.NcgrpcInitializeResponse(
            session_type=self.pb.CSH if rec.session_type == "csh" else self.pb.NETCONF)

    def _command_get(self, request_iterator, context):
        peer = context.peer()
        md = []
        for key, value in context.invocation_metadata() or ():
            key = key.lower()
            if key.startswith(":") or key in _TRANSPORT_KEYS:
                continue
            md.append((key, value))
        with self._cond:
            deadline = _now() + 5
            while peer not in self._granted and _now() < deadline and self.running:
                self._cond.wait(0.1)
            rec = self._granted.pop(peer, None)
            why = None
            if rec is None:
                why = "no granted Initialize on connection %s" % peer
            elif ("conn_type", rec.session_type) not in md:
                why = "request metadata %r lacks conn_type=%s" % (md, rec.session_type)
            elif any(k.startswith("grpc-") for k, _ in md):
                why = "request metadata %r echoes grpc-* keys" % (md,)
            if why is not None:
                self.stream_errors.append(why)
                self._cond.notify_all()
        if why is not None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, why)
        sess = Session(self, rec, context, md)

        def on_done():
            sess._end("cancelled")
            sess.finished.set()
            sess._out.put(None)
            self._notify()

        if not context.add_callback(on_done):
            on_done()
        with self._cond:
            self.sessions.append(sess)
            self._session_waiters[id(rec)] = sess
            self._cond.notify_all()

        def reader():
            try:
                for req in request_iterator:
                    if self.read_delay:
                        time.sleep(self.read_delay)  # a slow operator
                    sess._feed(req.message)
            except Exception as e:  # grpc.RpcError on a failed call
                sess._end("error: %s" % (e,))
            else:
                # grpcio ends the iterator on a half-close and on a
                # cancellation alike; the call's liveness tells them apart.
                sess._end("eof" if context.is_active() else "cancelled")
            # The device finished its output; end our side with OK.
            sess._out.put(None)

        threading.Thread(target=reader, name="nms-reader-%s" % peer, daemon=True).start()
        while True:
            try:
                item = sess._out.get(timeout=1.0)
            except queue.Empty:
                if not context.is_active():
                    break
                continue
            if item is None:
                break
            yield item

    # ----- test API --------------------------------------------------------------
    def wait_for(self, predicate, timeout, what="condition"):
        """Waits until predicate() is true (checked under the NMS lock)."""
        deadline = _now() + timeout
        with self._cond:
            while True:
                v = predicate()
                if v:
                    return v
                left = deadline - _now()
                if left <= 0:
                    raise TimeoutError("NMS %s: no %s within %.1f s (inits: %r)"
                                       % (self.address, what, timeout, self.inits[-8:]))
                self._cond.wait(min(left, 0.5))

    def waiting(self, device_id=None):
        """Initialize calls waiting now."""
        with self._cond:
            return [r for r in self.inits if r.state == "waiting"
                    and (device_id is None or r.device_id == device_id)]

    def wait_waiting(self, device_id, timeout):
        """Waits for a waiting Initialize of device_id; returns it."""
        def pred():
            w = [r for r in self.inits if r.state == "waiting" and r.device_id == device_id]
            return w[-1] if w else None
        return self.wait_for(pred, timeout, "waiting Initialize of %r" % device_id)

    def open_session(self, device_id, session_type, timeout=15, trailers=()):
        """Grants a waiting Initialize of device_id and returns the Session once
        the device has opened its CommandGet stream.  trailers: more trailing
        metadata of the Initialize, after conn_type."""
        if session_type not in SESSION_TYPES:
            raise ValueError(session_type)
        deadline = _now() + timeout
        with self._cond:
            while True:
                cands = [r for r in self.inits
                         if r.state == "waiting" and r.device_id == device_id]
                if cands:
                    rec = cands[-1]
                    rec.state = "granted"
                    rec.session_type = session_type
                    rec.trailers = tuple(trailers)
                    self._cond.notify_all()
                    break
                left = deadline - _now()
                if left <= 0:
                    raise TimeoutError("NMS %s: device %r has no waiting Initialize "
                                       "within %.1f s (inits: %r)"
                                       % (self.address, device_id, timeout, self.inits[-8:]))
                self._cond.wait(min(left, 0.5))
            while id(rec) not in self._session_waiters:
                left = deadline - _now()
                if left <= 0:
                    raise TimeoutError("NMS %s: device %r was granted a %s session on %s "
                                       "but opened no CommandGet within %.1f s "
                                       "(stream errors: %r)"
                                       % (self.address, device_id, session_type, rec.peer,
                                          timeout, self.stream_errors))
                self._cond.wait(min(left, 0.5))
            return self._session_waiters.pop(id(rec))

    def inits_for(self, device_id):
        with self._cond:
            return [r for r in self.inits if r.device_id == device_id]

    def connections(self):
        """Distinct connection identities (peers) seen, in order of first use."""
        with self._cond:
            seen = collections.OrderedDict()
            for _, p in self.status_calls:
                seen.setdefault(p, None)
            for r in self.inits:
                seen.setdefault(r.peer, None)
            return list(seen)

    def counts(self):
        with self._cond:
            return {
                "status": len(self.status_calls),
                "initialize": len(self.inits),
                "rejected": sum(1 for r in self.inits if r.state == "rejected"),
                "waiting": sum(1 for r in self.inits if r.state == "waiting"),
                "granted": sum(1 for r in self.inits if r.state == "granted"),
                "sessions": len(self.sessions),
            }
