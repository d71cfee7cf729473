"""Hostile peers for the pre-authentication tests (test_preauth.py): raw TLS
sockets and raw HTTP/2 from python3-h2, which do what a real gRPC library
never would (ignore SETTINGS, declare huge messages and stall, flood).

Everything talks to loopback only; a source address in 127.0.0.0/8 other
than 127.0.0.1 stands for "another host".
"""
import socket
import ssl
import struct
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions

SVC = "/jnx.jet.netconf.Ncgrpc/"


def pb_varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_field(num, value):
    if isinstance(value, int):
        return pb_varint(num << 3) + pb_varint(value)
    if isinstance(value, str):
        value = value.encode()
    return pb_varint(num << 3 | 2) + pb_varint(len(value)) + value


def initialize_request(device_id, secret, instance=1):
    return pb_field(1, instance) + pb_field(2, device_id) + pb_field(3, secret)


def grpc_frame(msg):
    return b"\0" + struct.pack(">I", len(msg)) + msg


def client_context(alpn=("h2",)):
    """A TLS client context without certificate checks."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def tls_connect(port, src="127.0.0.1", timeout=10, alpn=("h2",), ctx=None, session=None):
    """A TLS socket from src to 127.0.0.1:port, without certificate checks;
    session (from an earlier socket of the same ctx) asks for resumption."""
    if ctx is None:
        ctx = client_context(alpn)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return ctx.wrap_socket(s, server_hostname="127.0.0.1", session=session)


class H2Peer:
    """One raw HTTP/2 client connection over TLS."""

    def __init__(self, port, src="127.0.0.1", timeout=10, ctx=None, session=None):
        self.sock = tls_connect(port, src, timeout, ctx=ctx, session=session)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_outbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.closed = False
        self.conn.initiate_connection()
        self.flush()
        self.ended = {}     # stream id -> grpc-status (or "reset:N")
        self.messages = {}  # stream id -> grpc-message
        self.pending = {}   # stream id -> bytes still to send

    def flush(self):
        data = self.conn.data_to_send()
        if data and not self.closed:
            try:
                self.sock.sendall(data)
            except (OSError, ssl.SSLError):
                # Stuck or gone: a hostile peer just gives up here.
                self.closed = True

    def open(self, path, end=False):
        sid = self.conn.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "https"), (":path", path),
                   (":authority", "127.0.0.1"), ("content-type", "application/grpc"),
                   ("te", "trailers")]
        self.conn.send_headers(sid, headers, end_stream=end)
        return sid

    def queue(self, sid, data):
        self.pending[sid] = self.pending.get(sid, b"") + data

    def _send_pending(self, budget=256 * 1024):
        """Sends up to about budget bytes of what flow control allows, so
        that pump() reads the answers in between."""
        for sid in list(self.pending):
            if budget <= 0:
                break
            data = self.pending[sid]
            if sid in self.ended or not data:
                self.pending.pop(sid, None)
                continue
            try:
                n = min(len(data), self.conn.local_flow_control_window(sid),
                        self.conn.max_outbound_frame_size)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
                self.pending.pop(sid, None)
                continue
            while n > 0:
                try:
                    self.conn.send_data(sid, data[:n])
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    self.pending.pop(sid, None)
                    break
                data = data[n:]
                self.pending[sid] = data
                budget -= n
                if budget <= 0:
                    break
                try:
                    n = min(len(data), self.conn.local_flow_control_window(sid),
                            self.conn.max_outbound_frame_size)
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    break
        self.flush()

    def pump(self, seconds):
        """Sends what flow control allows and handles input for seconds."""
        deadline = time.monotonic() + seconds
        while not self.closed and time.monotonic() < deadline:
            self._send_pending()
            self.sock.settimeout(max(0.01, min(0.1, deadline - time.monotonic())))
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            except (OSError, ssl.SSLError):
                self.closed = True
                break
            if not data:
                self.closed = True
                break
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.closed = True
                break
            for ev in events:
                self.on_event(ev)
            self.flush()

    def on_event(self, ev):
        if isinstance(ev, h2.events.TrailersReceived) or (
                isinstance(ev, h2.events.ResponseReceived) and ev.stream_ended):
            hdrs = dict(ev.headers)
            self.ended[ev.stream_id] = hdrs.get("grpc-status", "?")
            self.messages[ev.stream_id] = hdrs.get("grpc-message", "")
        elif isinstance(ev, h2.events.StreamReset):
            self.ended.setdefault(ev.stream_id, "reset:%d" % ev.error_code)
        elif isinstance(ev, h2.events.DataReceived):
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.closed = True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def initialize(port, device_id, secret, src="127.0.0.1", timeout=10, instance=1):
    """One Initialize from src.  Returns (grpc-status string, message, seconds)
    once the call ends, or ("held", "", seconds) if the server accepted it and
    holds it as an idle connection for timeout seconds."""
    t0 = time.monotonic()
    p = H2Peer(port, src, timeout)
    try:
        sid = p.open(SVC + "NcgrpcInitialize")
        p.queue(sid, grpc_frame(initialize_request(device_id, secret, instance)))
        p._send_pending()
        p.conn.end_stream(sid)
        p.flush()
        deadline = t0 + timeout
        while sid not in p.ended and not p.closed and time.monotonic() < deadline:
            p.pump(0.1)
        if sid in p.ended:
            return p.ended[sid], p.messages.get(sid, ""), time.monotonic() - t0
        return ("held" if not p.closed else "closed"), "", time.monotonic() - t0
    finally:
        p.close()
